"""``new_id``: 26 Crockford base32 chars spelling 48 bits of milliseconds then 80
random bits, strictly increasing within a process."""

from __future__ import annotations

import os
import random
import time

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


def test_random_bits_come_from_the_os_a_pool_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``os.urandom`` (which gives up the GIL) per 4 KiB, not per millisecond."""
    calls: list[int] = []
    real = ids.os.urandom

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(ids.os, "urandom", counted)
    monkeypatch.setattr(ids, "_pool", b"")
    drawn = [ids._random_bits() for _ in range(1000)]  # 10,000 bytes
    assert calls == [4096] * 3
    assert len(set(drawn)) == 1000 and all(0 <= b < 1 << 80 for b in drawn)


def test_a_forked_child_draws_its_own_random_bits() -> None:
    ids.new_id("gen")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the first id of a new millisecond, from its own bytes
        try:
            os.close(read)
            time.sleep(0.002)
            os.write(write, f"{ids._pool_at} {ids.new_id('gen')}".encode())
        finally:
            os._exit(0)  # never back into pytest
    os.close(write)
    os.waitpid(pid, 0)
    child_at, child_id = os.read(read, 100).decode().split()
    os.close(read)
    time.sleep(0.002)
    assert child_at == "0"  # the pool was forgotten at the fork
    assert child_id[-16:] != ids.new_id("gen")[-16:]  # not the parent's next bytes
