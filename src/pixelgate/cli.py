"""The ``pixelgate`` command: thin wrappers that parse flags, call the runtime and print."""

# ruff: noqa: E402 - the collector is quietened before the imports below allocate
from __future__ import annotations

from pixelgate.gc_tuning import (
    WORKER_MIDDLE_THRESHOLD,
    end_quiet_start_up,
    quiet_start_up,
    tune_for_server,
)

quiet_start_up()

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pixelgate.bridge.command import bullmq as bullmq_command
from pixelgate.cli_admin import accounts_app, credits_app, keys_app
from pixelgate.cli_support import (
    ConfigOpt,
    command_settings,
    err,
    out,
    run_command,
    warn_if_down,
    with_runtime,
)
from pixelgate.config import Settings
from pixelgate.errors import PixelgateError
from pixelgate.integrations.mcp_stdio import mcp_command

app = typer.Typer(help="pixelgate: one API over every image provider.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")
app.command(name="bullmq")(bullmq_command)
app.command(name="mcp")(mcp_command)


def _print_version(value: bool) -> None:
    if value:
        from pixelgate import __version__

        out.print(f"pixelgate {__version__}", highlight=False)
        raise typer.Exit()


#: commands that tune the collector for serving once they are up
SERVING_COMMANDS = ("serve", "worker")


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="print the version and exit", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """pixelgate: one API over every image provider."""
    if ctx.invoked_subcommand not in SERVING_COMMANDS:
        end_quiet_start_up()


#: pending connections the kernel queues for ``serve``: a burst of a few thousand
#: clients connecting at once is not refused (uvicorn's default is 2048)
LISTEN_BACKLOG = 8192


def _graceful_server_class() -> Any:
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its clean shutdown, which kills the process
        with the signal; a drained pixelgate exits 0 instead. Once up (the app's lifespan
        has opened the runtime), the garbage collector is tuned for serving."""

        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            tune_for_server()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    return GracefulServer


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="jobs run at once by the in-process worker")
    ] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the HTTP API (and, by default, the embedded worker)."""
    settings = command_settings(
        host=host,
        port=port,
        concurrency=concurrency,
        config=config,
        worker=False if no_worker else None,
    )
    sock = _listen_socket(settings.host, settings.port)
    # one event loop and one runtime from the migrations to the shutdown: the checks below
    # run before uvicorn does, so a problem is one clear line rather than a traceback
    if not run_command(lambda: with_runtime(settings, lambda runtime: _serve(runtime, sock))):
        raise typer.Exit(1)


async def _serve(runtime: Any, sock: socket.socket) -> bool:
    """Serve the app on ``sock`` with the runtime ``with_runtime`` opened (migrations, the
    admin key and the database checked, the key announced); False when uvicorn did not
    start. The app's lifespan starts the worker; ``with_runtime`` closes the runtime."""
    import uvicorn

    from pixelgate.api.app import create_app

    settings = runtime.settings
    # storage and Redis may come up later (/health says so), but say now why they are down
    await warn_if_down(runtime)
    await runtime.start_observability()
    uv_config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # no uvicorn logging config: its records go through pixelgate's redacting pipeline
        log_config=None,
        access_log=False,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        backlog=LISTEN_BACKLOG,
        lifespan="on",
    )
    server = _graceful_server_class()(uv_config)
    port = sock.getsockname()[1]
    err.print(
        f"pixelgate listening on http://{settings.host}:{port} "
        f"(database: {'sqlite' if settings.is_sqlite else 'postgresql'}, "
        f"worker: {'on' if settings.worker else 'off'}, data: {settings.data_dir.resolve()})",
        highlight=False,
        soft_wrap=True,
    )
    await server.serve(sockets=[sock])
    return getattr(server, "started", True) is not False


