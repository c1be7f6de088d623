"""Every API call the clients make, built once for both the sync and the async client."""

from __future__ import annotations

from typing import Any

import httpx

from pixelgate.client._base import Call, list_of, model_of
from pixelgate.client._models import (
    Account,
    AccountSummary,
    ApiKey,
    Batch,
    Estimate,
    Generation,
    GenerationPage,
    ProviderInfo,
)

__all__ = ["Calls"]


def _id(value: Any) -> str:
    return value if isinstance(value, str) else str(value.id)


def _nothing(_response: httpx.Response) -> None:
    return None


class Calls:
    """Factories of :class:`Call` per route (no I/O)."""

    @staticmethod
    def create_generation(
        body: dict[str, Any], *, idempotency_key: str, wait: float | None = None
    ) -> Call[Generation]:
        headers = {"Idempotency-Key": idempotency_key}
        timeout = None
        if wait:
            headers["Prefer"] = f"wait={wait:g}"
            timeout = wait + 30.0
        return Call(
            "POST", "/v1/generations", model_of(Generation), json=body, headers=headers,
            timeout=timeout,
        )

    @staticmethod
    def get_generation(generation: Any) -> Call[Generation]:
        return Call("GET", f"/v1/generations/{_id(generation)}", model_of(Generation))

    @staticmethod
    def list_generations(
        status: str | None, limit: int, cursor: str | None, batch_id: str | None
    ) -> Call[GenerationPage]:
        params = {"status": status, "limit": limit, "cursor": cursor, "batch_id": batch_id}
        return Call("GET", "/v1/generations", model_of(GenerationPage), params=params)

    @staticmethod
    def cancel_generation(generation: Any) -> Call[Generation]:
        return Call("DELETE", f"/v1/generations/{_id(generation)}", model_of(Generation))

    @staticmethod
    def providers() -> Call[list[ProviderInfo]]:
        return Call("GET", "/v1/providers", list_of(ProviderInfo))

    @staticmethod
    def estimate(body: dict[str, Any]) -> Call[Estimate]:
        return Call("POST", "/v1/estimate", model_of(Estimate), json=body)

    @staticmethod
    def account() -> Call[Account]:
        return Call("GET", "/v1/account", model_of(Account))

    @staticmethod
    def usage(days: int) -> Call[dict[str, Any]]:
        return Call("GET", "/v1/usage", lambda r: dict(r.json()), params={"days": days})

    # batches

    @staticmethod
    def create_batch(
        requests: list[dict[str, Any]],
        *,
        concurrency: int | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str,
    ) -> Call[Batch]:
        body: dict[str, Any] = {"requests": requests}
        if concurrency is not None:
            body["concurrency"] = concurrency
        if metadata:
            body["metadata"] = metadata
        return Call(
            "POST", "/v1/batches", model_of(Batch), json=body,
            headers={"Idempotency-Key": idempotency_key},
        )

    @staticmethod
    def get_batch(batch: Any) -> Call[Batch]:
        return Call("GET", f"/v1/batches/{_id(batch)}", model_of(Batch))

    @staticmethod
    def list_batches(limit: int, cursor: str | None) -> Call[list[Batch]]:
        params = {"limit": limit, "cursor": cursor}
        return Call("GET", "/v1/batches", list_of(Batch), params=params)

    @staticmethod
    def cancel_batch(batch: Any) -> Call[Batch]:
        return Call("DELETE", f"/v1/batches/{_id(batch)}", model_of(Batch))

    # admin

    @staticmethod
    def create_account(
        name: str, tier: str, credits: int | None, extra: dict[str, Any]
    ) -> Call[Account]:
        body = {"name": name, "tier": tier, **extra}
        if credits is not None:
            body["credits"] = credits
        return Call("POST", "/admin/accounts", model_of(Account), json=body)

    @staticmethod
    def list_accounts() -> Call[list[AccountSummary]]:
        return Call("GET", "/admin/accounts", list_of(AccountSummary))

    @staticmethod
    def get_account(name: str) -> Call[Account]:
        return Call("GET", f"/admin/accounts/{name}", model_of(Account))

    @staticmethod
    def update_account(name: str, fields: dict[str, Any]) -> Call[Account]:
        return Call("PATCH", f"/admin/accounts/{name}", model_of(Account), json=fields)

    @staticmethod
    def grant_credits(name: str, credits: int, reason: str) -> Call[int]:
        return Call(
            "POST", f"/admin/accounts/{name}/credits", lambda r: int(r.json()["credits"]),
            json={"credits": credits, "reason": reason},
        )

    @staticmethod
    def create_key(account: str, admin: bool, name: str | None) -> Call[ApiKey]:
        body: dict[str, Any] = {"admin": admin}
        if name is not None:
            body["name"] = name
        return Call("POST", f"/admin/accounts/{account}/keys", model_of(ApiKey), json=body)

    @staticmethod
    def list_keys() -> Call[list[dict[str, Any]]]:
        return Call("GET", "/admin/keys", lambda r: list(r.json()["data"]))

    @staticmethod
    def revoke_key(key_id: str) -> Call[None]:
        return Call("DELETE", f"/admin/keys/{key_id}", _nothing)
