"""The scale-out queue engine: procrastinate on PostgreSQL, carrying generation ids.

Dispatch is transactional and batched: the admissions of one group commit
(:mod:`pixelgate.db.writer`) get ONE procrastinate job carrying all their generation ids
(``procrastinate_defer_jobs_v1``, called by :meth:`ProcrastinateQueue.defer_in` at the end
of that transaction: nothing is charged without a job, no job exists for a rolled-back
admission), so a burst of admissions costs a few jobs, not one each. A trigger on
``generations`` defers a job whenever the reaper or a draining worker returns a row to
``PENDING``. API processes never talk to the engine otherwise.

Execution: ``pixelgate worker`` runs procrastinate workers whose one task claims the rows
it carries in one compare-and-set statement (as many as the worker has room for) and runs
them under the same lease, renewal, cancellation and drain
machinery as the embedded worker (:class:`EngineWorker` extends
:class:`~pixelgate.queue.worker.Worker`). A delivery whose row is not ``PENDING`` is a
no-op, so duplicates are harmless; the row, not the procrastinate job, says when a
generation is done.

Crash recovery, in order of speed:
1. the lease of a SIGKILLed worker expires, any worker's reaper returns the row to
   ``PENDING`` and the trigger enqueues it again;
2. procrastinate jobs left ``doing`` by a dead worker (no heartbeat) are retried by the
   maintenance loop (procrastinate's documented stalled-job recipe) — a no-op claim;
3. ``PENDING`` rows without any live job (should never happen; belt and braces) are
   re-enqueued by the same loop.

Cancellation of a running job goes through the row (``cancel_requested``, seen at the
next lease renewal) and the bus (at once), as in the embedded deployment; procrastinate's
abort is not needed.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, text

from pixelgate.errors import ConfigError
from pixelgate.queue.worker import Worker

if TYPE_CHECKING:
    import procrastinate

    from pixelgate.core.bus import EventBus
    from pixelgate.core.pipeline import Pipeline
    from pixelgate.db.store import Store

__all__ = [
    "QUEUE_NAME",
    "TASK_NAME",
    "EngineWorker",
    "ProcrastinateQueue",
    "install_schema",
    "psycopg_conninfo",
]

log = structlog.get_logger("pixelgate.queue")

TASK_NAME = "pixelgate.run_generation"
QUEUE_NAME = "generations"
#: bump when the trigger/index below change, so start-up re-applies them
GLUE_VERSION = "2"
#: generation ids per procrastinate job: a big group commit becomes a few jobs, so
#: several workers share it. Each job costs its worker a fetch and a finish through
#: procrastinate (psycopg): at 16 ids that was ~9 % of the scale-out worker's CPU
DISPATCH_CHUNK = 64
#: any 64-bit number shared by every pixelgate process: serialises schema set-up
SCHEMA_LOCK_KEY = 0x70697865_6C676174
SWEEP_LOCK_KEY = SCHEMA_LOCK_KEY + 1
#: procrastinate fetches one job per query; several fetch loops per process keep up
FETCHERS = 2
POOL_MAX = 6
HEARTBEAT_S = 5.0
STALLED_S = 30.0
MAINTENANCE_S = 10.0
ORPHAN_AGE_S = 30.0
ORPHAN_BATCH = 1000
RESTART_DELAY_S = 1.0

GLUE_SQL = f"""
CREATE TABLE IF NOT EXISTS pixelgate_queue_schema (
    component text PRIMARY KEY,
    version text NOT NULL
);

CREATE OR REPLACE FUNCTION pixelgate_enqueue_generation() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
        '{QUEUE_NAME}', '{TASK_NAME}', 0, NULL, NULL,
        jsonb_build_object('generation_id', NEW.id), NULL
    )::procrastinate_job_to_defer_v1]);
    RETURN NULL;
END
$$;

-- admissions are dispatched in batches by the writer (ProcrastinateQueue.defer_in)
DROP TRIGGER IF EXISTS pixelgate_enqueue_on_insert ON generations;