def _listen_socket(host: str, port: int) -> socket.socket:
    """Bind the server's socket before announcing it: a taken port is one line and exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        err.print(
            f"[red]error:[/red] cannot listen on {host}:{port}: {reason} "
            "(choose another with --port or PIXELGATE_PORT)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="jobs run at once")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a worker process only (no HTTP), against the configured database."""
    import signal

    settings = command_settings(concurrency=concurrency, config=config)

    async def main(runtime: Any) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await warn_if_down(runtime)
        await runtime.start_worker()
        await runtime.start_observability()
        tune_for_server(middle=WORKER_MIDDLE_THRESHOLD)
        err.print(
            f"pixelgate worker running (engine {runtime.queue.name}, "
            f"concurrency {runtime.worker.concurrency}); SIGTERM drains within "
            f"{settings.shutdown_grace_s:g} s",
            highlight=False,
        )
        await stop.wait()
        err.print("pixelgate worker stopping: finishing in-flight jobs", highlight=False)

    run_command(lambda: with_runtime(settings, main))


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Apply database migrations."""
    from pixelgate.datadir import prepare_data_dir
    from pixelgate.db.migrate import run_migrations, schema_revision
    from pixelgate.queue.base import prepare_queue

    settings = command_settings(config=config)

    async def main() -> tuple[str | None, str | None, bool]:
        prepare_data_dir(settings)
        url = settings.resolved_database_url
        before = await schema_revision(url)
        await run_migrations(url)
        return before, await schema_revision(url), await prepare_queue(settings)

    before, after, queue_changed = run_command(main)
    engine = settings.resolved_queue
    if before == after and not queue_changed:
        message = f"database is up to date (revision {after}, queue engine: {engine})"
        out.print(message, soft_wrap=True)
        return
    done = [f"schema {before or 'empty'} -> {after}"] if before != after else []
    if queue_changed:
        done.append(f"{engine} queue schema installed")
    out.print(f"database migrated: {'; '.join(done)} (queue engine: {engine})", soft_wrap=True)


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="what to draw")] = None,
    provider: Annotated[str | None, typer.Option(help="provider instance")] = None,
    model: Annotated[str | None, typer.Option(help="model")] = None,
    size: Annotated[str | None, typer.Option(help="WxH, e.g. 1024x768")] = None,
    fmt: Annotated[str, typer.Option("--format", help="png, jpeg or webp")] = "png",
    seed: Annotated[int | None, typer.Option(help="seed")] = None,
    n: Annotated[int, typer.Option("-n", help="number of images")] = 1,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="output file (a directory with --from-file)"),
    ] = None,
    account: Annotated[str | None, typer.Option(help="account to charge")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="a batch: one JSON request or prompt per line (JSONL); flags are defaults",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="with --from-file: jobs of the batch run at once", min=1)
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Generate in-process (no server needed) with a progress display; writes the file(s)."""
    from pixelgate.core.models import GenerationRequest

    if (prompt is None) == (from_file is None):
        err.print("[red]give a PROMPT or --from-file (not both)[/red]")
        raise typer.Exit(2)
    settings = command_settings(config=config)
    data: dict[str, Any] = {"prompt": prompt, "format": fmt, "n": n}
    if provider:
        data["provider"] = provider
    if model:
        data["model"] = model
    if seed is not None:
        data["seed"] = seed
    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            err.print("[red]--size must look like 1024x768[/red]")
            raise typer.Exit(2) from None
        data.update(width=width, height=height)
    if from_file is not None:
        del data["prompt"]
        raise typer.Exit(_generate_file(settings, from_file, data, output, account, concurrency))
    try:
        request = GenerationRequest.model_validate(data)
    except ValueError as exc:
        err.print(f"[red]invalid request:[/red] {exc}")
        raise typer.Exit(2) from None

    async def main(runtime: Any) -> int:
        caller = await runtime.local_caller(account)
        await runtime.start_worker()
        result = await runtime.pipeline.admit(caller, request, source="cli")
        gen_id = result.generation.id
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{gen_id} queued", total=100)
            async with runtime.bus.subscribe(gen_id) as sub:
                while True:
                    view = await runtime.services.records.get_generation(gen_id)
                    bar.update(
                        task,
                        completed=view.progress,
                        description=f"{gen_id} {view.status.value.lower()}"
                        + (f" ({view.provider})" if view.provider else ""),
                    )
                    if view.terminal:
                        break
                    await sub.wait(0.5)
        if view.status.value != "SUCCEEDED":
            err.print(f"[red]{view.status.value}[/red]: {view.error_message}")
            return 1
        for image in view.images:
            obj = await runtime.storage.get(image.key)
            target = output_path(output, gen_id, image.index, image.key, len(view.images))
            target.write_bytes(obj.data)
            out.print(
                f"{target} ({image.width}x{image.height} {image.format}, "
                f"{image.bytes} bytes, {view.provider}/{view.model})",
                highlight=False,
            )
        return 0

    code = run_command(lambda: with_runtime(settings, main))
    raise typer.Exit(code)


def output_path(output: Path | None, gen_id: str, index: int, key: str, count: int) -> Path:
    """Where ``generate`` writes image ``index``: ``-o out`` gains the image's extension
    (``out.png``; ``out-0.png``, ``out-1.png`` for several), ``-o out.png`` keeps its own."""
    ext = "." + key.rsplit(".", 1)[-1]
    if output is None:
        return Path(f"{gen_id}-{index}{ext}")
    suffix = output.suffix or ext
    if count == 1:
        return output if output.suffix else output.with_name(output.name + ext)
    return output.with_name(f"{output.stem}-{index}{suffix}")


