"""``pixelgate bullmq``: consume a BullMQ queue into the pipeline until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Any

import typer

from pixelgate.bridge.bullmq import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LOCK_S,
    DEFAULT_PREFIX,
    DEFAULT_QUEUE,
    BridgeOptions,
    BullMQBridge,
)
from pixelgate.cli_support import ConfigOpt, command_settings, err, run_command, with_runtime
from pixelgate.core.admission import Caller
from pixelgate.errors import ConfigError, NotFound

__all__ = ["bullmq"]


def bullmq(
    queue: Annotated[str, typer.Option(help="BullMQ queue name")] = DEFAULT_QUEUE,
    account: Annotated[
        str | None,
        typer.Option(help="account the jobs are charged to (default: the admin account)"),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis of the queue (default: PIXELGATE_REDIS_URL)")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=10_000, help="jobs processed at once")
    ] = DEFAULT_CONCURRENCY,
    prefix: Annotated[str, typer.Option(help="BullMQ key prefix")] = DEFAULT_PREFIX,
    lock_seconds: Annotated[
        float,
        typer.Option(min=1.0, help="BullMQ job lock; a dead bridge's jobs return after it"),
    ] = DEFAULT_LOCK_S,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="run no in-process worker (scale-out)")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Turn each job of a BullMQ queue into a generation; the result is the job's return value."""
    settings = command_settings(config=config, worker=False if no_worker else None)
    url = redis_url or settings.redis_url
    if not url:
        err.print(
            "[red]config error: --redis-url: required (or set PIXELGATE_REDIS_URL)[/red]",
            highlight=False,
        )
        raise typer.Exit(2)
    options = BridgeOptions(
        redis_url=str(url),
        queue=queue,
        prefix=prefix,
        concurrency=concurrency,
        lock_s=lock_seconds,
    )

    async def main(runtime: Any) -> None:
        caller = await _caller(runtime, account)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if settings.worker:
            await runtime.start_worker()
        bridge = BullMQBridge(runtime, caller, options)
        await bridge.start()
        err.print(
            f"pixelgate bullmq consuming {options.prefix}:{options.queue} "
            f"(concurrency {options.concurrency}, account {caller.account_name}, "
            f"worker {'on' if settings.worker else 'off'})",
            highlight=False,
        )
        await stop.wait()
        err.print("pixelgate bullmq stopping: finishing jobs in hand", highlight=False)
        await bridge.close(settings.shutdown_grace_s)

    run_command(lambda: with_runtime(settings, main))


async def _caller(runtime: Any, account: str | None) -> Caller:
    if account is None:
        caller: Caller = await runtime.local_caller()
        return caller
    found = await runtime.services.records.find_account(account)
    if found is None:
        raise NotFound(
            f"--account: account {account!r} not found (pixelgate accounts create {account})"
        )
    if found.disabled:
        raise ConfigError(f"--account: account {account!r} is disabled")
    return Caller(account_id=found.id, account_name=found.name)
