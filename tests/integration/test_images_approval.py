"""Image approval and entity links (seed 002), scoped to the caller's account."""

from __future__ import annotations

from typing import Any

import httpx

WAIT = {"Prefer": "wait=10"}


async def _generate(
    client: httpx.AsyncClient, headers: dict[str, str], **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        "/v1/generations",
        headers={**headers, **WAIT},
        json={"prompt": "a castle", "width": 16, "height": 16, **extra},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_images_start_pending_and_can_be_approved_or_rejected(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("curator")
    gen = await _generate(client, headers)
    [image] = gen["images"]
    assert image["id"].startswith("img_") and image["approval"] == "pending"
    r = await client.patch(
        f"/v1/images/{image['id']}", headers=headers, json={"approval": "approved"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["approval"] == "approved" and r.json()["generation_id"] == gen["id"]
    shown = (await client.get(f"/v1/generations/{gen['id']}", headers=headers)).json()
    assert shown["images"][0]["approval"] == "approved"
    rejected = await client.patch(
        f"/v1/images/{image['id']}", headers=headers, json={"approval": "rejected"}
    )
    assert rejected.json()["approval"] == "rejected"
    got = await client.get(f"/v1/images/{image['id']}", headers=headers)
    assert got.json()["approval"] == "rejected" and got.json()["sha256"] == image["sha256"]


async def test_approval_rejects_unknown_values(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("picky")
    image = (await _generate(client, headers))["images"][0]
    for body in ({"approval": "maybe"}, {}, {"approval": "approved", "extra": 1}):
        r = await client.patch(f"/v1/images/{image['id']}", headers=headers, json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["request_id"]  # the native error shape


async def test_another_accounts_image_is_404(client: httpx.AsyncClient, make_account: Any) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    image = (await _generate(client, alice))["images"][0]
    for r in (
        await client.get(f"/v1/images/{image['id']}", headers=bob),
        await client.patch(f"/v1/images/{image['id']}", headers=bob, json={"approval": "approved"}),
    ):
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    mine = await client.get(f"/v1/images/{image['id']}", headers=alice)
    assert mine.json()["approval"] == "pending"
    assert (await client.get("/v1/images/img_missing", headers=alice)).status_code == 404


async def test_entities_in_the_request_are_linked_and_queryable(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("novelist")
    hero = await _generate(
        client,
        headers,
        entities=[{"type": "character", "id": "c-1"}, {"type": "location", "id": "l-9"}],
    )
    villain = await _generate(client, headers, entities=[{"type": "character", "id": "c-2"}])
    await _generate(client, headers)
    links = (await client.get(f"/v1/generations/{hero['id']}/links", headers=headers)).json()
    assert [(link["type"], link["id"]) for link in links["data"]] == [
        ("character", "c-1"),
        ("location", "l-9"),
    ]

    async def query(**params: str) -> list[str]:
        r = await client.get("/v1/generations", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return [g["id"] for g in r.json()["data"]]

    assert await query(entity_type="character", entity_id="c-1") == [hero["id"]]
    assert await query(entity_type="character") == [villain["id"], hero["id"]]
    assert await query(entity_type="location", entity_id="l-9") == [hero["id"]]
    assert await query(entity_type="character", entity_id="nobody") == []
    r = await client.get("/v1/generations", headers=headers, params={"entity_id": "c-1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "entity_type"


async def test_links_can_be_added_later_once_each(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("editor")
    gen = await _generate(client, headers)
    url = f"/v1/generations/{gen['id']}/links"
    r = await client.post(url, headers=headers, json={"type": "scene", "id": "s-3"})
    assert r.status_code == 201, r.text
    again = await client.post(
        url,
        headers=headers,
        json={"entities": [{"type": "scene", "id": "s-3"}, {"type": "chapter", "id": "7"}]},
    )
    assert [(x["type"], x["id"]) for x in again.json()["data"]] == [
        ("scene", "s-3"),
        ("chapter", "7"),
    ]
    found = await client.get(
        "/v1/generations", headers=headers, params={"entity_type": "scene", "entity_id": "s-3"}
    )
    assert [g["id"] for g in found.json()["data"]] == [gen["id"]]
    for bad in ({"type": "scene"}, {"type": "bad type", "id": "x"}, {"id": "x"}, {}):
        r = await client.post(url, headers=headers, json=bad)
        assert r.status_code == 422, bad


async def test_links_and_entity_queries_are_scoped_to_the_account(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    gen = await _generate(client, alice, entities=[{"type": "character", "id": "shared"}])
    await _generate(client, bob, entities=[{"type": "character", "id": "shared"}])
    url = f"/v1/generations/{gen['id']}/links"
    assert (await client.get(url, headers=bob)).status_code == 404
    r = await client.post(url, headers=bob, json={"type": "character", "id": "stolen"})
    assert r.status_code == 404
    params = {"entity_type": "character", "entity_id": "shared"}
    alices = (await client.get("/v1/generations", headers=alice, params=params)).json()["data"]
    bobs = (await client.get("/v1/generations", headers=bob, params=params)).json()["data"]
    assert [g["id"] for g in alices] == [gen["id"]]
    assert len(bobs) == 1 and bobs[0]["id"] != gen["id"]
    links = (await client.get(url, headers=alice)).json()["data"]
    assert [(x["type"], x["id"]) for x in links] == [("character", "shared")]
