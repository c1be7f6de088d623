"""``pixelgate accounts``, ``keys`` and ``credits``: the operator's commands on the box."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from pixelgate.cli_support import (
    ConfigOpt,
    command_settings,
    err,
    out,
    rows_of,
    run_command,
    with_runtime,
)
from pixelgate.core.bounds import MAX_CREDITS

__all__ = ["accounts_app", "credits_app", "keys_app"]

accounts_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Grant or revoke credits.", no_args_is_help=True)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument()],
    tier: Annotated[str, typer.Option(help="FREE, PRO, ENTERPRISE")] = "FREE",
    credits: Annotated[
        int | None,
        typer.Option(min=0, max=MAX_CREDITS, help="initial credits (unmetered if unset)"),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="address mailed when a generation finally fails")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="default webhook URL of the account's generations")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an account."""
    settings = command_settings(config=config)
    if tier.upper() not in settings.tiers:
        err.print(f"[red]--tier: unknown tier {tier!r}[/red]")
        raise typer.Exit(2)
    if email is not None and not _EMAIL.match(email):
        err.print(f"[red]--email: not an e-mail address: {email!r}[/red]")
        raise typer.Exit(2)
    if webhook_url is not None:
        from pixelgate.errors import UnsafeURL
        from pixelgate.media.fetch import parse_url

        try:
            parse_url(webhook_url, what="--webhook-url")
        except UnsafeURL as exc:
            err.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(2) from None

    async def main(runtime: Any) -> Any:
        if webhook_url:
            from pixelgate.core.webhooks import check_webhook_url
            from pixelgate.errors import ValidationFailed

            try:  # the same rule as PUT /v1/webhooks, before anything is written
                await check_webhook_url(
                    runtime.pipeline.fetcher,
                    webhook_url,
                    allow_hosts=settings.webhook_allow_hosts,
                    field="--webhook-url",
                )
            except ValidationFailed as exc:
                err.print(f"[red]{exc.message}[/red]", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
        account = await runtime.services.records.create_account(
            name,
            tier=tier,
            credits=credits,
            actor="cli",
            credit_policy=settings.credits.default_policy,
            email=email,
        )
        if webhook_url:
            records = runtime.services.records
            account = await records.update_account(account.id, webhook_url=webhook_url)
        return account

    account = run_command(lambda: with_runtime(settings, main))
    out.print(
        f"{account.id} {account.name} {account.tier} credits={account.credits}", highlight=False
    )


@accounts_app.command("list")
def accounts_list(config: ConfigOpt = None) -> None:
    """List accounts."""
    settings = command_settings(config=config)

    async def main(runtime: Any) -> Any:
        return await runtime.services.records.list_accounts()

    table = rows_of("id", "name", "tier", "credits", "created", "state")
    for acct in run_command(lambda: with_runtime(settings, main)):
        table.add_row(
            acct.id,
            acct.name,
            acct.tier,
            "unmetered" if acct.credits is None else str(acct.credits),
            acct.created_at.strftime("%Y-%m-%d %H:%M"),
            "disabled" if acct.disabled else "enabled",
        )
    table.print()


def _set_disabled(name: str, disabled: bool, config: Path | None) -> None:
    from pixelgate.errors import NotFound

    settings = command_settings(config=config)

    async def main(runtime: Any) -> Any:
        acct = await runtime.services.records.find_account(name)
        if acct is None:
            raise NotFound(f"account {name!r} not found")
        # the operator on the box may disable even the last admin account
        records = runtime.services.records
        return await records.update_account(acct.id, disabled=disabled, keep_an_admin=False)

    acct = run_command(lambda: with_runtime(settings, main))
    state = "disabled" if acct.disabled else "enabled"
    out.print(f"{acct.name} {state} (running servers notice within seconds)", highlight=False)


@accounts_app.command("enable")
def accounts_enable(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Enable an account again: its keys work again (the way back from a lock-out)."""
    _set_disabled(name, False, config)


@accounts_app.command("disable")
def accounts_disable(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Disable an account: its keys answer 401 until it is enabled again."""
    _set_disabled(name, True, config)


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option(help="account name")],
    admin: Annotated[bool, typer.Option("--admin", help="admin key")] = False,
    name: Annotated[str | None, typer.Option(help="label")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API key (printed once; only its hash is stored)."""
    from pixelgate.errors import NotFound

    settings = command_settings(config=config)

    async def main(runtime: Any) -> tuple[str, str]:
        acct = await runtime.services.records.find_account(account)
        if acct is None:
            raise NotFound(f"account {account!r} not found")
        records = runtime.services.records
        result: tuple[str, str] = await records.create_key(acct.id, is_admin=admin, name=name)
        return result

    key_id, plain = run_command(lambda: with_runtime(settings, main))
    err.print(f"key {key_id} for {account} (shown once):", highlight=False)
    out.print(plain, highlight=False)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """List API keys (prefixes only)."""
    settings = command_settings(config=config)

    async def main(runtime: Any) -> Any:
        return await runtime.services.records.list_keys()

    table = rows_of("id", "account", "prefix", "admin", "created", "revoked")
    for key in run_command(lambda: with_runtime(settings, main)):
        table.add_row(
            key["id"],
            key["account"],
            key["prefix"] + "…",
            str(key["admin"]),
            key["created_at"].strftime("%Y-%m-%d %H:%M"),
            key["revoked_at"].strftime("%Y-%m-%d %H:%M") if key["revoked_at"] else "",
        )
    table.print()


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Revoke an API key."""
    settings = command_settings(config=config)

    async def main(runtime: Any) -> Any:
        return await runtime.services.records.revoke_key(key_id)

    run_command(lambda: with_runtime(settings, main))
    out.print(f"revoked {key_id}")


def _change_credits(name: str, amount: int, reason: str, config: Path | None) -> None:
    from pixelgate.errors import NotFound

    settings = command_settings(config=config)

    async def main(runtime: Any) -> int:
        acct = await runtime.services.records.find_account(name)
        if acct is None:
            raise NotFound(f"account {name!r} not found")
        balance: int = await runtime.services.records.grant_credits(
            acct.id, amount, reason=reason, actor="cli"
        )
        return balance

    balance = run_command(lambda: with_runtime(settings, main))
    out.print(f"{name}: {balance} credits", highlight=False)


@credits_app.command("grant")
def credits_grant(
    name: Annotated[str, typer.Argument(help="account")],
    amount: Annotated[int, typer.Argument(min=1, max=MAX_CREDITS)],
    reason: Annotated[str, typer.Option(help="why (kept in the ledger)")] = "granted by cli",
    config: ConfigOpt = None,
) -> None:
    """Add credits to an account (a ledger entry with the reason)."""
    _change_credits(name, amount, reason, config)


@credits_app.command("revoke")
def credits_revoke(
    name: Annotated[str, typer.Argument(help="account")],
    amount: Annotated[int, typer.Argument(min=1, max=MAX_CREDITS)],
    reason: Annotated[str, typer.Option(help="why (kept in the ledger)")] = "revoked by cli",
    config: ConfigOpt = None,
) -> None:
    """Take credits from an account (never below zero)."""
    _change_credits(name, -amount, reason, config)


@accounts_app.command("set")
def accounts_set(
    name: Annotated[str, typer.Argument()],
    tier: Annotated[str | None, typer.Option(help="FREE, PRO, ENTERPRISE or a custom tier")] = None,
    budget: Annotated[
        str | None, typer.Option(help="daily USD budget, or 'none' to remove it")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="refund or keep on final failure")] = None,
    prefer: Annotated[str | None, typer.Option(help="comma-separated preferred providers")] = None,
    config: ConfigOpt = None,
) -> None:
    """Change an account's tier, daily budget, credit policy or preferred providers."""
    from decimal import Decimal, InvalidOperation

    from pixelgate.errors import NotFound

    settings = command_settings(config=config)
    fields: dict[str, Any] = {}
    if tier:
        if tier.upper() not in settings.tiers:
            err.print(f"[red]--tier: unknown tier {tier!r}[/red]")
            raise typer.Exit(2)
        fields["tier"] = tier
    if budget is not None:
        try:
            fields["daily_budget_usd"] = None if budget == "none" else Decimal(budget)
        except InvalidOperation:
            err.print("[red]--budget must be a number of dollars or 'none'[/red]")
            raise typer.Exit(2) from None
    if policy:
        if policy not in ("refund", "keep"):
            err.print("[red]--policy must be refund or keep[/red]")
            raise typer.Exit(2)
        fields["credit_policy"] = policy
    if prefer is not None:
        fields["preferred_providers"] = [p.strip() for p in prefer.split(",") if p.strip()]

    async def main(runtime: Any) -> Any:
        acct = await runtime.services.records.find_account(name)
        if acct is None:
            raise NotFound(f"account {name!r} not found")
        return await runtime.services.records.update_account(acct.id, **fields)

    acct = run_command(lambda: with_runtime(settings, main))
    out.print(
        f"{acct.name} tier={acct.tier} budget={acct.daily_budget_usd} "
        f"policy={acct.credit_policy} prefer={','.join(acct.preferred_providers) or '-'}",
        highlight=False,
    )
