"""The OpenAPI document tells the truth about errors, methods and the OpenAI route's
vocabulary (issue 14, "The contract")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


async def _openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


async def test_every_operation_documents_its_errors_with_the_shared_schema(
    client: httpx.AsyncClient,
) -> None:
    doc = await _openapi(client)
    assert "ErrorBody" in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "500" in responses, (method, path)
            if method in ("post", "patch", "put"):
                assert "413" in responses, (method, path)
    create = doc["paths"]["/v1/generations"]["post"]["responses"]
    for status in ("401", "402", "409", "413", "422", "429"):
        ref = create[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    images = doc["paths"]["/v1/images/generations"]["post"]
    assert images["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OpenAIErrorBody"
    )
    assert "prompt" in images["requestBody"]["content"]["application/json"]["schema"]["required"]


async def test_constraints_live_in_the_document(client: httpx.AsyncClient) -> None:
    schemas = (await _openapi(client))["components"]["schemas"]
    request = schemas["GenerationRequest"]["properties"]
    assert "pattern" in request["project"] and "pattern" in request["aspect_ratio"]["anyOf"][0]
    assert request["n"]["maximum"] == 1000
    credits = schemas["CreditChange"]["properties"]["credits"]
    assert credits["maximum"] == 10**15 and credits["minimum"] == -(10**15)


async def test_options_answers_204_with_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    r = await client.options("/v1/generations")
    assert r.status_code == 204
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert r.headers["x-request-id"]


async def test_a_405_lists_every_allowed_method(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/generations")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"\xff\xfe", "application/json"), (b"x", "text/plain")],
)
async def test_malformed_bodies_answer_422_on_the_native_api(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    r = await client.post(
        "/v1/generations", content=content, headers={"Content-Type": content_type}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "body"


async def test_the_openai_route_refuses_an_unknown_parameter_as_openai_does(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/images/generations", json={"prompt": "x", "model": "fast", "provider": "midjourney"}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "provider"
    assert "Unrecognized request argument supplied: provider" in error["message"]


async def test_openai_error_types_follow_openais_vocabulary(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/images/generations", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["code"] == "unauthorized"
    r = await client.post("/v1/images/generations", json={"prompt": "x", "model": "nope/nope"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


async def test_the_document_is_valid_openapi(client: httpx.AsyncClient) -> None:
    from openapi_spec_validator import validate

    validate(await _openapi(client))  # raises with the first problem
