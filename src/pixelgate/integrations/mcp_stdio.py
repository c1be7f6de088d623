"""``pixelgate mcp``: the MCP server over stdio, for desktop agents that spawn it.

It runs the pipeline in this process (like ``pixelgate generate``) on the configured
database, as the account of the API key in ``PIXELGATE_API_KEY``. Only JSON-RPC goes to
stdout; logs and the admin-key notice go to stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixelgate.cli_support import ConfigOpt, command_settings, run_command, with_runtime
from pixelgate.errors import AuthenticationFailed

if TYPE_CHECKING:  # the CLI starts without loading the server
    from pixelgate.core.pipeline import Caller
    from pixelgate.runtime import Runtime

__all__ = ["mcp_command", "resolve_key"]


def mcp_command(
    api_key: Annotated[
        str,
        typer.Option(
            envvar="PIXELGATE_API_KEY",
            help="API key whose account the agent spends (default: $PIXELGATE_API_KEY)",
            show_default=False,
        ),
    ],
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="only admit; workers elsewhere run the jobs")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Serve MCP tools over stdio (for desktop agents) as the account of an API key."""
    try:
        from pixelgate.integrations.mcp_tools import build_mcp_server
    except ImportError:
        typer.echo("pixelgate mcp needs the mcp extra: pip install 'pixelgate[mcp]'", err=True)
        raise typer.Exit(2) from None
    settings = command_settings(config=config, worker=False if no_worker else None)

    async def main(runtime: Runtime) -> None:
        await resolve_key(runtime, api_key)  # a bad key stops here, with one line

        async def resolve(_ctx: Any) -> tuple[Runtime, Caller]:
            # looked up per call: a revoked key or disabled account stops at once
            return runtime, await resolve_key(runtime, api_key)

        if settings.worker:
            await runtime.start_worker()
        await build_mcp_server(resolve).run_stdio_async()

    run_command(lambda: with_runtime(settings, main))


async def resolve_key(runtime: Runtime, api_key: str) -> Caller:
    """The caller behind an API key, as the HTTP API resolves it."""
    from pixelgate.core.keys import hash_key
    from pixelgate.core.pipeline import Caller

    key = api_key.strip()
    info = await runtime.services.records.lookup_key(hash_key(key)) if key else None
    if info is None:
        raise AuthenticationFailed("invalid API key (PIXELGATE_API_KEY)")
    return Caller(
        account_id=info.account_id,
        account_name=info.account_name,
        is_admin=info.is_admin,
        key_id=info.key_id,
    )


