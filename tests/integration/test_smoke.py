from __future__ import annotations

import httpx


async def test_generation_round_trip(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/generations",
        json={"prompt": "a cat", "width": 64, "height": 64},
        headers={"Prefer": "wait=10"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCEEDED"
    image = body["images"][0]
    assert (image["width"], image["height"]) == (64, 64)
