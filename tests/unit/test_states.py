from __future__ import annotations

import pytest

from pixelgate.core.models import Status
from pixelgate.core.states import (
    can_transition,
    check_transition,
    is_terminal,
    sources_of,
)
from pixelgate.errors import Conflict

ALLOWED = {
    ("PENDING", "PROCESSING"),
    ("PENDING", "CANCELED"),
    # a job handed to a worker at admission, ended by its lease owner before its start
    # was written (OWNER_ONLY)
    ("PENDING", "SUCCEEDED"),
    ("PENDING", "FAILED"),
    ("PROCESSING", "SUCCEEDED"),
    ("PROCESSING", "FAILED"),
    ("PROCESSING", "CANCELED"),
    ("PROCESSING", "PENDING"),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_only_the_documented_transitions_are_allowed(current: Status, target: Status) -> None:
    allowed = (current.value, target.value) in ALLOWED
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(Conflict):
            check_transition(current, target)


def test_terminal_states_have_no_way_out() -> None:
    for status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED):
        assert is_terminal(status)
        assert not any(can_transition(status, t) for t in Status)
    assert not is_terminal(Status.PENDING) and not is_terminal(Status.PROCESSING)


def test_compare_and_set_sources() -> None:
    assert sources_of(Status.PROCESSING) == ("PENDING",)
    assert set(sources_of(Status.CANCELED)) == {"PENDING", "PROCESSING"}
    assert set(sources_of(Status.SUCCEEDED)) == {"PENDING", "PROCESSING"}
    assert set(sources_of(Status.FAILED)) == {"PENDING", "PROCESSING"}

