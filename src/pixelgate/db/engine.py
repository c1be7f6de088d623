"""Engines and transaction functions: SQLite gets WAL and one writer; PostgreSQL a pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pydantic_core
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import create_async_engine

from pixelgate.threads import ThreadLane

__all__ = ["Database", "Dispatcher", "Outcome", "TxFunction", "dispatch"]

_PING = text("SELECT 1")
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


def _json_text(value: Any) -> str:
    """JSON columns' serializer: pydantic-core's (Rust) instead of the json module's,
    ~4x faster on the small documents every job writes (its request, route, events);
    ``pydantic_core.from_json`` reads them back (2-10x faster than ``json.loads``)."""
    return pydantic_core.to_json(value).decode()


SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_READ_POOL = 4


def sqlite_connection_setup(dbapi_conn: Any) -> None:
    """What every connection of ours says to SQLite first: transactions begun by us, WAL,
    the sync level, the busy timeout and foreign keys."""
    # Let our BEGIN own transactions (the pysqlite recipe).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_pragmas(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        sqlite_connection_setup(dbapi_conn)

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction can
        # never fail to upgrade its lock (SQLITE_BUSY) half-way. Said to sqlite3 itself:
        # through SQLAlchemy's execution it cost more than the commit.
        conn.connection.driver_connection.execute(begin)


class Database:
    """The process's database handle: transaction functions, each run in one hop.

    :meth:`run` runs a read-only function over one connection; :meth:`run_batch` runs
    write functions together in one transaction (the group commit of
    :mod:`pixelgate.db.writer`). On SQLite every function runs synchronously in one
    dedicated thread — aiosqlite hops threads about four times per statement, measured
    here at 1.4 ms of CPU for a one-SELECT transaction — writes through a single
    connection, reads through a small pool alongside thanks to WAL. On PostgreSQL, asyncpg
    through ``AsyncConnection.run_sync``.
    """

    def __init__(self, url: str, *, pool_size: int = 20, max_overflow: int = 20) -> None:
        self.url = url
        #: set by a queue engine that wants dispatched ids (see :func:`dispatch`)
        self.dispatcher: Dispatcher | None = None
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            ensure_sqlite_dir(url)
            sync_url = url.replace("+aiosqlite", "")
            options: dict[str, Any] = {
                "hide_parameters": True,  # request values never reach an error or a log
                "max_overflow": 0,
                "pool_reset_on_return": None,  # every transaction ends in commit or rollback
                "connect_args": {"check_same_thread": False},
                "json_serializer": _json_text,
                "json_deserializer": pydantic_core.from_json,
            }
            self._sync_write = create_engine(sync_url, pool_size=1, **options)
            self._writer = _HeldConnection(self._sync_write)
            self._sync_read = create_engine(sync_url, pool_size=SQLITE_READ_POOL, **options)
            _sqlite_pragmas(self._sync_write, writer=True)
            _sqlite_pragmas(self._sync_read, writer=False)
            self._thread = ThreadLane("pixelgate-db")
            self._write_lock = asyncio.Lock()
            self._read_slots = asyncio.Semaphore(SQLITE_READ_POOL)
            self._dialect = "sqlite"
        else:
            # asyncpg prepares each statement once per connection and keeps 100 by
            # default: the shapes of finishing updates and flushes outnumber that, and a
            # statement prepared again costs a round trip and its planning each time
            connect_args = {"prepared_statement_cache_size": 1000} if "asyncpg" in url else {}
            self.write_engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                hide_parameters=True,
                connect_args=connect_args,
                json_serializer=_json_text,
                json_deserializer=pydantic_core.from_json,
            )
            self._dialect = self.write_engine.dialect.name

    @property
    def dialect(self) -> str:
        return self._dialect

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._thread.call(fn, *args)

    async def run(self, fn: TxFunction) -> Any:
        """Run a read-only transaction function in one hop (one snapshot)."""
        if self.is_sqlite:
            async with self._read_slots:
                return await self._in_thread(_read_in_thread, self._sync_read, fn)
        async with self.write_engine.connect() as conn, conn.begin():
            return await conn.run_sync(fn)

    async def ping(self) -> None:
        """One round trip (``SELECT 1``): raises when the database does not answer."""
        await self.run(lambda c: c.execute(_PING))

    async def run_batch(self, fns: list[TxFunction]) -> list[Outcome]:
        """Run write transaction functions in ONE transaction and commit once: the group
        commit's database side. They run under one savepoint for the batch (a single one
        needs none; on SQLite the transaction itself stands for it); when one raises, that
        is rolled back and each runs again in its own.

        A function that raises is rolled back alone and its error is its outcome; an
        error of the transaction itself (the commit, a lost connection) is raised.
        """
        if self.is_sqlite:
            async with self._write_lock:
                return await self._in_thread(_batch_in_thread, self._writer, fns, self.dispatcher)
        async with self.write_engine.connect() as conn:
            try:
                async with conn.begin():
                    return await conn.run_sync(_run_items, fns, self.dispatcher)
            except _SoleFailure as failure:
                return [(False, failure.error)]

    async def close(self) -> None:
        if self.is_sqlite:
            await self._in_thread(self._writer.close)
            await self._in_thread(self._sync_write.dispose)
            await self._in_thread(self._sync_read.dispose)
            self._thread.close(wait=True)
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
    elif conn.dialect.name == "sqlite":
        outcomes = _all_at_once(conn, fns, dispatched, _driver_restart) or _one_by_one(
            conn, fns, dispatched, _driver_savepoint
        )
    else:
        outcomes = _all_at_once(conn, fns, dispatched, _nested) or _one_by_one(
            conn, fns, dispatched, _nested
        )
    if dispatched and dispatcher is not None:
        dispatcher(conn, list(dispatched))
    dispatched.clear()
    return outcomes


Savepoint = Callable[[Connection], AbstractContextManager[None]]


def _all_at_once(
    conn: Connection, fns: list[TxFunction], dispatched: list[str], savepoint: Savepoint
) -> list[Outcome] | None:
    """Every function under one savepoint for the batch (``savepoint`` opens at the
    transaction's start): the usual case, where none fails, costs two statements per
    batch instead of two per function (on PostgreSQL, per-function savepoints were ~20 %
    of the scale-out worker's and database's CPU, measured). ``None`` when one raised:
    all of it is rolled back, for :func:`_one_by_one` (a function may run twice, as a
    deadlock's retry already does)."""
    mark = len(dispatched)
    try:
        with savepoint(conn):
            return [(True, value) for value in _together(conn, fns)]
    except Exception:
        del dispatched[mark:]
        return None


def _together(conn: Connection, fns: list[TxFunction]) -> list[Any]:
    """Run the functions of a batch; those that carry a ``together`` function (a
    set-based form: ``together(conn, fns)`` answers what each would have) run through
    it with the others of their kind, after every other function of the batch (a caller
    awaits its function, so nothing it handed over later can be in the same batch)."""
    results: list[Any] = [None] * len(fns)
    kinds: dict[Callable[[Connection, list[Any]], list[Any]], list[int]] = {}
    for index, fn in enumerate(fns):
        together = getattr(fn, "together", None)
        if together is None:
            results[index] = fn(conn)
        else:
            kinds.setdefault(together, []).append(index)
    for together, indexes in kinds.items():
        values = together(conn, [fns[i] for i in indexes])
        for index, value in zip(indexes, values, strict=True):
            results[index] = value
    return results


def _one_by_one(
    conn: Connection, fns: list[TxFunction], dispatched: list[str], savepoint: Savepoint
) -> list[Outcome]:
    """Each function in its own savepoint: one that raises is rolled back alone."""
    outcomes: list[Outcome] = []
    for fn in fns:
        mark = len(dispatched)
        try:
            with savepoint(conn):
                outcomes.append((True, fn(conn)))
        except Exception as exc:
            del dispatched[mark:]  # rolled back with its savepoint
            outcomes.append((False, exc))
    return outcomes


@contextmanager
def _nested(conn: Connection) -> Iterator[None]:
    with conn.begin_nested():
        yield


@contextmanager
def _driver_savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint said to sqlite3 itself: SQLAlchemy's nested transaction costs ~48 µs
    of CPU here against ~2 µs for the driver's two statements (measured on SQLite), and
    nothing in a transaction function needs SQLAlchemy to know about this one."""
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("SAVEPOINT pixelgate_item")
    try:
        yield
    except BaseException:
        driver.execute("ROLLBACK TO pixelgate_item")
        driver.execute("RELEASE pixelgate_item")
        raise
    driver.execute("RELEASE pixelgate_item")


@contextmanager
def _driver_restart(conn: Connection) -> Iterator[None]:
    """SQLite's savepoint for a whole batch: none, and a failure rolls the transaction
    back and begins it again. A savepoint makes SQLite copy every page the batch changes
    to a statement journal, which past 64 KiB spills to a temporary file: ~16 page writes
    per job besides the WAL's (strace, OpenAI route); at the transaction's start, rolling
    back to it and rolling the transaction back are the same."""
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        yield
    except BaseException:
        if driver.in_transaction:  # some errors (a full disk) have rolled it back already
            driver.execute("ROLLBACK")
        driver.execute("BEGIN IMMEDIATE")
        raise


class _HeldConnection:
    """SQLite's one write connection, kept checked out by the DB thread: a pool
    check-out and check-in per batch cost more than its BEGIN and COMMIT (~45 of ~75 µs,
    measured). A connection SQLAlchemy invalidated (a lost file handle) is replaced."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def get(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self.engine.connect()
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def discard(self) -> None:
        """Drop the connection for a new one: a COMMIT that failed (a full disk, a
        deferred constraint) leaves sqlite3 inside the transaction, and the pool (no
        reset on return) would hand that state to every later batch."""
        if self._conn is not None:
            self._conn.invalidate()
            self.close()


def _batch_in_thread(
    writer: _HeldConnection, fns: list[TxFunction], dispatcher: Dispatcher | None
) -> list[Outcome]:
    conn = writer.get()
    try:
        with conn.begin():
            return _run_items(conn, fns, dispatcher)
    except _SoleFailure as failure:
        conn.info.get(_DISPATCH_KEY, []).clear()
        return [(False, failure.error)]
    except BaseException:
        writer.discard()
        raise


def _read_in_thread(engine: Engine, fn: TxFunction) -> Any:
    with engine.connect() as conn, conn.begin():
        return fn(conn)


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of the SQLite file ``url`` names (nothing for memory)."""
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def plain_sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names plainly, as ``sqlite3.connect`` takes it; None for
    anything else (not SQLite, in memory, a query string, a URI, percent-encoding)."""
    if not url.startswith("sqlite"):
        return None
    _, sep, path = url.partition(":///")
    if not sep or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return None if "?" in path or "%" in path else path
