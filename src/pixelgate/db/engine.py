"""Engines and sessions. SQLite gets WAL and one writer connection; PostgreSQL a pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

__all__ = ["Database", "Dispatcher", "Outcome", "TxFunction", "dispatch", "run_migrations"]

#: a transaction function: plain synchronous code over one connection, run in one hop
TxFunction = Callable[[Connection], Any]
#: what one transaction function of a batch gave: ``(True, result)`` or ``(False, error)``
Outcome = tuple[bool, Any]
#: hands the generation ids a transaction made runnable to the queue engine, inside
#: that transaction (procrastinate: one job for the whole batch; see :func:`dispatch`)
Dispatcher = Callable[[Connection, list[str]], None]
_DISPATCH_KEY = "pixelgate.dispatch"


def dispatch(c: Connection, generation_ids: list[str]) -> None:
    """Announce, from a transaction function, generations that became runnable: the
    queue engine gets them all in one go at the end of the batch, in the same
    transaction (so a rolled-back admission is never dispatched)."""
    c.info.setdefault(_DISPATCH_KEY, []).extend(generation_ids)

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_READ_POOL = 4


def _sqlite_pragmas(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below own transactions (the pysqlite recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction can
        # never fail to upgrade its lock (SQLITE_BUSY) half-way.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class _ThreadSession:
    """The part of ``AsyncSession`` pixelgate uses, over a sync ``Session`` run in the DB thread.

    Why not aiosqlite: it hops threads about four times per statement and SQLAlchemy's
    async bridge adds greenlet switches — measured here at 1.4 ms of CPU for a
    one-SELECT transaction. Results are buffered (``freeze``) inside the thread, so the
    event loop never touches the connection.
    """

    def __init__(self, session: Session, run: Callable[..., Awaitable[Any]]) -> None:
        self._session = session
        self._run = run

    def _execute(self, statement: Any, params: Any, kw: dict[str, Any]) -> Any:
        result = self._session.execute(statement, params, **kw)
        # ORM results always carry rows; a DML CursorResult may carry none
        return result.freeze()() if getattr(result, "returns_rows", True) else result

    async def execute(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return await self._run(self._execute, statement, params, kw)

    async def scalar(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return await self._run(self._session.scalar, statement, params, **kw)

    async def scalars(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return (await self.execute(statement, params, **kw)).scalars()

    async def get(self, entity: Any, ident: Any, **kw: Any) -> Any:
        return await self._run(self._session.get, entity, ident, **kw)

    async def flush(self) -> None:
        await self._run(self._session.flush)

    def add(self, instance: Any) -> None:
        self._session.add(instance)  # no SQL: it only registers the object

    def add_all(self, instances: Any) -> None:
        self._session.add_all(instances)

    def get_bind(self) -> Any:
        return self._session.get_bind()


class Database:
    """The process's database handle: ``write()`` and ``read()`` sessions.

    On SQLite, every statement runs synchronously in one dedicated thread (see
    :class:`_ThreadSession`); writes go through a single connection, queued in
    asyncio (SQLite serialises writers anyway), and reads through a small pool that
    runs alongside thanks to WAL. On PostgreSQL, asyncpg through ``AsyncSession``.
    """

    def __init__(self, url: str, *, pool_size: int = 20, max_overflow: int = 20) -> None:
        self.url = url
        #: set by a queue engine that wants dispatched ids (see :func:`dispatch`)
        self.dispatcher: Dispatcher | None = None
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _ensure_sqlite_dir(url)
            sync_url = url.replace("+aiosqlite", "")
            options: dict[str, Any] = {
                "hide_parameters": True,  # request values never reach an error or a log
                "max_overflow": 0,
                "pool_reset_on_return": None,  # every session ends in commit or rollback
                "connect_args": {"check_same_thread": False},
            }
            self._sync_write = create_engine(sync_url, pool_size=1, **options)
            self._sync_read = create_engine(sync_url, pool_size=SQLITE_READ_POOL, **options)
            _sqlite_pragmas(self._sync_write, writer=True)
            _sqlite_pragmas(self._sync_read, writer=False)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelgate-db")
            self._write_lock = asyncio.Lock()
            self._read_slots = asyncio.Semaphore(SQLITE_READ_POOL)
            self._dialect = "sqlite"
        else:
            self.write_engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                hide_parameters=True,
            )
            self._write = async_sessionmaker(self.write_engine, expire_on_commit=False)
            self._dialect = self.write_engine.dialect.name

    @property
    def dialect(self) -> str:
        return self._dialect

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, partial(fn, *args, **kwargs))

    @asynccontextmanager
    async def _thread_session(self, engine: Engine) -> AsyncIterator[AsyncSession]:
        session = Session(engine, expire_on_commit=False)
        try:
            # the connection is checked out (and BEGIN sent) in the thread, lazily
            yield cast(AsyncSession, _ThreadSession(session, self._in_thread))
            await self._in_thread(session.commit)
        except BaseException:
            await asyncio.shield(self._in_thread(session.rollback))
            raise
        finally:
            await asyncio.shield(self._in_thread(session.close))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error."""
        if self.is_sqlite:
            async with self._write_lock, self._thread_session(self._sync_write) as session:
                yield session
            return
        async with self._write() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading (one snapshot transaction)."""
        if self.is_sqlite:
            async with self._read_slots, self._thread_session(self._sync_read) as session:
                yield session
            return
        async with self._write() as session, session.begin():
            yield session

    async def run(self, fn: TxFunction) -> Any:
        """Run a read-only transaction function in one hop (one snapshot)."""
        if self.is_sqlite:
            async with self._read_slots:
                return await self._in_thread(_read_in_thread, self._sync_read, fn)
        async with self.write_engine.connect() as conn, conn.begin():
            return await conn.run_sync(fn)

    async def run_batch(self, fns: list[TxFunction]) -> list[Outcome]:
        """Run write transaction functions in ONE transaction, each in its own savepoint
        (a single one needs none), and commit once: the group commit's database side.

        A function that raises is rolled back alone and its error is its outcome; an
        error of the transaction itself (the commit, a lost connection) is raised.
        """
        if self.is_sqlite:
            async with self._write_lock:
                return await self._in_thread(
                    _batch_in_thread, self._sync_write, fns, self.dispatcher
                )
        async with self.write_engine.connect() as conn:
            try:
                async with conn.begin():
                    return await conn.run_sync(_run_items, fns, self.dispatcher)
            except _SoleFailure as failure:
                return [(False, failure.error)]

    async def close(self) -> None:
        if self.is_sqlite:
            await self._in_thread(self._sync_write.dispose)
            await self._in_thread(self._sync_read.dispose)
            self._thread.shutdown(wait=True)
            return
        await self.write_engine.dispose()


class _SoleFailure(Exception):
    """The only function of a batch raised: the whole transaction is rolled back."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _run_items(
    conn: Connection, fns: list[TxFunction], dispatcher: Dispatcher | None
) -> list[Outcome]:
    dispatched: list[str] = conn.info.setdefault(_DISPATCH_KEY, [])
    dispatched.clear()
    outcomes: list[Outcome] = []
    if len(fns) == 1:
        try:
            outcomes.append((True, fns[0](conn)))
        except Exception as exc:
            raise _SoleFailure(exc) from exc
    else:
        for fn in fns:
            mark = len(dispatched)
            try:
                with conn.begin_nested():
                    outcomes.append((True, fn(conn)))
            except Exception as exc:
                del dispatched[mark:]  # rolled back with its savepoint
                outcomes.append((False, exc))
    if dispatched and dispatcher is not None:
        dispatcher(conn, list(dispatched))
    dispatched.clear()
    return outcomes


def _batch_in_thread(
    engine: Engine, fns: list[TxFunction], dispatcher: Dispatcher | None
) -> list[Outcome]:
    with engine.connect() as conn:
        try:
            with conn.begin():
                return _run_items(conn, fns, dispatcher)
        except _SoleFailure as failure:
            conn.info.get(_DISPATCH_KEY, []).clear()
            return [(False, failure.error)]


def _read_in_thread(engine: Engine, fn: TxFunction) -> Any:
    with engine.connect() as conn, conn.begin():
        return fn(conn)


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def run_migrations_sync(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (blocking; runs its own event loop)."""
    from alembic import command

    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
    command.upgrade(_alembic_config(url), revision)


async def run_migrations(url: str, revision: str = "head") -> None:
    """Apply migrations from async code (Alembic's async env needs its own loop)."""
    await asyncio.to_thread(run_migrations_sync, url, revision)
