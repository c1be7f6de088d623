"""Native image and entity-link routes: an image's approval status (seed 002) and the
links from a generation to external entities."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pixelgate.api.deps import CurrentCaller, RuntimeDep, visible_account
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import image_body, iso
from pixelgate.core.models import ENTITY_TYPE_PATTERN, MAX_ENTITIES, EntityRef, ImageView
from pixelgate.core.records import LinkView

router = APIRouter(tags=["images"])

Approval = Literal["pending", "approved", "rejected"]


class ApprovalUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval: Approval


class LinksRequest(BaseModel):
    """One entity (``{type, id}``) or several (``{"entities": [...]}``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str | None = Field(None, pattern=ENTITY_TYPE_PATTERN)
    id: str | None = Field(None, min_length=1, max_length=255)
    entities: list[EntityRef] | None = Field(None, min_length=1, max_length=MAX_ENTITIES)

    @model_validator(mode="after")
    def _one_form(self) -> LinksRequest:
        if self.entities is None:
            if self.type is None or self.id is None:
                raise ValueError("give type and id (or entities)")
            self.entities = [EntityRef.model_construct(type=self.type, id=self.id)]
        elif self.type is not None or self.id is not None:
            raise ValueError("give type and id, or entities, not both")
        return self


def _image(view: ImageView, generation_id: str) -> dict[str, Any]:
    return {**image_body(view), "object": "image", "generation_id": generation_id}


def _links(generation_id: str, links: list[LinkView]) -> dict[str, Any]:
    return {
        "object": "list",
        "generation_id": generation_id,
        "data": [
            {"type": link.type, "id": link.id, "created_at": iso(link.created_at)} for link in links
        ],
    }


@router.get("/v1/images/{image_id}")
async def get_image(image_id: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    view, generation_id = await runtime.services.records.get_image(
        image_id, account_id=visible_account(caller)
    )
    return JSONResponse(_image(view, generation_id))


@router.patch("/v1/images/{image_id}")
async def update_image(
    image_id: str, body: ApprovalUpdate, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    view, generation_id = await runtime.services.records.set_approval(
        image_id, body.approval, account_id=visible_account(caller)
    )
    return JSONResponse(_image(view, generation_id))


@router.post("/v1/generations/{generation_id}/links", status_code=201)
async def add_links(
    generation_id: str, body: LinksRequest, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    links = await runtime.services.records.add_links(
        generation_id,
        [(e.type, e.id) for e in body.entities or ()],
        account_id=visible_account(caller),
    )
    return JSONResponse(_links(generation_id, links), status_code=201)


@router.get("/v1/generations/{generation_id}/links")
async def list_links(
    generation_id: str, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    links = await runtime.services.records.list_links(
        generation_id, account_id=visible_account(caller)
    )
    return JSONResponse(_links(generation_id, links))