def _generate_file(
    settings: Settings,
    path: Path,
    defaults: dict[str, Any],
    output: Path | None,
    account: str | None,
    concurrency: int | None,
) -> int:
    """``generate --from-file``: admit the lines as batches, wait, write every image,
    print a summary; 1 when any generation did not succeed."""
    from pixelgate.core.batchfile import parse_batch_file

    try:
        lines = parse_batch_file(path.read_text(encoding="utf-8"), defaults)
    except PixelgateError as exc:
        err.print(f"[red]{path}: {exc.message}[/red]", highlight=False, soft_wrap=True)
        return 2
    target_dir = output or Path(".")
    target_dir.mkdir(parents=True, exist_ok=True)
    size = settings.max_batch_size

    async def main(runtime: Any) -> tuple[list[Any], str | None]:
        from pixelgate.errors import ValidationFailed

        caller = await runtime.local_caller(account)
        await runtime.start_worker()
        ids: list[str] = []
        refused: str | None = None
        for start in range(0, len(lines), size):
            chunk = lines[start : start + size]
            try:
                batch = await runtime.pipeline.admit_batch(
                    caller, [x.request for x in chunk], concurrency=concurrency, source="cli"
                )
            except ValidationFailed as exc:
                index, _, field = exc.field.removeprefix("requests.").partition(".")
                where = chunk[int(index)].line if index.isdigit() else "?"
                refused = f"line {where}: {field or exc.field}: " + exc.message.split(": ", 1)[-1]
                break
            except PixelgateError as exc:
                refused = exc.message
                break
            ids.extend(batch.generation_ids)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{path.name}", total=len(ids))
            while True:
                views = [await runtime.services.records.get_generation(i) for i in ids]
                done = sum(v.terminal for v in views)
                bar.update(task, completed=done)
                if done == len(ids):
                    break
                await asyncio.sleep(0.2)
        for view in views:
            for image in view.images:
                obj = await runtime.storage.get(image.key)
                ext = image.key.rsplit(".", 1)[-1]
                (target_dir / f"{view.id}-{image.index}.{ext}").write_bytes(obj.data)
        return views, refused

    views, refused = run_command(lambda: with_runtime(settings, main))
    if refused and not views:
        err.print(f"[red]{path}: {refused}[/red]", highlight=False, soft_wrap=True)
        return 2 if refused.startswith("line ") else 1
    table = Table("line", "status", "provider", "result")
    for item, view in zip(lines, views, strict=False):
        if view.status.value == "SUCCEEDED":
            files = ", ".join(
                str(target_dir / f"{view.id}-{i.index}.{i.key.rsplit('.', 1)[-1]}")
                for i in view.images
            )
            result = files + (" (cached)" if view.cached_from else "")
        else:
            result = f"{view.error_code}: {view.error_message}"
        table.add_row(str(item.line), view.status.value, view.provider or "-", result)
    out.print(table)
    counts: dict[str, int] = {}
    for view in views:
        counts[view.status.value] = counts.get(view.status.value, 0) + 1
    not_admitted = len(lines) - len(views)
    summary = ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))
    if not_admitted:
        summary += f", {not_admitted} not admitted ({refused})"
        err.print(f"[red]not admitted:[/red] {refused}", highlight=False, soft_wrap=True)
    out.print(f"{len(lines)} requests: {summary or 'none admitted'}", highlight=False)
    ok = not not_admitted and all(v.status.value == "SUCCEEDED" for v in views)
    return 0 if ok else 1


@app.command()
def providers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """The provider catalog and each provider's health."""
    from pixelgate.api.routes.providers import provider_body, provider_healths

    settings = command_settings(config=config)

    async def main(runtime: Any) -> list[dict[str, Any]]:
        items = list(runtime.providers)
        healths = await provider_healths(runtime, items)
        return [provider_body(p, h) for p, h in zip(items, healths, strict=True)]

    rows = run_command(lambda: with_runtime(settings, main))
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "configured", "health", "models")
    for row in rows:
        table.add_row(
            row["name"],
            row["kind"],
            "yes" if row["configured"] else "no",
            row["health"]["status"],
            ", ".join(m["name"] for m in row["models"]),
        )
    out.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside serve (generate, migrate): no traceback
        sys.exit(130)
