"""Issue 14 at the store's own depth: what the API layer already guarantees, the store and
the engine must guarantee for every caller (CLI, Python API, batch)."""

from __future__ import annotations

import pytest

from pixelgate.core.bounds import MAX_CREDITS
from pixelgate.errors import Conflict, ValidationFailed
from pixelgate.runtime import Runtime

LEAK = "sk-LEAKYNAME12345"


async def test_database_errors_never_carry_the_statements_values(runtime: Runtime) -> None:
    # db/quiet.py hides them process-wide (hide_parameters=True on the engines would too)
    await runtime.store.create_account(f"acct-{LEAK}")
    with pytest.raises(Conflict) as info:
        await runtime.store.create_account(f"acct-{LEAK}")  # a UNIQUE violation underneath
    cause = info.value.__context__
    assert cause is not None and "UNIQUE" in str(cause).upper()
    assert LEAK not in str(cause)


async def test_the_store_refuses_a_balance_over_the_maximum(runtime: Runtime) -> None:
    account = await runtime.store.create_account("rich", credits=0)
    await runtime.store.grant_credits(account.id, MAX_CREDITS, reason="max", actor="test")
    with pytest.raises(ValidationFailed) as info:
        await runtime.store.grant_credits(account.id, 1, reason="one more", actor="test")
    assert info.value.code == "balance_out_of_range"


async def test_the_store_refuses_initial_credits_over_the_maximum(runtime: Runtime) -> None:
    with pytest.raises(ValidationFailed):
        await runtime.store.create_account("richer", credits=10**20)


async def test_the_store_keeps_an_enabled_admin_in_the_same_transaction(
    runtime: Runtime,
) -> None:
    """Every caller (API, Python API) is refused the last admin lock-out; only the
    operator's explicit ``keep_an_admin=False`` (the CLI on the box) may do it."""
    admin = await runtime.store.find_account("admin")
    assert admin is not None
    [key] = [k for k in await runtime.store.list_keys() if k["admin"]]
    with pytest.raises(Conflict) as info:
        await runtime.store.update_account(admin.id, disabled=True)
    assert info.value.code == "last_admin"
    with pytest.raises(Conflict):
        await runtime.store.revoke_key(key["id"])
    # a second admin elsewhere makes both allowed
    other = await runtime.store.create_account("second-admin")
    await runtime.store.create_key(other.id, is_admin=True)
    await runtime.store.revoke_key(key["id"])
    disabled = await runtime.store.update_account(other.id, disabled=True, keep_an_admin=False)
    assert disabled.disabled


async def test_every_caller_is_refused_an_unsafe_literal_url_before_anything_is_written(
    runtime: Runtime,
) -> None:
    """Not only the HTTP routes: the Python API (and so the CLI and batch files) meet the
    same rule at admission, writing nothing."""
    from pixelgate.core.models import GenerationRequest
    from pixelgate.errors import UnsafeURL

    caller = await runtime.local_caller()
    before = await runtime.store.list_generations(account_id=caller.account_id, limit=100)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x.png"):
        with pytest.raises(UnsafeURL) as info:
            await runtime.pipeline.admit(
                caller, GenerationRequest(prompt="x", reference_image_url=url)
            )
        assert info.value.code == "unsafe_url"
    after = await runtime.store.list_generations(account_id=caller.account_id, limit=100)
    assert after == before


async def test_an_empty_idempotency_key_is_no_key_for_the_store_either(runtime: Runtime) -> None:
    """Defect 1 at the store's depth: "" neither looks up nor stores a key, so a second
    admission with it is a new generation, not a unique-constraint failure."""
    account = await runtime.store.create_account("blank-key")
    common = {
        "account_id": account.id, "project": "p", "prompt": "x", "request": {},
        "request_hash": "h", "source": "native", "credits": 0, "estimated_usd": None,
        "request_id": None, "account_name": account.name,
    }
    first = await runtime.store.admit(**common, idempotency_key="")
    second = await runtime.store.admit(**common, idempotency_key="")
    assert first.created and second.created
    assert first.generation.id != second.generation.id
