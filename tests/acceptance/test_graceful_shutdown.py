"""SIGTERM drains: running jobs finish within the grace, the rest go back to PENDING, the
process exits 0, and a restart finishes everything (none lost, none FAILED).

What happened before the restart is read from each generation's event log, which the
server keeps: a ``released`` event is a job given back at shutdown, a ``requeued`` one a
job recovered from a dead lease.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.acceptance.conftest import (
    Server,
    ServerFactory,
    placeholder_config,
    stream_events,
    wait_all_terminal,
    wait_processing,
)

EXIT_MARGIN_S = 5.0


def _submit(server: Server, count: int, prefix: str) -> list[str]:
    api = server.client()
    ids = []
    for i in range(count):
        r = api.post("/v1/generations", json={
            "prompt": f"{prefix} {i}", "width": 64, "height": 64, "format": "png",
        })
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _sigterm(server: Server, *, grace_s: float) -> tuple[int | None, float, datetime]:
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait_exit(timeout=grace_s + EXIT_MARGIN_S)
    elapsed = time.monotonic() - started
    assert code is not None, (
        f"pixelgate serve still running {grace_s + EXIT_MARGIN_S:.1f} s after SIGTERM\n"
        f"--- stderr ---\n{server.stderr()[-3000:]}"
    )
    return code, elapsed, datetime.now(UTC)


def _assert_exit_zero(server: Server, code: int | None) -> None:
    assert code == 0, (
        f"pixelgate serve exited with {code} after SIGTERM (want 0; a negative value is the "
        f"signal number the process died of)\n--- stderr ---\n{server.stderr()[-3000:]}"
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _events(api: httpx.Client, gen_id: str) -> list[dict[str, Any]]:
    _, events = stream_events(api, gen_id, timeout=10)
    return events


def test_sigterm_drains_running_jobs_and_keeps_the_queue(start_server: ServerFactory) -> None:
    config = placeholder_config(latency_ms=1500, name="slow")
    env = {"PIXELGATE_SHUTDOWN_GRACE_S": "10", "PIXELGATE_LEASE_SECONDS": "3",
           "PIXELGATE_CONCURRENCY": "4"}
    first = start_server(config=config, env=env)
    ids = _submit(first, 10, "graceful")
    running = wait_processing(first.client(), ids, at_least=4, timeout=5)
    assert len(running) == 4, running  # the concurrency

    code, elapsed, exited_at = _sigterm(first, grace_s=10)
    # the running jobs need 1.5 s: the drain waits for them, not for the whole grace
    assert elapsed < 9, f"shutdown took {elapsed:.1f} s"
    assert "Traceback" not in first.stderr(), first.stderr()[-3000:]

    # the restart runs a fast placeholder under the same name
    second = start_server(config=placeholder_config(latency_ms=0, name="slow"), env=env,
                          data_dir=first.data_dir, port=first.port)
    api = second.client()
    bodies = wait_all_terminal(api, ids, timeout=20, server=second)
    assert {b["status"] for b in bodies.values()} == {"SUCCEEDED"}, {
        k: (v["status"], v["error"]) for k, v in bodies.items()
    }
    for gen_id, body in bodies.items():
        assert len(body["images"]) == 1, (gen_id, body["images"])
        r = httpx.get(body["images"][0]["url"], timeout=10)
        assert r.status_code == 200
        events = _events(api, gen_id)
        types = [e["event"] for e in events]
        assert types.count("succeeded") == 1, (gen_id, types)
        assert types.count("started") == 1, (gen_id, types)
        assert "failed" not in types and "requeued" not in types, (gen_id, types)
        started_at = _ts(events[types.index("started")]["data"]["created_at"])
        if gen_id in running:
            # running at SIGTERM: finished within the grace, by the first process
            assert _ts(body["completed_at"]) < exited_at, (gen_id, body["completed_at"])
            assert "released" not in types, (gen_id, types)
        else:
            # waiting at SIGTERM: a draining server takes no new work; it ran after restart
            assert started_at > exited_at, (
                f"{gen_id} was PENDING at SIGTERM but was started by the draining server "
                f"at {started_at}"
            )

    _assert_exit_zero(first, code)


def test_sigterm_short_grace_releases_running_jobs(start_server: ServerFactory) -> None:
    config = placeholder_config(latency_ms=5000, name="slow")
    env = {"PIXELGATE_SHUTDOWN_GRACE_S": "0.5", "PIXELGATE_LEASE_SECONDS": "3"}
    first = start_server(config=config, env=env)
    ids = _submit(first, 5, "released")
    running = wait_processing(first.client(), ids, at_least=5, timeout=5)
    assert running == set(ids)

    code, elapsed, exited_at = _sigterm(first, grace_s=0.5)
    assert elapsed < 4.5, f"shutdown with a 0.5 s grace took {elapsed:.1f} s"
    assert "Traceback" not in first.stderr(), first.stderr()[-3000:]

    second = start_server(config=placeholder_config(latency_ms=0, name="slow"), env=env,
                          data_dir=first.data_dir, port=first.port)
    api = second.client()
    bodies = wait_all_terminal(api, ids, timeout=20, server=second)
    assert {b["status"] for b in bodies.values()} == {"SUCCEEDED"}, {
        k: (v["status"], v["error"]) for k, v in bodies.items()
    }
    for gen_id, body in bodies.items():
        assert len(body["images"]) == 1, (gen_id, body["images"])
        assert _ts(body["completed_at"]) > exited_at
        events = _events(api, gen_id)
        types = [e["event"] for e in events]
        # given back (PENDING) at shutdown, not left PROCESSING for lease recovery
        assert "released" in types, (
            f"{gen_id} was cut off by the grace but not released back to PENDING: {types}"
        )
        assert "requeued" not in types, (gen_id, types)
        starts = [i for i, t in enumerate(types) if t == "started"]
        assert len(starts) == 2, (gen_id, types)
        assert starts[0] < types.index("released") < starts[1], (gen_id, types)
        assert types.count("succeeded") == 1 and types[-1] == "succeeded", (gen_id, types)
        assert "failed" not in types, (gen_id, types)

    _assert_exit_zero(first, code)
