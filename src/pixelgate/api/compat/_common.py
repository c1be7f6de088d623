"""Helpers shared by the seed-compatible routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pixelgate.core.pipeline import Caller
from pixelgate.errors import NotFound, ValidationFailed
from pixelgate.runtime import Runtime

__all__ = ["ModelRoute", "drop_none", "resolve_instance", "route_for_model"]


async def resolve_instance(runtime: Runtime, caller: Caller, instance: str | None) -> Caller:
    """The account a seed request names (``instance_id``): the caller's own, or any for admins.

    Without ``instance_id`` an admin key acts for ``default_instance`` (seed 000's
    ``DEFAULT_INSTANCE_ID``) when that is set; any other key acts for its own account.

    Raises:
        NotFound: unknown instance, or another account's for a non-admin key; the message
            says how an instance is created.
    """
    if not instance and caller.is_admin:
        instance = runtime.settings.default_instance
    if not instance or instance == caller.account_name:
        return caller
    account = await runtime.services.records.find_account(instance)
    if account is None or not caller.is_admin:
        raise NotFound(
            f"Instance not found: {instance}. An instance is a pixelgate account: create it "
            f"with `pixelgate accounts create {instance}` (or POST /admin/accounts "
            f'{{"name": "{instance}"}}), then call with its key or an admin key',
            code="instance_not_found",
        )
    return Caller(
        account_id=account.id, account_name=account.name, is_admin=True, key_id=caller.key_id
    )


@dataclass(frozen=True)
class ModelRoute:
    """Where a seed request's bare ``model`` goes."""

    provider: str | None
    model: str | None
    #: set when the named model is not available and the default chain runs instead
    substituted: str | None = None


def route_for_model(runtime: Runtime, model: str | None) -> ModelRoute:
    """``provider/model`` for a bare model name (``ideogram-v2``), a provider instance
    name, or ``instance/model``; configured providers win.

    A model that no configured provider offers is refused (``provider_not_configured`` when an
    unconfigured provider offers it, else ``unknown_model``) unless the configuration says
    ``substitute_unconfigured_models = true``: then the default chain runs and the route's
    ``substituted`` says why.

    Raises:
        ValidationFailed: on the field ``model``.
    """
    if not model:
        return ModelRoute(None, None)
    providers = runtime.providers
    named: tuple[str, str | None] | None = None
    if model in providers:
        named = (model, None)
    elif "/" in model:
        head, _, rest = model.partition("/")
        if head in providers:
            named = (head, rest)
    if named is not None and providers.get(named[0]).configured:
        return ModelRoute(*named)
    if named is None:
        for provider in providers.configured():
            if model in provider.models:
                return ModelRoute(provider.name, model)
    offered = (
        [named[0]] if named is not None else [p.name for p in providers if p.offers(model)]
    )
    if offered:
        code = "provider_not_configured"
        reason = (
            f"model {model!r} needs provider {' or '.join(repr(n) for n in offered)}, "
            "which is not configured (no API key)"
        )
    else:
        code = "unknown_model"
        reason = f"no provider offers model {model!r}"
    if runtime.settings.substitute_unconfigured_models:
        return ModelRoute(None, None, substituted=reason + "; the default chain ran instead")
    raise ValidationFailed(
        "model",
        reason + " (set substitute_unconfigured_models = true to run the default chain instead)",
        code=code,
    )


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
