"""A worker that dies while an asynchronous provider job runs: the next worker reconnects to
the saved provider job instead of submitting (and paying for) it again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from pixelgate.providers.placeholder import render_placeholder
from pixelgate.runtime import Runtime

PNG = render_placeholder("resumed", width=48, height=32)


class FakeReplicate:
    """Replicate's predictions API: create, then poll until ``done`` is set."""

    def __init__(self) -> None:
        self.submissions = 0
        self.polls = 0
        self.done = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/v1/"):
            assert request.headers["authorization"] == "Bearer r8_test"
        else:  # output files are fetched without the API key
            assert "authorization" not in request.headers
        if request.method == "POST" and path.endswith("/predictions"):
            self.submissions += 1
            body = json.loads(request.content)
            assert isinstance(body["input"]["prompt"], str)
            return httpx.Response(201, json=self._prediction("starting"))
        if request.method == "GET" and path == "/v1/predictions/p-1":
            self.polls += 1
            return httpx.Response(
                200, json=self._prediction("succeeded" if self.done else "processing")
            )
        if request.method == "GET" and path == "/out/p-1.png":
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        return httpx.Response(404, json={"detail": f"unexpected {request.method} {path}"})

    def _prediction(self, status: str) -> dict[str, Any]:
        return {
            "id": "p-1",
            "status": status,
            "input": {},
            "output": ["http://replicate.test/out/p-1.png"] if status == "succeeded" else None,
            "error": None,
            "logs": "",
            "urls": {
                "get": "http://replicate.test/v1/predictions/p-1",
                "cancel": "http://replicate.test/v1/predictions/p-1/cancel",
            },
        }


async def _open(settings: Any, fake: FakeReplicate) -> Runtime:
    runtime = await Runtime.open(settings)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    runtime.providers.get("rep").http = client
    runtime.pipeline.http = client
    await runtime.start_worker()
    return runtime


async def _crash(runtime: Runtime) -> None:
    """Stop a runtime the way SIGKILL would: tasks vanish, nothing is released."""
    worker = runtime.worker
    assert worker is not None
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith(("job-", "pixelgate-"))]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    runtime.worker = None
    await runtime.close()


async def test_restarted_worker_resumes_the_provider_job(make_settings: Any) -> None:
    settings = make_settings(
        lease_seconds=1.0,
        providers={
            "rep": {
                "kind": "replicate",
                "api_key": "r8_test",
                "base_url": "http://replicate.test/v1",
                "poll_interval_s": 0.05,
                "wait_s": 0,
            }
        },
        routing={"default": ["rep"]},
    )
    fake = FakeReplicate()
    first = await _open(settings, fake)
    caller = await first.local_caller()
    from pixelgate.core.models import GenerationRequest

    admitted = await first.pipeline.admit(caller, GenerationRequest(prompt="resume me"))
    gen_id = admitted.generation.id
    for _ in range(200):
        if any(e.type == "provider_job" for e in await first.store.events_after(gen_id)):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the provider job id was never saved")
    assert fake.submissions == 1
    await _crash(first)

    fake.done = True
    second = await _open(settings, fake)
    try:
        view = await second.pipeline.wait(gen_id, 15)
        assert view.status.value == "SUCCEEDED", (view.error_code, view.error_message)
        assert fake.submissions == 1  # reconnected, not submitted (and paid) twice
        assert fake.polls >= 1
        [image] = view.images
        assert (image.width, image.height) == (48, 32)
    finally:
        await second.close()
