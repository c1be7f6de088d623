"""``Provider.offers`` is the cheap form of ``model in provider.models`` used on every
request (model resolution): for every built-in kind it must agree with ``models``."""

from __future__ import annotations

import httpx
import pytest

from pixelgate.providers.base import ProviderSettings
from pixelgate.providers.registry import BUILTIN_KINDS, load_kind

SETTINGS = {
    "openai_compatible": {"base_url": "http://127.0.0.1:9/v1", "models": ["m-one", "m-two"]},
    "azure_openai": {
        "base_url": "http://127.0.0.1:9",
        "deployments": {"gpt-image-1": "my-deployment"},
    },
    "comfyui": {"base_url": "http://127.0.0.1:9"},
}


@pytest.mark.parametrize("kind", sorted(BUILTIN_KINDS))
def test_offers_agrees_with_models(kind: str) -> None:
    cls = load_kind(kind)
    settings_class: type[ProviderSettings] = cls.settings_class
    settings = settings_class.model_validate({"kind": kind, **SETTINGS.get(kind, {})})
    provider = cls(kind, settings, httpx.AsyncClient())
    models = provider.models
    assert models, kind
    for name in [*models, "no-such-model-at-all", provider.default_model]:
        assert provider.offers(name) == (name in models), (kind, name)
