"""Third-party providers come in through the ``pixelgate.providers`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from pixelgate.config import load_settings
from pixelgate.providers.registry import available_kinds, build_providers

PLUGIN = """
from decimal import Decimal
from pixelgate.providers.base import (
    Capabilities, ModelInfo, Provider, ProviderImage, ProviderResult, ProviderSettings,
)
from pixelgate.providers.placeholder import render_placeholder


class EchoSettings(ProviderSettings):
    kind: str = "echo"
    colour: str = "blue"


class EchoProvider(Provider):
    kind = "echo"
    settings_class = EchoSettings
    needs_key = False
    key_env = "ECHO_API_KEY"

    @property
    def models(self):
        return {"echo-1": ModelInfo("echo-1", Capabilities(max_n=1), Decimal("0.01"))}

    async def generate(self, request, ctx):
        data = render_placeholder(request.prompt, width=request.width, height=request.height)
        return ProviderResult(images=[ProviderImage(data=data)], model="echo-1",
                              cost_usd=Decimal("0.01"))
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a tiny distribution (module + dist-info with an entry point) on sys.path."""
    (tmp_path / "pixelgate_echo.py").write_text(PLUGIN)
    dist = tmp_path / "pixelgate_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pixelgate-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [pixelgate.providers]
            echo = pixelgate_echo:EchoProvider
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("pixelgate_echo", None)


def test_a_plugin_kind_is_found_and_configured(installed_plugin: Path) -> None:
    assert available_kinds()["echo"] == "pixelgate_echo:EchoProvider"
    settings = load_settings(
        providers={"mine": {"kind": "echo", "colour": "red"}}, routing={"default": ["mine"]}
    )
    providers = build_providers(settings, httpx.AsyncClient())
    mine = providers.get("mine")
    assert mine.kind == "echo" and mine.configured and providers.default_chain == ["mine"]
    assert mine.settings.colour == "red"  # type: ignore[attr-defined]


def test_a_plugin_takes_its_key_from_its_own_variable(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_API_KEY", "echo-secret-123")
    settings = load_settings(providers={"echo": {"kind": "echo"}}, routing={"default": ["echo"]})
    echo = build_providers(settings, httpx.AsyncClient()).get("echo")
    assert echo.settings.api_key is not None
    assert echo.settings.api_key.get_secret_value() == "echo-secret-123"


def test_a_plugin_cannot_shadow_a_builtin(installed_plugin: Path) -> None:
    (installed_plugin / "pixelgate_echo-1.0.dist-info" / "entry_points.txt").write_text(
        "[pixelgate.providers]\nopenai = pixelgate_echo:EchoProvider\n"
    )
    assert available_kinds()["openai"] == "pixelgate.providers.openai:OpenAIProvider"


async def test_a_plugin_provider_serves_generations(
    installed_plugin: Path, make_settings: object
) -> None:
    import pixelgate

    settings = make_settings(
        providers={"mine": {"kind": "echo"}},  # type: ignore[operator]
        routing={"default": ["mine"]},
    )
    async with pixelgate.Pixelgate(settings) as pg:
        result = await pg.generate("plug-in", width=40, height=30)
    assert result.ok and result.provider == "mine" and result.model == "echo-1"
    assert result.raw is not None and str(result.raw.cost_usd) == "0.010000"


def test_settings_scan_the_installed_packages_once_whatever_the_tables(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixelgate.config

    scans: list[object] = []
    real = pixelgate.config.entry_points

    def counted(**kwargs: object) -> object:
        scans.append(kwargs)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pixelgate.config, "entry_points", counted)
    monkeypatch.setenv("ECHO_API_KEY", "echo-secret-123")
    tables = {name: {"kind": "placeholder"} for name in ("a", "b", "c")}
    settings = load_settings(providers={**tables, "echo": {"kind": "echo"}})
    assert len(scans) == 1
    assert settings.provider_env["ECHO_API_KEY"] == "echo-secret-123"
