"""Prompt templates (seed 003) and narrative context (seed 002) through the native API."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from pixelgate.db.tables import Generation
from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}
STYLE = "A {subject} in the style of {style}"


async def _template(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "styled", text: str = STYLE
) -> dict[str, Any]:
    r = await client.post("/v1/templates", headers=headers, json={"name": name, "text": text})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _generations(runtime: Runtime, account_id: str) -> int:
    query = select(func.count()).select_from(Generation).where(
        Generation.account_id == account_id
    )
    return int(await runtime.db.run(lambda c: c.scalar(query)) or 0)


async def test_create_list_get_and_delete_templates(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("writer")
    created = await _template(client, headers)
    assert created["id"].startswith("tpl_")
    assert created["placeholders"] == ["subject", "style"]
    assert created["text"] == STYLE
    by_name = await client.get("/v1/templates/styled", headers=headers)
    by_id = await client.get(f"/v1/templates/{created['id']}", headers=headers)
    assert by_name.json() == by_id.json() == created
    listed = (await client.get("/v1/templates", headers=headers)).json()["data"]
    assert [t["name"] for t in listed] == ["styled"]
    again = await client.post(
        "/v1/templates", headers=headers, json={"name": "styled", "text": "x"}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "template_exists"
    deleted = await client.delete("/v1/templates/styled", headers=headers)
    assert deleted.json() == {"id": created["id"], "object": "template", "deleted": True}
    assert (await client.get("/v1/templates/styled", headers=headers)).status_code == 404
    assert (await client.delete("/v1/templates/styled", headers=headers)).status_code == 404


async def test_templates_are_per_account(client: httpx.AsyncClient, make_account: Any) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    mine = await _template(client, alice)
    assert (await client.get(f"/v1/templates/{mine['id']}", headers=bob)).status_code == 404
    assert (await client.get("/v1/templates", headers=bob)).json()["data"] == []
    assert (await client.delete("/v1/templates/styled", headers=bob)).status_code == 404
    # the same name in another account is another template
    theirs = await _template(client, bob, text="A {thing}")
    assert theirs["id"] != mine["id"]
    r = await client.post(
        "/v1/generations",
        headers=bob,
        json={"template": mine["id"], "inputs": {"subject": "cat", "style": "ink"}},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "template"


async def test_invalid_template_text_is_422_naming_text(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("sloppy")
    for text in ("A {subject", "A subject}", "A {two words}", "A {}", "A {1st}"):
        r = await client.post("/v1/templates", headers=headers, json={"name": "t", "text": text})
        assert r.status_code == 422, text
        assert r.json()["error"]["field"] == "text", text
    for name in ("tpl_fake", "has space", ""):
        r = await client.post("/v1/templates", headers=headers, json={"name": name, "text": "x"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "name", name
    literal = await _template(client, headers, name="braces", text="{{literal}} {x}")
    assert literal["placeholders"] == ["x"]


async def test_generation_from_a_template_records_the_final_prompt(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("painter")
    await _template(client, headers)
    r = await client.post(
        "/v1/generations",
        headers={**headers, **WAIT},
        json={
            "template": "styled",
            "inputs": {"subject": "  red   fox ", "style": "Hokusai"},
            "width": 32,
            "height": 32,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCEEDED"
    assert body["prompt"] == "A red fox in the style of Hokusai"
    assert body["request"]["template"] == "styled"
    assert body["request"]["inputs"] == {"subject": "red   fox", "style": "Hokusai"}
    assert body["request"]["prompt"] == "A red fox in the style of Hokusai"


async def test_template_errors_are_422_naming_the_field(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("careless", credits=5)
    await _template(client, headers)
    cases = [
        (
            {"template": "styled", "inputs": {"subject": "fox"}},
            "inputs.style",
            "missing_template_input",
        ),
        (
            {"template": "styled", "inputs": {"subject": "fox", "style": " "}},
            "inputs.style",
            "missing_template_input",
        ),
        ({"template": "styled"}, "inputs.subject", "missing_template_input"),
        (
            {"template": "styled", "inputs": {"subject": "fox", "style": "ink", "mood": "calm"}},
            "inputs.mood",
            "unknown_template_input",
        ),
        ({"template": "nope", "inputs": {"subject": "fox"}}, "template", "template_not_found"),
        (
            {"prompt": "a fox", "inputs": {"subject": "fox"}},
            "inputs.subject",
            "unknown_template_input",
        ),
        (
            {"template": "styled", "prompt": "both", "inputs": {"subject": "a", "style": "b"}},
            "prompt",
            "invalid_request",
        ),
        ({"context": {"kind": "portrait", "text": "x"}}, "prompt", "invalid_request"),
        (
            {"prompt": "x", "context": {"kind": "selfie", "text": "x"}},
            "context.kind",
            "invalid_request",
        ),
        (
            {"prompt": "x", "context": {"kind": "scene", "text": ""}},
            "context.text",
            "invalid_request",
        ),
        (
            {"prompt": "x", "context": {"kind": "scene", "text": " . "}},
            "context.text",
            "invalid_request",
        ),
    ]
    for body, field, code in cases:
        r = await client.post("/v1/generations", headers=headers, json=body)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert (error["field"], error["code"]) == (field, code), (body, error)
        assert field in error["message"]
    assert await _generations(runtime, caller.account_id) == 0
    assert (await runtime.store.get_account(caller.account_id)).credits == 5


async def test_narrative_context_prefixes_the_prompt(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, headers = await make_account("storyteller")
    expected = {
        "portrait": "Portrait of an old sailor with a pipe. oil painting, warm light",
        "location": "Setting: an old sailor with a pipe. oil painting, warm light",
        "scene": "Scene: an old sailor with a pipe. oil painting, warm light",
    }
    for kind, prompt in expected.items():
        r = await client.post(
            "/v1/generations",
            headers=headers,
            json={
                "prompt": "oil painting, warm light",
                "context": {"kind": kind, "text": "  an old sailor\n with a pipe. "},
                "width": 16,
                "height": 16,
            },
        )
        assert r.status_code == 202, r.text
        assert r.json()["prompt"] == prompt
        assert r.json()["request"]["context"]["kind"] == kind


async def test_template_and_context_combine(client: httpx.AsyncClient, make_account: Any) -> None:
    _, headers = await make_account("director")
    await _template(client, headers, name="shot", text="{subject}, {lens} lens")
    r = await client.post(
        "/v1/generations",
        headers={**headers, **WAIT},
        json={
            "template": "shot",
            "inputs": {"subject": "a lighthouse at dusk", "lens": 35},
            "context": {"kind": "location", "text": "the Breton coast"},
            "width": 16,
            "height": 16,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == "Setting: the Breton coast. a lighthouse at dusk, 35 lens"


async def test_a_batch_member_with_a_template_error_names_its_index(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("batcher", credits=10, tier="ENTERPRISE")
    await _template(client, headers)
    r = await client.post(
        "/v1/batches",
        headers=headers,
        json={
            "requests": [
                {"template": "styled", "inputs": {"subject": "a", "style": "b"}},
                {"template": "styled", "inputs": {"subject": "a"}},
            ]
        },
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "requests.1.inputs.style"
    assert error["code"] == "missing_template_input"
    assert await _generations(runtime, caller.account_id) == 0