DROP TRIGGER IF EXISTS pixelgate_enqueue_on_requeue ON generations;
CREATE TRIGGER pixelgate_enqueue_on_requeue
    AFTER UPDATE OF status ON generations
    FOR EACH ROW WHEN (NEW.status = 'PENDING' AND OLD.status IS DISTINCT FROM 'PENDING')
    EXECUTE FUNCTION pixelgate_enqueue_generation();

CREATE INDEX IF NOT EXISTS pixelgate_procrastinate_generation_idx
    ON procrastinate_jobs ((args->>'generation_id'))
    WHERE status IN ('todo', 'doing');
CREATE INDEX IF NOT EXISTS pixelgate_procrastinate_generations_idx
    ON procrastinate_jobs USING gin ((args->'generation_ids'))
    WHERE status IN ('todo', 'doing');
"""
#: a group commit's admissions as procrastinate jobs, one per chunk of
#: ``generation_ids``, in one statement (``:chunks``: a JSON array of the jobs' args)
DEFER_SQL = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY("
    f"SELECT ROW('{QUEUE_NAME}', '{TASK_NAME}', 0, NULL, NULL, a.args, NULL)"
    "::procrastinate_job_to_defer_v1 "
    "FROM jsonb_array_elements(CAST(:chunks AS jsonb)) WITH ORDINALITY AS a(args, n) "
    "ORDER BY a.n))"
)

BACKLOG_SQL = text(
    "SELECT status::text, count(*) FROM procrastinate_jobs "
    "WHERE queue_name = :queue AND status IN ('todo', 'doing') GROUP BY status"
)
ORPHANS_SQL = f"""
SELECT g.id FROM generations AS g
 WHERE g.status = 'PENDING'
   AND g.updated_at < now() - make_interval(secs => %(age)s)
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_jobs AS j
        WHERE j.status IN ('todo', 'doing')
          AND (j.args->>'generation_id' = g.id OR j.args->'generation_ids' ? g.id))
 ORDER BY g.id LIMIT {ORPHAN_BATCH}
