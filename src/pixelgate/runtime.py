"""Everything a pixelgate process holds, built once from settings and closed once.

The HTTP app, the CLI and the Python API all open a :class:`Runtime`; there is
one way to wire the pipeline. With ``PIXELGATE_REDIS_URL`` the process opens one Redis
client, used by the event bus and the shared resilience state (breakers, gates, rate
windows, pauses), and closes it last.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import structlog
from sqlalchemy.exc import IntegrityError

from pixelgate.config import Settings
from pixelgate.core.bus import EventBus, MemoryBus
from pixelgate.core.pipeline import Caller, Pipeline
from pixelgate.core.ports import RecordStore
from pixelgate.core.services import Services
from pixelgate.core.tickets import MemoryTickets, TicketStore
from pixelgate.datadir import prepare_data_dir
from pixelgate.db.engine import Database
from pixelgate.db.migrate import run_migrations
from pixelgate.db.quiet import hide_statement_parameters
from pixelgate.db.reports import Reports
from pixelgate.db.store import Store, hash_key
from pixelgate.errors import ConfigError
from pixelgate.media.cpu import shutdown_cpu_pool
from pixelgate.media.images import harden_image_decoding
from pixelgate.observability.alerts import AlertManager
from pixelgate.probes import database_down
from pixelgate.providers._pool import pooled_client
from pixelgate.providers.registry import ProviderSet, build_providers
from pixelgate.queue.base import JobQueue, open_queue
from pixelgate.queue.worker import Worker
from pixelgate.resilience.counters import open_redis
from pixelgate.resilience.shared import SharedState, open_shared_state
from pixelgate.resilience.tickets_redis import RedisTickets
from pixelgate.storage.base import Storage

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pixelgate.observability.server import MetricsServer

__all__ = ["ADMIN_ACCOUNT", "Runtime", "open_bus", "open_redis_client", "open_storage"]

log = structlog.get_logger("pixelgate.runtime")

ADMIN_ACCOUNT = "admin"
ADMIN_KEY_FILE = "admin_key"
#: outbound connections beyond one per job a worker runs (downloads, webhooks, health)
HTTP_SPARE_CONNECTIONS = 100
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def open_storage(settings: Settings) -> Storage:
    """The storage backend named by ``PIXELGATE_STORAGE_URL``."""
    url = settings.resolved_storage_url
    if url.startswith("file://"):
        from pixelgate.storage.local import LocalStorage

        return LocalStorage(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        try:
            from pixelgate.storage.s3 import S3Storage

            return S3Storage.from_settings(settings)
        except ImportError as exc:
            raise ConfigError(
                "config error: storage_url: s3:// needs the s3 extra (pip install 'pixelgate[s3]')"
            ) from exc
    raise ConfigError(f"config error: storage_url: unsupported storage URL {url!r}")


def open_redis_client(settings: Settings) -> Redis | None:
    """The process's Redis client when ``PIXELGATE_REDIS_URL`` is set (scale-out)."""
    if not settings.redis_url:
        return None
    try:
        return open_redis(settings.redis_url)
    except ImportError as exc:
        raise ConfigError(
            "config error: redis_url: needs the redis extra (pip install 'pixelgate[redis]')"
        ) from exc


async def open_bus(settings: Settings, redis: Redis | None = None) -> EventBus:
    """Redis pub/sub when ``PIXELGATE_REDIS_URL`` is set (scale-out), else in-process."""
    if not settings.redis_url:
        return MemoryBus()
    try:
        from pixelgate.queue.bus_redis import RedisBus
    except ImportError as exc:
        raise ConfigError(
            "config error: redis_url: needs the redis extra (pip install 'pixelgate[redis]')"
        ) from exc
    bus = RedisBus(settings.redis_url, prefix=settings.redis_prefix, redis=redis)
    await bus.start()  # bounded wait: a Redis that is down degrades /health, not start-up
    return bus


