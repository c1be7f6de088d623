"""SIGKILL the server with jobs in flight: a restart on the same data dir finishes every one,
exactly once in storage."""

from __future__ import annotations

import hashlib
import io
import signal

import httpx
from PIL import Image

from tests.acceptance.conftest import (
    ServerFactory,
    image_files,
    placeholder_config,
    stream_events,
    wait_all_terminal,
    wait_processing,
)

JOBS = 20


def test_sigkill_with_jobs_in_flight_loses_nothing(start_server: ServerFactory) -> None:
    config = placeholder_config(latency_ms=2000, name="slow")
    env = {"PIXELGATE_LEASE_SECONDS": "3", "PIXELGATE_CONCURRENCY": "100",
           "PIXELGATE_SHUTDOWN_GRACE_S": "5"}
    first = start_server(config=config, env=env)
    api = first.client()
    ids: list[str] = []
    for i in range(JOBS):
        r = api.post("/v1/generations", json={
            "prompt": f"crash test {i}", "width": 96, "height": 64, "format": "png", "seed": i,
        })
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])

    # all 20 fit in the concurrency: wait until they run (a slow machine may still be
    # claiming the last ones after a second; the provider takes 2 s), then crash mid-flight
    wait_processing(api, ids, at_least=1, timeout=5)
    running = wait_processing(api, ids, at_least=JOBS, timeout=1.0, strict=False)
    assert running, "nothing was PROCESSING at the crash"
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    first.close_clients()

    # the restart runs a fast placeholder under the same name: the re-runs finish at once
    second = start_server(config=placeholder_config(latency_ms=0, name="slow"), env=env,
                          data_dir=first.data_dir, port=first.port)
    api = second.client()
    bodies = wait_all_terminal(api, ids, timeout=30, server=second)
    states = {gid: b["status"] for gid, b in bodies.items()}
    assert set(states.values()) == {"SUCCEEDED"}, states

    keys: set[str] = set()
    for gen_id in ids:
        gen = bodies[gen_id]
        assert len(gen["images"]) == 1, (gen_id, gen["images"])
        image = gen["images"][0]
        keys.add(image["key"])
        r = httpx.get(image["url"], timeout=10)
        assert r.status_code == 200, (image["url"], r.status_code)
        assert hashlib.sha256(r.content).hexdigest() == image["sha256"]
        with Image.open(io.BytesIO(r.content)) as img:
            img.load()
            assert (img.format, img.size) == ("PNG", (96, 64))

        _, events = stream_events(api, gen_id, timeout=10)
        types = [e["event"] for e in events]
        assert types.count("succeeded") == 1, (gen_id, types)
        assert types.count("queued") == 1, (gen_id, types)
        ev_ids = [int(e["id"]) for e in events]
        assert ev_ids == sorted(ev_ids), (gen_id, ev_ids)
        if gen_id in running:
            assert "requeued" in types or types.count("started") >= 2, (
                f"{gen_id} was PROCESSING at the crash but its events show no re-run: {types}"
            )
            # the re-run starts after the requeue
            assert types.count("started") >= 2, (gen_id, types)

    # exactly one stored file per generation: re-runs overwrite, nothing stray
    files = image_files(first.data_dir / "images")
    rel = sorted(str(p.relative_to(first.data_dir / "images")) for p in files)
    assert len(keys) == JOBS
    assert rel == sorted(keys), f"stored files differ from image keys:\n{rel}\nvs\n{sorted(keys)}"