"""
_MIGRATION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)_\d+_.*\.sql$")


def psycopg_conninfo(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy ``postgresql+asyncpg://`` URL (procrastinate's driver)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError("config error: queue: procrastinate needs a PostgreSQL database_url")
    query = dict(url.query)
    if "ssl" in query and "sslmode" not in query:
        query["sslmode"] = query.pop("ssl")
    url = url.set(drivername="postgresql", query=query)
    return url.render_as_string(hide_password=False)


def _version_tuple(value: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", value)[:3])


class ProcrastinateQueue:
    """procrastinate on the same PostgreSQL database as the generations table."""

    name = "procrastinate"

    def __init__(self, database_url: str, *, store: Store) -> None:
        try:
            import procrastinate  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "config error: queue: procrastinate is not installed "
                "(pip install 'pixelgate[postgres]', or set PIXELGATE_QUEUE=embedded)"
            ) from exc
        self.conninfo = psycopg_conninfo(database_url)
        self.store = store
        self._app: procrastinate.App | None = None
        # admissions hand their ids over at the end of each group commit
        store.db.dispatcher = self.defer_in

    @staticmethod
    def defer_in(c: Connection, generation_ids: list[str]) -> None:
        """Defer jobs for ``generation_ids`` inside the caller's transaction: one job
        per :data:`DISPATCH_CHUNK` of them, all in one statement."""
        chunks = [
            {"generation_ids": generation_ids[start : start + DISPATCH_CHUNK]}
            for start in range(0, len(generation_ids), DISPATCH_CHUNK)
        ]
        if chunks:
            c.execute(DEFER_SQL, {"chunks": json.dumps(chunks)})

    # Schema ------------------------------------------------------------------

    async def prepare(self) -> None:
        """Install or upgrade the engine schema (see :func:`install_schema`)."""
        await install_schema(self.conninfo)

    # Workers -----------------------------------------------------------------

    @property
    def app(self) -> procrastinate.App:
        """The procrastinate app (opened by the first worker of this process)."""
        if self._app is None:
            import procrastinate

            connector = procrastinate.PsycopgConnector(
                conninfo=self.conninfo, min_size=1, max_size=POOL_MAX
            )
            self._app = procrastinate.App(connector=connector)
        return self._app

    def make_worker(
        self,
        *,
        store: Store,
        pipeline: Pipeline,
        bus: EventBus,
        concurrency: int,
        lease_s: float,
        poll_s: float,
        max_deliveries: int,
    ) -> Worker:
        return EngineWorker(
            queue=self,
            store=store,
            pipeline=pipeline,
            bus=bus,
            concurrency=concurrency,
            lease_s=lease_s,
            poll_s=poll_s,
            max_deliveries=max_deliveries,
        )

    async def defer(self, *generation_ids: str) -> None:
        """Enqueue a delivery by hand (admissions and requeues have theirs already)."""
        if generation_ids:
            await self.app.configure_task(TASK_NAME, queue=QUEUE_NAME).defer_async(
                generation_ids=list(generation_ids)
            )

    # Health --------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        rows = await self.store.db.run(
            lambda c: c.execute(BACKLOG_SQL, {"queue": QUEUE_NAME}).all()
        )
        counts = {status: int(n) for status, n in rows}
        return {
            "status": "ok",
            "engine": self.name,
            "queued": counts.get("todo", 0),
            "running": counts.get("doing", 0),
            **await self.store.queue_depth(),
        }

    async def close(self) -> None:
        if self._app is not None:
            with suppress(Exception):
                await self._app.close_async()
            self._app = None


async def install_schema(conninfo: str) -> bool:
    """Install or upgrade procrastinate's schema and our trigger, once per version.

    Runs at ``pixelgate migrate`` and at every start-up, under an advisory lock so
    that processes starting together do not race; a no-op when up to date.

    Returns:
        Whether anything was installed or upgraded.
    """
    import psycopg
    from procrastinate.schema import SchemaManager

    current = version("procrastinate")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            installed = await _installed_versions(conn)
            if installed.get("glue") == GLUE_VERSION and installed.get("procrastinate") == current:
                return False
            cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            row = await cur.fetchone()
            has_schema = bool(row and row[0])
            async with conn.transaction():
                if not has_schema:
                    await conn.execute(SchemaManager.get_schema())
                    log.info("queue_schema_installed", procrastinate=current)
                elif installed.get("procrastinate") not in (None, current):
                    await _apply_migrations(conn, installed["procrastinate"], current)
                await conn.execute(GLUE_SQL)
                for component, value in (("procrastinate", current), ("glue", GLUE_VERSION)):
                    await conn.execute(
                        "INSERT INTO pixelgate_queue_schema (component, version) "
                        "VALUES (%s, %s) ON CONFLICT (component) "
                        "DO UPDATE SET version = EXCLUDED.version",
                        (component, value),
                    )
            return True
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


class EngineWorker(Worker):
    """The embedded worker's lease machinery, fed by procrastinate instead of polling."""

    def __init__(self, *, queue: ProcrastinateQueue, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue = queue
        self._engine_workers: list[Any] = []
        self._supervisors: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        app = self.queue.app
        await app.open_async()
        if TASK_NAME not in app.tasks:
            app.task(name=TASK_NAME, queue=QUEUE_NAME, pass_context=False)(self.deliver)
        await self._recover_dead_local_owners()
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="pixelgate-lease"),
            asyncio.create_task(self._maintenance_loop(), name="pixelgate-queue-maintenance"),
        ]
        fetchers = max(1, min(FETCHERS, self.concurrency))
        share, extra = divmod(self.concurrency, fetchers)
        self._supervisors = [
            asyncio.create_task(self._supervise(i, share + (1 if i < extra else 0)))
            for i in range(fetchers)
        ]
        log.info(
            "worker_started",
            owner=self.owner,
            engine=self.queue.name,
            concurrency=self.concurrency,
            fetchers=fetchers,
        )

    async def deliver(
        self, generation_id: str | None = None, generation_ids: list[str] | None = None
    ) -> str:
        """The procrastinate task: claim the rows it carries (by CAS, in one statement,
        as many as there is room for), run them, return when they end here."""
        waiting = list(generation_ids or ([generation_id] if generation_id else []))
        if self._stopping.is_set():
            # Handed a job while draining: give it back rather than drop it.
            await self.queue.defer(*waiting)
            return "handed back"
        running: list[asyncio.Task[None]] = []
        while waiting:
            room = self.concurrency - len(self._jobs) - self._reserved
            if room <= 0:
                await self._wait_for_room()
                if self._stopping.is_set():
                    await self.queue.defer(*waiting)
                    break
                continue
            take, waiting = waiting[:room], waiting[room:]
            for job in await self.store.claim(self.owner, self.lease_s, len(take), ids=take):
                self._spawn(job)
                running.append(self._jobs[job.id][1])
        if running:
            # Waiting (not awaiting) keeps a procrastinate abort from cancelling the
            # pipeline: draining and releasing belong to Worker.stop.
            await asyncio.wait(running)
        return f"ran {len(running)}" if running else "not pending"

    async def stop(self, grace_s: float) -> None:
        for engine_worker in self._engine_workers:
            engine_worker.stop()  # stop fetching; running deliveries finish below
        await super().stop(grace_s)
        for supervisor in self._supervisors:
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(supervisor, timeout=max(1.0, grace_s))
        for supervisor in self._supervisors:
            supervisor.cancel()
        await self.queue.close()

    async def _supervise(self, index: int, concurrency: int) -> None:
        """Run one procrastinate worker; start a new one if it stops on its own."""
        from procrastinate.worker import Worker as ProcrastinateWorker

        while not self._stopping.is_set():
            engine_worker = ProcrastinateWorker(
                self.queue.app,
                queues=[QUEUE_NAME],
                name=f"pixelgate-{index}",
                concurrency=max(1, concurrency),
                install_signal_handlers=False,
                delete_jobs="always",
                listen_notify=True,
                fetch_job_polling_interval=max(self.poll_s, 1.0),
                update_heartbeat_interval=HEARTBEAT_S,
                stalled_worker_timeout=STALLED_S,
            )
            self._engine_workers.append(engine_worker)
            try:
                await engine_worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("engine_worker_failed", worker=index)
            finally:
                self._engine_workers.remove(engine_worker)
            if not self._stopping.is_set():
                log.warning("engine_worker_restarting", worker=index)
                await asyncio.sleep(RESTART_DELAY_S)

    async def _maintenance_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(MAINTENANCE_S)
            try:
                await self._retry_stalled()
                await self._requeue_orphans()
            except Exception:
                log.exception("queue_maintenance_failed")

    async def _retry_stalled(self) -> None:
        manager = self.queue.app.job_manager
        stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_S))
        for job in stalled:
            await manager.retry_job(job)
        if stalled:
            log.info("stalled_jobs_retried", count=len(stalled))

    async def _requeue_orphans(self) -> None:
        async with self.queue.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            async with conn.transaction():
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,))
                row = await cur.fetchone()
                if not row or not row[0]:
                    return  # another worker is sweeping
                cur = await conn.execute(ORPHANS_SQL, {"age": ORPHAN_AGE_S})
                orphans = [r[0] for r in await cur.fetchall()]
        for start in range(0, len(orphans), DISPATCH_CHUNK):
            await self.queue.defer(*orphans[start : start + DISPATCH_CHUNK])
        if orphans:
            log.warning("orphaned_jobs_requeued", count=len(orphans))


async def _installed_versions(conn: Any) -> dict[str, str]:
    cur = await conn.execute("SELECT to_regclass('pixelgate_queue_schema') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}
    cur = await conn.execute("SELECT component, version FROM pixelgate_queue_schema")
    return {component: value for component, value in await cur.fetchall()}


async def _apply_migrations(conn: Any, installed: str, current: str) -> None:
    """Apply procrastinate's migration files newer than ``installed``, up to ``current``."""
    files = await asyncio.to_thread(
        _migration_files, _version_tuple(installed), _version_tuple(current)
    )
    for name, sql in files:
        await conn.execute(sql)
        log.info("queue_schema_migrated", migration=name)


def _migration_files(low: tuple[int, ...], high: tuple[int, ...]) -> list[tuple[str, str]]:
    from procrastinate.schema import SchemaManager

    folder = Path(SchemaManager.get_migrations_path())
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match and low < tuple(int(g) for g in match.groups()) <= high:
            found.append((path.name, path.read_text()))
    return found