def open_tickets(settings: Settings, redis: Redis | None = None) -> TicketStore:
    """Redis tickets when the process has a Redis client (scale-out), else memory."""
    if redis is None:
        return MemoryTickets(settings.ws_ticket_ttl_s)
    return RedisTickets(redis, prefix=settings.redis_prefix, ttl_s=settings.ws_ticket_ttl_s)


@dataclass
class AdminBootstrap:
    """The admin key created on this start, if any (printed once by the CLI)."""

    generated_key: str | None
    key_file: Path | None


class Runtime:
    """Database, storage, providers, bus, pipeline and (optionally) the embedded worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        store: Store,
        storage: Storage,
        http: httpx.AsyncClient,
        providers: ProviderSet,
        bus: EventBus,
        pipeline: Pipeline,
        queue: JobQueue,
        redis: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.storage = storage
        self.http = http
        self.providers = providers
        self.bus = bus
        self.pipeline = pipeline
        #: what routes call besides the pipeline (they never hold the store)
        self.services = Services(settings=settings, records=store, reports=Reports(db))
        #: the process's Redis client (scale-out), shared by the bus and the shared state
        self.redis = redis
        self.shared: SharedState = pipeline.control.shared
        self.worker: Worker | None = None
        self.admin = AdminBootstrap(None, None)
        self.queue = queue
        #: WebSocket tickets: Redis with scale-out (any API process redeems them), else memory
        self.tickets = open_tickets(settings, redis)
        #: alert rules, firing alerts and history (``active()``, ``history()``)
        self.alerts = AlertManager(self)
        self.metrics_server: MetricsServer | None = None
        #: this start created the data directory (its first use: the CLI says where it is)
        self.data_dir_created = False

    @classmethod
    async def open(
        cls, settings: Settings, *, migrate: bool = True, bootstrap_admin: bool = True
    ) -> Runtime:
        """Migrate, connect and wire everything (the worker is started separately)."""
        harden_image_decoding()
        hide_statement_parameters()
        data_dir_created = prepare_data_dir(settings)
        if migrate:
            try:
                await run_migrations(settings.resolved_database_url)
            except Exception as exc:
                # unreachable host, refused password, missing database: one line, not a trace
                raise database_down(settings, exc) from exc
        db = Database(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        storage = open_storage(settings)
        base = settings.base_url()
        store = Store(db, url_for=lambda key: storage.url(key, base))
        # core sees the store only through its protocols: this line is mypy's proof
        records: RecordStore = store
        # one connection per job in flight: a pool smaller than the worker's concurrency
        # would queue provider calls behind each other
        http = pooled_client(
            max_connections=settings.concurrency + HTTP_SPARE_CONNECTIONS, timeout=HTTP_TIMEOUT
        )
        try:
            providers = build_providers(settings, http)
        except ConfigError:
            await http.aclose()
            await db.close()
            raise
        redis: Redis | None = None
        try:
            queue = open_queue(settings, store)
            if migrate:
                await queue.prepare()
            redis = open_redis_client(settings)
            bus = await open_bus(settings, redis)
        except BaseException:
            if redis is not None:
                await redis.aclose(close_connection_pool=True)
            await http.aclose()
            await db.close()
            raise
        pipeline = Pipeline(
            settings=settings,
            store=records,
            storage=storage,
            providers=providers,
            bus=bus,
            http=http,
            shared=open_shared_state(settings, redis=redis),
        )
        _add_notification_hooks(pipeline, settings, store)
        runtime = cls(
            settings,
            db=db,
            store=store,
            storage=storage,
            http=http,
            providers=providers,
            bus=bus,
            pipeline=pipeline,
            queue=queue,
            redis=redis,
        )
        runtime.data_dir_created = data_dir_created
        if bootstrap_admin:
            runtime.admin = await runtime._bootstrap_admin()
        return runtime

    async def start_worker(self, concurrency: int | None = None) -> Worker:
        worker = self.queue.make_worker(
            store=self.store,
            pipeline=self.pipeline,
            bus=self.bus,
            concurrency=concurrency or self.settings.concurrency,
            lease_s=self.settings.lease_seconds,
            poll_s=self.settings.poll_interval_s,
            max_deliveries=self.settings.max_deliveries,
        )
        await worker.start()
        self.worker = worker
        if type(worker) is Worker:  # the embedded lease worker takes jobs from admission
            self.pipeline.local_worker = worker
        return worker

    async def start_observability(self) -> None:
        """Tracing (``OTEL_*``), the alert evaluator and, with ``metrics_bind``, the
        metrics server: what a long-running process (``serve``, ``worker``) adds."""
        from pixelgate.observability.tracing import configure_tracing

        configure_tracing()
        self.alerts.start()
        if self.settings.metrics_bind and self.metrics_server is None:
            from pixelgate.observability.server import MetricsServer

            server = MetricsServer(self, self.settings.metrics_bind)
            await server.start()
            self.metrics_server = server

    async def close(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        await self.alerts.close()
        self.pipeline.local_worker = None
        if self.worker is not None:
            await self.worker.stop(self.settings.shutdown_grace_s)
            self.worker = None
        await self.queue.close()
        await self.pipeline.ticker.close()
        await self.pipeline.events.close()
        await self.pipeline.drain_hooks()
        await self.pipeline.fetcher.aclose()
        await self.shared.close()
        await self.bus.close()
        if self.redis is not None:
            await self.redis.aclose(close_connection_pool=True)
        await self.http.aclose()
        await self.storage.close()
        await self.db.close()
        shutdown_cpu_pool(wait=False)

    async def local_caller(self, account: str | None = None) -> Caller:
        """The caller used in-process (CLI, Python API): the named or admin account."""
        acct = await self.store.ensure_account(account or ADMIN_ACCOUNT)
        return Caller(account_id=acct.id, account_name=acct.name, is_admin=True)

    async def _bootstrap_admin(self) -> AdminBootstrap:
        """Make sure an admin key exists: ``PIXELGATE_ADMIN_KEY``, else generate one once."""
        admin = await self.store.ensure_account(ADMIN_ACCOUNT)
        configured = self.settings.admin_key
        if configured is not None:
            plain = configured.get_secret_value()
            if not await self.store.has_key_hash(hash_key(plain)):
                try:
                    await self.store.create_key(
                        admin.id, is_admin=True, name="bootstrap", plain=plain
                    )
                except IntegrityError:
                    # processes starting together (scale-out): another one created it
                    if not await self.store.has_key_hash(hash_key(plain)):
                        raise
            return AdminBootstrap(None, None)
        key_file = self.settings.data_dir / ADMIN_KEY_FILE
        if await self.store.has_admin_key():
            return AdminBootstrap(None, key_file if key_file.exists() else None)
        plain = "pg_admin_" + secrets.token_urlsafe(32)
        await self.store.create_key(admin.id, is_admin=True, name="generated", plain=plain)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(plain + "\n")
        os.chmod(key_file, 0o600)
        return AdminBootstrap(plain, key_file)


def _add_notification_hooks(pipeline: Pipeline, settings: Settings, store: Store) -> None:
    """Webhooks and failure e-mails run after every terminal state."""
    from pixelgate.api.schemas import generation_body
    from pixelgate.core.mailer import FailureMailer
    from pixelgate.core.webhooks import WebhookNotifier
    from pixelgate.delivery.smtp import SmtpSender
    from pixelgate.delivery.webhooks import HttpWebhookSender

    sender = HttpWebhookSender(settings=settings, store=store, fetcher=pipeline.fetcher)
    pipeline.finish_hooks.append(
        WebhookNotifier(settings=settings, store=store, sender=sender, render=generation_body)
    )
    pipeline.finish_hooks.append(
        FailureMailer(settings=settings, store=store, sender=SmtpSender(settings))
    )
