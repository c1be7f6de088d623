"""Prompt templates of the caller's account: create, list, read, delete (seed 003)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.deps import CurrentCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.records import TemplateView
from pixelgate.core.templates import (
    MAX_TEMPLATE_LENGTH,
    TEMPLATE_NAME,
    check_template_name,
    parse_template,
)
from pixelgate.errors import NotFound

router = APIRouter(prefix="/v1/templates", tags=["templates"])


class TemplateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(pattern=TEMPLATE_NAME.pattern)
    text: str = Field(min_length=1, max_length=MAX_TEMPLATE_LENGTH)
    description: str | None = Field(None, max_length=1000)


def template_body(template: TemplateView) -> dict[str, Any]:
    return {
        "id": template.id,
        "object": "template",
        "name": template.name,
        "text": template.text,
        "placeholders": template.placeholders,
        "description": template.description,
        "created_at": iso(template.created_at),
    }


@router.post("", status_code=201)
async def create_template(
    body: TemplateRequest, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    name = check_template_name(body.name)
    parsed = parse_template(body.text)
    template = await runtime.services.records.create_template(
        caller.account_id,
        name=name,
        text=body.text,
        placeholders=parsed.placeholders,
        description=body.description,
    )
    return JSONResponse(
        template_body(template),
        status_code=201,
        headers={"Location": f"/v1/templates/{template.id}"},
    )


@router.get("")
async def list_templates(runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    templates = await runtime.services.records.list_templates(caller.account_id)
    return JSONResponse({"object": "list", "data": [template_body(t) for t in templates]})


@router.get("/{ref}")
async def get_template(ref: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    """A template by id or name."""
    template = await runtime.services.records.find_template(caller.account_id, ref)
    if template is None:
        raise NotFound(f"template {ref!r} not found")
    return JSONResponse(template_body(template))


@router.delete("/{ref}")
async def delete_template(ref: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    template = await runtime.services.records.delete_template(caller.account_id, ref)
    return JSONResponse({"id": template.id, "object": "template", "deleted": True})
