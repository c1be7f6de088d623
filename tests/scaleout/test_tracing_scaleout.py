"""The trace context crosses the queue: an API process admits, a worker process runs.

The API runs here (PostgreSQL + Redis, no worker) with an in-memory exporter; the worker
is a separate process (``tests/scaleout/traced_worker.py``) recording its own spans. The
worker's ``generation.run`` span must be a child of the API's ``generation.enqueue``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixelgate.api.app import create_app
from pixelgate.config import load_settings
from pixelgate.observability import tracing
from pixelgate.runtime import Runtime
from tests.scaleout.cluster import ADMIN_KEY, cluster_env
from tests.scaleout.services import PgDatabase, S3Server

ROOT = Path(__file__).resolve().parents[2]


async def test_worker_span_is_a_child_of_the_admitting_request(
    tmp_path: Path, pg: PgDatabase, redis_url: str, s3: S3Server, monkeypatch: Any
) -> None:
    pg.wipe()
    env = cluster_env(
        tmp_path, database_url=pg.sqlalchemy_url, redis_url=redis_url, s3_env=s3.env("trace")
    )
    for name, value in env.items():
        if name.startswith(("PIXELGATE_", "AWS_")):
            monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = load_settings(worker=False)
    runtime = await Runtime.open(settings)
    out = tmp_path / "worker-spans.json"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited on)
        [sys.executable, "-m", "tests.scaleout.traced_worker", str(out)],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tracing.install(provider)
    try:
        app = create_app(settings, runtime=runtime, run_worker=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Prefer": "wait=30"},
        ) as client:
            answer = await client.post("/v1/generations", json={"prompt": "across"})
            body = answer.json()
            assert body["status"] == "SUCCEEDED", (body, (tmp_path / "worker.log").read_text())
    finally:
        tracing.uninstall()
        await runtime.close()
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)
        log.close()
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
    api = {s.name: s for s in exporter.get_finished_spans()}
    worker_spans = json.loads(out.read_text())
    run = next(s for s in worker_spans if s["name"] == "generation.run")
    enqueue = api["generation.enqueue"]
    assert run["trace_id"] == enqueue.context.trace_id
    assert run["parent"] == enqueue.context.span_id
    assert run["attributes"]["pixelgate.generation_id"] == body["id"]
    attempt = next(s for s in worker_spans if s["name"] == "provider.attempt")
    assert attempt["parent"] == run["span_id"]
    assert os.getpid() != worker.pid
