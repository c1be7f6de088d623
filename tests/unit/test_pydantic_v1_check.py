"""FastAPI still refuses ``pydantic.v1`` models, and only imports ``pydantic.v1`` for it
when something else has (``api/_pydantic_v1_check.py``).

No ``from __future__ import annotations`` here: the endpoints' annotations name a local
class, which FastAPI could not resolve from a string."""

import subprocess
import sys
import warnings

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import PydanticV1NotSupportedError

import pixelgate.api  # noqa: F401 - puts the guarded checks in place


def _v1_model() -> type:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydantic import v1

    class Legacy(v1.BaseModel):
        name: str

    return Legacy


def test_a_pydantic_v1_model_is_still_refused_as_a_body_and_a_response() -> None:
    legacy = _v1_model()
    router = APIRouter()
    with pytest.raises(PydanticV1NotSupportedError):

        @router.post("/legacy")
        async def takes(body: legacy) -> None:  # type: ignore[valid-type]
            return None

    with pytest.raises(PydanticV1NotSupportedError):

        @router.get("/legacy", response_model=list[legacy])  # type: ignore[valid-type]
        async def gives() -> list[object]:
            return []

    with pytest.raises(PydanticV1NotSupportedError):
        jsonable_encoder(legacy(name="x"))


_SCRIPT = """
import sys
import pixelgate.api
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

class Body(BaseModel):
    name: str

app = FastAPI()

@app.post("/x", response_model=list[Body])
async def x(body: Body, n: int = 1) -> list[Body]:
    return [body]

jsonable_encoder({"a": Body(name="y"), "b": {1, 2}})
print("pydantic.v1" in sys.modules)
"""


def test_declaring_routes_does_not_import_pydantic_v1() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_the_checks_are_replaced_once() -> None:
    import fastapi._compat.shared as shared

    from pixelgate.api._pydantic_v1_check import check_pydantic_v1_only_once_imported

    before = shared.is_pydantic_v1_model_class
    check_pydantic_v1_only_once_imported()
    assert shared.is_pydantic_v1_model_class is before
    assert FastAPI  # the app class itself is untouched
