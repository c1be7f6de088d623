"""Adapters that accept any model name (Replicate's ``owner/name``) pass routing checks."""

from __future__ import annotations

import httpx

from pixelgate.core.models import GenerationRequest
from pixelgate.core.routing import supports
from pixelgate.providers.placeholder import PlaceholderProvider, PlaceholderSettings
from pixelgate.providers.replicate import ReplicateProvider


def test_replicate_accepts_any_owner_model_name() -> None:
    provider = ReplicateProvider(
        "replicate",
        ReplicateProvider.settings_class(kind="replicate", api_key="r8_x"),
        httpx.AsyncClient(),
    )
    request = GenerationRequest(prompt="x", provider="replicate", model="someone/custom-model")
    assert supports(provider, "someone/custom-model", request) is None


def test_an_unknown_model_of_a_fixed_table_is_refused() -> None:
    provider = PlaceholderProvider("p", PlaceholderSettings(), httpx.AsyncClient())
    request = GenerationRequest(prompt="x")
    assert supports(provider, "nope", request) == "unknown model 'nope'"
