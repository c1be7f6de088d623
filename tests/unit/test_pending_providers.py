"""A default provider instance with no table and no key is built at its first use, not at
start (``providers/registry.py``): the set looks the same from outside."""

from __future__ import annotations

import httpx
import pytest

from pixelgate.config import load_settings
from pixelgate.providers.registry import (
    DEFAULT_INSTANCES,
    PLACEHOLDER,
    ProviderSet,
    build_providers,
    load_kind,
)


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, key_env in DEFAULT_INSTANCES.items():
        monkeypatch.delenv(key_env, raising=False)
        monkeypatch.delenv(f"PIXELGATE_{name.upper()}_API_KEY", raising=False)


def _providers() -> ProviderSet:
    return build_providers(load_settings(), httpx.AsyncClient())


@pytest.mark.parametrize("kind", sorted(DEFAULT_INSTANCES))
def test_default_key_variables_are_the_adapters_own(kind: str) -> None:
    cls = load_kind(kind)
    assert (cls.kind, cls.key_env, cls.needs_key) == (kind, DEFAULT_INSTANCES[kind], True)


def test_keyless_defaults_are_listed_in_order_but_not_built() -> None:
    providers = _providers()
    assert providers.names() == [*DEFAULT_INSTANCES, PLACEHOLDER]
    assert "gemini" in providers
    assert [p.name for p in providers.configured()] == [PLACEHOLDER]
    pending = [n for n in providers.names() if n not in providers._built()]
    assert pending == list(DEFAULT_INSTANCES)


def test_a_keyless_default_works_at_its_first_use() -> None:
    providers = _providers()
    gemini = providers.get("gemini")
    assert gemini.kind == "gemini" and not gemini.configured and gemini.models
    assert providers.get("gemini") is gemini  # built once
    assert "gemini" in providers._built()
    assert [p.name for p in providers] == providers.names()


def test_a_default_with_a_key_in_the_environment_is_built_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test")
    monkeypatch.setenv("PIXELGATE_FAL_API_KEY", "fal-test")
    providers = _providers()
    assert {"gemini", "fal"} <= set(providers._built())
    assert [p.name for p in providers.configured()] == ["gemini", "fal", PLACEHOLDER]
    assert providers.default_chain == ["gemini", "fal"]


def test_a_default_with_a_table_is_built_at_start() -> None:
    providers = build_providers(
        load_settings(providers={"xai": {"kind": "xai", "api_key": "xai-test"}}),
        httpx.AsyncClient(),
    )
    assert "xai" in providers._built() and providers.get("xai").configured


def test_the_owner_of_a_model_is_found_without_building_keyless_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    providers = _providers()
    owner = providers.owner("gpt-image-1")
    assert owner is not None and owner.name == "openai" and owner.configured
    assert providers._built() == ["openai", PLACEHOLDER]


def test_the_owner_of_a_model_only_a_keyless_default_offers_is_that_default() -> None:
    providers = _providers()
    owner = providers.owner("gpt-image-1")
    assert owner is not None and owner.name == "openai" and not owner.configured
    assert providers.owner("no-such-model") is None


def test_the_openai_route_resolves_a_model_without_building_keyless_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pixelgate.api.compat.openai import resolve_model

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    providers = _providers()
    assert resolve_model("gpt-image-1", {}, providers) == ("openai", "gpt-image-1")
    assert providers._built() == ["openai", PLACEHOLDER]
