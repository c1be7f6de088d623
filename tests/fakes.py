"""Fakes shared by the tests: real implementations of our protocols, no mocks."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx


@dataclass
class FakeJobContext:
    """A JobContext that records what the adapter reported."""

    http: httpx.AsyncClient
    provider_job_id: str | None = None
    saved_jobs: list[str] = field(default_factory=list)
    progress_reports: list[tuple[int, str | None]] = field(default_factory=list)

    async def save_provider_job(self, job_id: str) -> None:
        self.saved_jobs.append(job_id)
        self.provider_job_id = job_id

    async def progress(self, percent: int, message: str | None = None) -> None:
        self.progress_reports.append((percent, message))
