"""What every ``pixelgate`` command shares: consoles, settings, running with a runtime,
and tables that scripts can read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pixelgate.config import Settings, load_settings
from pixelgate.datadir import data_dir_notice
from pixelgate.errors import PixelgateError
from pixelgate.logs import configure_logging

__all__ = [
    "ConfigOpt",
    "Rows",
    "announce_admin",
    "command_settings",
    "err",
    "out",
    "rows_of",
    "run_command",
    "warn_if_down",
    "with_runtime",
]

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]


class Rows:
    """A Rich table on a terminal; tab-separated lines when piped (scripts read those).

    The first column (an id) is never cut, so it can be copied into other commands.
    """

    def __init__(self, *columns: str) -> None:
        self.columns = columns
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def print(self) -> None:
        if not out.is_terminal:
            for row in self.rows:
                out.print("\t".join(row), highlight=False, soft_wrap=True)
            return
        table = Table()
        for i, column in enumerate(self.columns):
            table.add_column(column, no_wrap=i == 0, min_width=len(column))
        for row in self.rows:
            table.add_row(*row)
        out.print(table)


def rows_of(*columns: str) -> Rows:
    """Rows to print with the given column names."""
    return Rows(*columns)


def command_settings(**overrides: Any) -> Settings:
    """The settings of a command; a bad value exits 2 with one line naming it."""
    from pixelgate.providers.registry import validate_provider_tables

    try:
        settings = load_settings(**overrides)
        validate_provider_tables(settings)
    except PixelgateError as exc:
        err.print(f"[red]{exc.message}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (``uvicorn[standard]`` brings it on Linux and
    macOS), as ``serve`` uses: the worker's loop carries thousands of jobs' I/O, and
    uvloop's select, socket writes and callbacks cost a fraction of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_command(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; a pixelgate error exits 1 with its message."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(coro_fn())  # type: ignore[arg-type]
    except PixelgateError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


async def with_runtime(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``fn(runtime)`` with a runtime opened (and closed) around it."""
    from pixelgate.runtime import Runtime

    runtime = await Runtime.open(settings)
    if runtime.data_dir_created:
        err.print(data_dir_notice(settings), highlight=False, soft_wrap=True)
    # whichever command starts first on a new data directory creates the admin key
    announce_admin(runtime)
    try:
        return await fn(runtime)
    finally:
        await runtime.close()


async def warn_if_down(runtime: Any) -> None:
    """At start-up, one line for each dependency that is down, saying why."""
    from pixelgate.probes import check_all

    for name, check in (await check_all(runtime)).items():
        if check["status"] != "ok":
            err.print(
                f"[yellow]warning:[/yellow] {name} down: {check['reason']}",
                highlight=False,
                soft_wrap=True,
            )


def announce_admin(runtime: Any) -> None:
    """Print an admin key generated on this start, once."""
    if runtime.admin.generated_key:
        err.print(
            "[bold yellow]Generated admin API key (shown once; also saved to "
            f"{runtime.admin.key_file} with mode 0600):[/bold yellow]\n"
            f"  {runtime.admin.generated_key}",
            highlight=False,
            soft_wrap=True,
        )
