"""The seed-compatible routes answer in their seeds' own shapes (examples from shared/seeds)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from pixelgate.core.routing import RetryPolicy
from pixelgate.runtime import Runtime

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# seed 000 ----------------------------------------------------------------------


async def test_seed000_readme_request_example(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    # the example names ideogram-v2 and no Ideogram key is set: substitution must be asked for
    runtime.settings.substitute_unconfigured_models = True
    _, headers = await make_account("production")
    example = {
        "prompt": "A serene mountain landscape at sunset",
        "model": "ideogram-v2",
        "instance_id": "production",
        "project_id": "content-forge",
        "options": {"aspect_ratio": "16:9", "style": "realistic"},
    }
    r = await client.post("/generate", json=example, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["request_id"] == r.headers["x-request-id"]
    assert ISO_Z.match(body["timestamp"])
    assert body["r2_path"].startswith("ai/production/content-forge/")
    assert body["image_url"].endswith(body["r2_path"])
    meta = body["metadata"]
    assert meta["dimensions"] == "1024x576"  # 16:9
    assert meta["format"] == "png"
    assert meta["provider"] == "fast"  # ideogram is not configured: the fallback chain ran
    assert meta["requested_model"] == "ideogram-v2"
    assert "'ideogram' or" in meta["substituted"] or "'ideogram'" in meta["substituted"]
    assert isinstance(meta["generation_time_ms"], int)


async def test_seed000_curl_example(client: httpx.AsyncClient, make_account: Any) -> None:
    _, headers = await make_account("production")
    r = await client.post(
        "/generate",
        headers=headers,
        json={
            "prompt": "A beautiful sunset over mountains",
            "instance_id": "production",
            "project_id": "test",
        },
    )
    assert r.status_code == 200
    assert r.json()["r2_path"].startswith("ai/production/test/")


async def test_seed000_errors(client: httpx.AsyncClient, make_account: Any) -> None:
    _, headers = await make_account("production")
    missing = await client.post("/generate", headers=headers, json={"instance_id": "production"})
    assert missing.status_code == 400
    body = missing.json()
    assert body["success"] is False and "prompt" in body["error"]
    assert body["request_id"] == missing.headers["x-request-id"]
    unknown = await client.post(
        "/generate", headers=headers, json={"prompt": "x", "instance_id": "staging"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "instance_not_found"
    # another account's instance is indistinguishable from a missing one
    await make_account("other")
    foreign = await client.post(
        "/generate", headers=headers, json={"prompt": "x", "instance_id": "other"}
    )
    assert foreign.status_code == 404


async def test_seed000_provider_failure_is_502(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.pipeline.retry = RetryPolicy(attempts=1)
    r = await client.post("/generate", json={"prompt": "x", "provider": "flaky"})
    assert r.status_code == 502
    assert r.json()["success"] is False
    assert r.json()["code"] == "provider_unavailable"


async def test_seed000_timeout_is_504_and_the_job_carries_on(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.sync_timeout_s = 0.3
    r = await client.post("/generate", json={"prompt": "x", "provider": "slow"})
    assert r.status_code == 504
    gen_id = r.json()["generation_id"]
    view = await runtime.pipeline.wait(gen_id, 10)
    assert view.status.value == "SUCCEEDED"


# seed 001 ----------------------------------------------------------------------


async def test_seed001_request_example(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/images/generate",
        json={
            "prompt": "A beautiful sunset over mountains",
            "keyword": "landscape",
            "articleId": "article-123",
            "width": 1024,
            "height": 768,
            "style": "photorealistic",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["provider"] == "fast"
    assert isinstance(body["elapsedMs"], int)
    assert body["url"].endswith(".webp")
    path = body["url"].split("testserver", 1)[-1]
    image = await client.get(path[path.index("/files/") :])
    assert image.headers["content-type"] == "image/webp"


async def test_seed001_all_providers_failing_gives_the_default_image(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.pipeline.retry = RetryPolicy(attempts=1)
    r = await client.post(
        "/images/generate",
        json={"prompt": "x", "providers": ["flaky"], "width": 320, "height": 240},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False and body["provider"] == "default"
    assert body["error"].startswith("All providers failed:")
    url = body["url"]
    image = await client.get(url[url.index("/files/") :])
    assert image.status_code == 200
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(image.content)).size == (320, 240)


# seed 004 ----------------------------------------------------------------------


async def test_seed004_example_and_status(client: httpx.AsyncClient, make_account: Any) -> None:
    _, headers = await make_account("dreamer", credits=100)
    r = await client.post(
        "/api/generate",
        headers=headers,
        json={
            "prompt": "A beautiful sunset over the ocean",
            "negativePrompt": "ugly, blurry",
            "seed": 12345,
            "settings": {
                "width": 512,
                "height": 512,
                "guidance_scale": 7.5,
                "steps": 50,
                "num_variations": 1,
                "format": "png",
            },
            "provider": "fast",
        },
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {
        "jobId",
        "status",
        "estimatedProcessingTime",
        "creditsUsed",
        "creditsRemaining",
        "createdAt",
    }
    assert body["status"] == "PENDING"
    assert body["creditsUsed"] == 1 and body["creditsRemaining"] == 99
    assert ISO_Z.match(body["createdAt"])
    job = body["jobId"]
    for _ in range(100):
        status = (await client.get(f"/api/generate/{job}", headers=headers)).json()
        if status["generation"]["status"] == "SUCCEEDED":
            break
        await asyncio.sleep(0.05)
    gen = status["generation"]
    assert gen["id"] == job and gen["progress"] == 100
    assert gen["resultImageUrl"].endswith(".png")
    assert gen["errorMessage"] is None and gen["retryCount"] == 0
    assert gen["provider"] == "fast" and isinstance(gen["processingTimeMs"], int)
    listed = (await client.get("/api/generate", headers=headers)).json()
    assert [g["id"] for g in listed["generations"]] == [job]


async def test_seed004_credit_rules(client: httpx.AsyncClient, make_account: Any) -> None:
    _, headers = await make_account("rich", credits=100)
    r = await client.post(
        "/api/generate",
        headers=headers,
        json={
            "prompt": "big",
            "settings": {"width": 1536, "height": 1024, "num_variations": 3},
        },
    )
    assert r.json()["creditsUsed"] == 1 + 1 + 2


async def test_seed004_curl_example(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/generate", json={"prompt": "A test image", "settings": {"width": 512, "height": 512}}
    )
    assert r.status_code == 202
    assert r.json()["creditsRemaining"] is None  # the admin account is unmetered


@pytest.mark.parametrize("body", [{}, {"prompt": 5}, {"prompt": "x", "settings": {"width": "w"}}])
async def test_seed004_bad_input_is_400_in_its_shape(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    r = await client.post("/api/generate", json=body)
    assert r.status_code == 400
    assert set(r.json()) == {"error", "code", "request_id"}


async def test_seed004_insufficient_credits_is_402_and_charges_nothing(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("poor", credits=1)
    r = await client.post(
        "/api/generate", headers=headers, json={"prompt": "x", "settings": {"num_variations": 2}}
    )
    assert r.status_code == 402
    account = await runtime.store.get_account(caller.account_id)
    assert account.credits == 1 == await runtime.store.ledger_sum(caller.account_id)


async def test_seed004_other_users_job_is_404(client: httpx.AsyncClient, make_account: Any) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    job = (await client.post("/api/generate", headers=alice, json={"prompt": "x"})).json()
    r = await client.get(f"/api/generate/{job['jobId']}", headers=bob)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


async def test_seed004_provider_health(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/health/providers")).json()
    assert body["status"] == "healthy"
    assert body["configured"]["fast"] is True and body["configured"]["gemini"] is False
    assert body["providers"]["fast"]["healthy"] is True
    assert ISO_Z.match(body["providers"]["fast"]["lastCheck"])
