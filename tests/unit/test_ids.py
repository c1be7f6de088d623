"""``new_id``: 26 Crockford base32 chars spelling 48 bits of milliseconds then 80
random bits, strictly increasing within a process."""

from __future__ import annotations

import random

import pytest

from pixelgate.core import ids

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def spelled(ms: int, rand: int) -> str:
    """The definition, five bits a char from the top."""
    value = (ms << 80) | rand
    return "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


EDGES = [(0, 0), ((1 << 48) - 1, (1 << 80) - 1), (1_796_000_000_000, 1), (7, 1 << 79)]
_rng = random.Random(13)
CASES = [*EDGES, *[(_rng.randrange(1 << 48), _rng.randrange(1 << 80)) for _ in range(2000)]]


@pytest.mark.parametrize(("ms", "rand"), EDGES)
def test_an_id_spells_its_time_then_its_random_bits(
    monkeypatch: pytest.MonkeyPatch, ms: int, rand: int
) -> None:
    monkeypatch.setattr(ids, "_next", lambda: (ms, rand))
    assert ids.new_id("gen") == f"gen_{spelled(ms, rand)}"


def test_many_ids_spell_what_the_definition_says(monkeypatch: pytest.MonkeyPatch) -> None:
    for ms, rand in CASES:  # the cached time prefix follows each new millisecond
        monkeypatch.setattr(ids, "_next", lambda ms=ms, rand=rand: (ms, rand))
        assert ids.new_id("img") == f"img_{spelled(ms, rand)}"


def test_ids_of_one_process_increase_strictly() -> None:
    made = [ids.new_id("evt") for _ in range(5000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(i) == len("evt_") + 26 for i in made)
