"""What admission needs of a worker in its own process to hand it jobs in memory."""

from __future__ import annotations

from typing import Protocol

from pixelgate.core.records import ClaimedJob

__all__ = ["LocalWorker"]


class LocalWorker(Protocol):
    """A worker in the admitting process that takes jobs straight from admission.

    Admission reserves a slot, admits the job already leased to :attr:`owner` (still
    ``PENDING``, but no other worker claims it while the lease lives) and hands it over
    with :meth:`accept`: no claim, no poll. After a crash the lease expires and the job
    is claimed again like any other. The embedded lease worker
    (:class:`pixelgate.queue.worker.Worker`) is one.
    """

    owner: str

    def reserve(self) -> bool:
        """Hold a slot for a job about to be admitted; False when none is free."""

    def unreserve(self) -> None:
        """Give back a slot reserved for a job that was not handed over."""

    def accept(self, job: ClaimedJob) -> None:
        """Run ``job`` (admitted leased to :attr:`owner`) in the reserved slot."""
