"""Helpers shared by the seed-compatible routes."""

from __future__ import annotations

from typing import Any

from pixelgate.core.pipeline import Caller
from pixelgate.errors import NotFound
from pixelgate.providers.registry import ProviderSet
from pixelgate.runtime import Runtime

__all__ = ["provider_for_model", "resolve_instance"]


async def resolve_instance(runtime: Runtime, caller: Caller, instance: str | None) -> Caller:
    """The account a seed request names (``instance_id``): the caller's own, or any for admins.

    Raises:
        NotFound: unknown instance, or another account's for a non-admin key.
    """
    if not instance or instance == caller.account_name:
        return caller
    account = await runtime.store.find_account(instance)
    if account is None or not caller.is_admin:
        raise NotFound(f"Instance not found: {instance}", code="instance_not_found")
    return Caller(
        account_id=account.id, account_name=account.name, is_admin=True, key_id=caller.key_id
    )


def provider_for_model(providers: ProviderSet, model: str | None) -> tuple[str | None, str | None]:
    """``(provider, model)`` for a bare model name; configured providers win.

    A model that only an unconfigured provider offers yields ``(None, None)``: the seed
    routes then use the fallback chain, as the seed services used their default provider.
    """
    if not model:
        return None, None
    if model in providers:
        return model, None
    if "/" in model:
        head, _, rest = model.partition("/")
        if head in providers and providers.get(head).configured:
            return head, rest
    for provider in providers.configured():
        if model in provider.models:
            return provider.name, model
    return None, None


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
