"""The generation state machine: every allowed transition, in one place.

``PENDING → PROCESSING → SUCCEEDED | FAILED`` and ``PENDING | PROCESSING → CANCELED``;
an expired lease (or a released job) goes ``PROCESSING → PENDING``.

A job handed to this process's worker at admission is ``PENDING`` under a lease (see
:mod:`pixelgate.db.admission`); its owner may end it straight from there
(``PENDING → SUCCEEDED | FAILED | CANCELED``) when nothing was written while it ran: the
store allows that only to the lease owner (:data:`OWNER_ONLY`).

Two more users of ``PENDING → SUCCEEDED | FAILED``: a dedup follower (an identical
request waiting for a running original) is ended by the original's own finishing
transaction (``db/followers.py``), and a cache hit is created ``SUCCEEDED`` at admission
(a new row, not a transition).
"""

from __future__ import annotations

from pixelgate.core.models import TERMINAL, Status
from pixelgate.errors import Conflict

__all__ = ["ALLOWED", "OWNER_ONLY", "can_transition", "check_transition", "is_terminal"]

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {Status.PROCESSING, Status.CANCELED, Status.SUCCEEDED, Status.FAILED}
    ),
    Status.PROCESSING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.PENDING}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
}


#: transitions only the lease owner of a handed-over ``PENDING`` job may make
OWNER_ONLY: frozenset[tuple[Status, Status]] = frozenset(
    {(Status.PENDING, Status.SUCCEEDED), (Status.PENDING, Status.FAILED)}
)


def can_transition(current: Status | str, target: Status | str) -> bool:
    return Status(target) in ALLOWED[Status(current)]


def check_transition(current: Status | str, target: Status | str) -> None:
    """Raise ``Conflict`` unless ``current → target`` is allowed."""
    if not can_transition(current, target):
        raise Conflict(
            f"a {Status(current).value} generation cannot become {Status(target).value}",
            code="invalid_state",
        )


def sources_of(target: Status) -> tuple[str, ...]:
    """The states a row may be in for a compare-and-set to ``target`` (used in SQL)."""
    return tuple(s.value for s, targets in ALLOWED.items() if target in targets)


def is_terminal(status: Status | str) -> bool:
    return Status(status) in TERMINAL
