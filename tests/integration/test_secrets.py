"""Secrets in requests and in provider errors never reach a log line, an error body or an
admin response (issue 14, defect 5), also when an internal error prints a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog

from pixelgate import errors
from pixelgate.api.app import create_app
from pixelgate.logs import configure_logging, redact_text
from pixelgate.providers.base import JobContext, ProviderRequest, ProviderResult
from pixelgate.providers.placeholder import PlaceholderProvider
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY

PROMPT_SECRET = "sk-PROMPTLEAK999"
METADATA_SECRET = "hunter2-metadata-token"
PROVIDER_SECRET = "sk-PROVIDERLEAK12345"
PROVIDER_PASSWORD = "provider-pass-777"
SECRETS = (PROMPT_SECRET, METADATA_SECRET, PROVIDER_SECRET, PROVIDER_PASSWORD, ADMIN_KEY)


class LeakyProvider(PlaceholderProvider):
    """A provider whose upstream echoes credentials in its error message."""

    kind = "leaky"

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        raise errors.InvalidRequest(
            f"upstream: invalid key {PROVIDER_SECRET} (password={PROVIDER_PASSWORD})",
            provider=self.name,
        )


def _integrity_error(*params: Any) -> sa.exc.IntegrityError:
    """A real SQLAlchemy error whose text carries the bound parameters."""
    engine = sa.create_engine("sqlite://")
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("a", sa.String, unique=True), sa.Column("b", sa.String)
    )
    table.metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            for _ in range(2):
                conn.execute(table.insert().values(a=params[0], b=params[1]))
    except sa.exc.IntegrityError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


@pytest.fixture(params=["console", "json"])
def logging_to_stderr(request: pytest.FixtureRequest) -> Iterator[str]:
    configure_logging("info", request.param, cache=False)
    yield request.param
    structlog.reset_defaults()
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "pixelgate"]


@pytest.fixture
async def leaky_client(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    from pixelgate.providers import registry

    monkeypatch.setitem(
        registry.BUILTIN_KINDS, "leaky", "tests.integration.test_secrets:LeakyProvider"
    )
    settings = make_settings(providers={"leaky": {"kind": "leaky"}}, routing={"default": ["leaky"]})
    rt = await Runtime.open(settings)
    await rt.start_worker()
    app = create_app(settings, runtime=rt, run_worker=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as c:
            yield c, rt
    finally:
        await rt.close()


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}:\n{text}"


async def test_an_internal_error_leaks_no_request_secret_into_logs_or_the_body(
    leaky_client: tuple[httpx.AsyncClient, Runtime],
    logging_to_stderr: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, runtime = leaky_client
    body = {
        "prompt": f"a cat {PROMPT_SECRET}",
        "metadata": {"api_token": METADATA_SECRET},
        "width": 64,
        "height": 64,
    }

    async def broken_admit(caller: Any, request: Any, **kw: Any) -> Any:
        raise _integrity_error(request.prompt, str(request.metadata))

    monkeypatch.setattr(runtime.pipeline, "admit", broken_admit)
    r = await client.post("/v1/generations", json=body)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    try:  # what uvicorn's error logger prints for an exception escaping the app
        raise _integrity_error(body["prompt"], str(body["metadata"]))
    except sa.exc.IntegrityError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    err = capsys.readouterr().err
    assert "unhandled_error" in err and "Exception in ASGI application" in err
    assert "IntegrityError" in err  # the traceback is there, only its secrets are not
    _assert_clean(err, "the log")
    _assert_clean(r.text, "the error body")


async def test_a_provider_error_with_credentials_is_redacted_everywhere(
    leaky_client: tuple[httpx.AsyncClient, Runtime],
    logging_to_stderr: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, _ = leaky_client
    r = await client.post(
        "/v1/generations",
        json={"prompt": "x", "width": 64, "height": 64},
        headers={"Prefer": "wait=10"},
    )
    assert r.json()["status"] == "FAILED", r.text
    assert r.json()["error"]["message"]
    gen_id = r.json()["id"]
    texts = [r.text, (await client.get(f"/v1/generations/{gen_id}")).text]
    texts.append((await client.get("/v1/generations")).text)
    for path in ("/admin/accounts/admin", "/admin/keys", "/admin/status", "/config"):
        texts.append((await client.get(path)).text)
    await asyncio.sleep(0.2)
    for i, text in enumerate(texts):
        _assert_clean(text, f"response {i}")
    _assert_clean(capsys.readouterr().err, "the log")


def test_redaction_happens_after_formatting() -> None:
    exc = _integrity_error(f"a cat {PROMPT_SECRET}", f'{{"api_token": "{METADATA_SECRET}"}}')
    exc.hide_parameters = False  # as an engine without db/quiet.py's hook would
    text = str(exc)
    assert PROMPT_SECRET in text  # SQLAlchemy prints the parameters…
    cleaned = redact_text(text)
    assert "[parameters: hidden]" in cleaned and "[SQL: INSERT INTO t" in cleaned
    _assert_clean(cleaned, "the redacted text")  # …and they never leave the process
