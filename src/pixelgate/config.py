"""Settings: defaults < TOML file (``PIXELGATE_CONFIG``) < environment < CLI flags.

This is the one module that reads ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pixelgate._config_sections import (
    AlertSettings,
    BreakerSettings,
    CreditSettings,
    HedgeSettings,
    HostList,
    OutboundLimit,
    ProviderRouting,
    RefusalFallback,
    RetrySettings,
    RoutingPolicy,
    RoutingSettings,
    S3Settings,
    TierSettings,
    default_tiers,
)
from pixelgate.errors import ConfigError

__all__ = [
    "AlertSettings",
    "BreakerSettings",
    "CreditSettings",
    "HedgeSettings",
    "OutboundLimit",
    "ProviderRouting",
    "RefusalFallback",
    "RetrySettings",
    "RoutingPolicy",
    "RoutingSettings",
    "Settings",
    "TierSettings",
    "load_settings",
    "otel_settings",
]

# The providers' usual key variables (INTERFACE.md), collected for the registry.
PROVIDER_KEY_ENV = (
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "STABILITY_API_KEY",
    "REPLICATE_API_TOKEN",
    "FAL_KEY",
    "IDEOGRAM_API_KEY",
    "UNSPLASH_ACCESS_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AZURE_OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "XAI_API_KEY",
    "RECRAFT_API_TOKEN",
    "BFL_API_KEY",
)
#: entry-point group of third-party provider kinds (the registry loads them from it)
PROVIDER_ENTRY_POINTS = "pixelgate.providers"


# S3Settings field → AWS variables, first one set wins.
AWS_ENV: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
}


class Settings(BaseSettings):
    """Every setting of pixelgate; build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="PIXELGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    #: unset: the platform's user data directory (:func:`default_data_dir`)
    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    database_url: str | None = None
    storage_url: str | None = None
    storage_prefix: str = "ai"
    public_url: str | None = None
    redis_url: str | None = None
    #: PostgreSQL connections per process: pool + overflow (mind max_connections)
    db_pool_size: int = Field(10, ge=1, le=1000)
    db_max_overflow: int = Field(10, ge=0, le=1000)
    #: namespace of pixelgate's Redis keys and channels (several deployments, one Redis)
    redis_prefix: str = Field("pixelgate", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: "auto": procrastinate on PostgreSQL, the embedded lease worker on SQLite
    queue: Literal["auto", "embedded", "procrastinate"] = "auto"
    #: S3 image URLs: presigned (private bucket) or through ``/files`` (307 to a presigned
    #: URL); ``public_url`` (a CDN) takes precedence over both
    s3_url_mode: Literal["presign", "gateway"] = "presign"
    s3_allow_http: bool = False
    presign_ttl_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    storage_s3: S3Settings = Field(default_factory=S3Settings)
    admin_key: SecretStr | None = None
    config: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: how long an idle client connection is kept open. Longer than clients' and load
    #: balancers' own idle timeouts (httpx 5 s, AWS ALB 60 s), so that they close first:
    #: a server closing a connection as the client reuses it fails that request
    keep_alive_s: float = Field(75.0, gt=0)
    worker: bool = True
    #: jobs one worker runs at once. A job waiting on a provider is a coroutine of a few
    #: kilobytes, so thousands are normal; providers are protected by their own
    #: outbound limits (docs/routing.md), not by this
    concurrency: int = Field(2000, ge=1, le=100_000)
    lease_seconds: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0)
    shutdown_grace_s: float = Field(20.0, ge=0)
    max_deliveries: int = Field(5, ge=1)

    sync_timeout_s: float = Field(60.0, gt=0)
    #: simulated ``progress`` events while a provider that reports none works: seconds
    #: between two of one job (0: none)
    simulated_progress_interval_s: float = Field(3.0, ge=0)
    #: the latency the simulated curve assumes until the provider's own is observed
    simulated_progress_expected_s: float = Field(20.0, gt=0)
    #: running jobs' events (progress, provider_selected...) are written together at most
    #: this late, and a job's finishing transaction takes its own (0: each at once)
    event_flush_interval_s: float = Field(0.1, ge=0)
    max_wait_s: float = Field(120.0, gt=0)
    #: life of a WebSocket ticket (``POST /v1/events/tickets``); each is redeemable once
    ws_ticket_ttl_s: float = Field(30.0, gt=0, le=3600)
    #: seed 000's ``DEFAULT_INSTANCE_ID``: the account an admin key's request without
    #: ``instance_id`` acts for (also read from ``DEFAULT_INSTANCE_ID``)
    default_instance: str | None = None
    #: a seed request naming a model that no configured provider offers: refused (False),
    #: or run on the default chain with the response saying so (True)
    substitute_unconfigured_models: bool = False
    #: largest request body (JSON or other) read at all; bigger ones get 413 before any
    #: parsing. Multipart uploads are bounded by ``max_image_bytes`` instead (3 images + 1 MiB)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024**3)
    max_prompt_length: int = Field(4000, ge=1)
    max_n: int = Field(10, ge=1, le=1000)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_dimension: int = Field(4096, ge=64, le=65_536)
    #: requests in one ``POST /v1/batches`` (and one chunk of ``generate --from-file``)
    max_batch_size: int = Field(100, ge=1, le=10_000)

    #: hosts that user URLs (reference and input images) may reach even when they are not
    #: public (private deployments, tests): names, IPs, or ".suffix" for subdomains
    fetch_allow_hosts: HostList = Field(default_factory=list)
    fetch_timeout_s: float = Field(20.0, gt=0)
    #: OpenAI-compatible ``model`` aliases: ``alias = "provider/model"`` (or a provider)
    aliases: dict[str, str] = Field(default_factory=dict)

    #: signs webhooks (HMAC-SHA256); unset: generated once into ``<data dir>/webhook_secret``
    webhook_secret: SecretStr | None = None
    #: hosts webhooks may reach even when they are not public (empty: public hosts only)
    webhook_allow_hosts: HostList = Field(default_factory=list)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_s: float = Field(1.0, ge=0)
    webhook_backoff_max_s: float = Field(60.0, ge=0)

    #: e-mail on final failure; off while ``smtp_host`` is unset
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "pixelgate@localhost"
    smtp_timeout_s: float = Field(10.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: "auto": console on a terminal (stderr is a TTY), JSON lines otherwise
    log_format: Literal["auto", "console", "json"] = "auto"
    #: ``host:port`` of a second, unauthenticated server answering only ``GET /metrics``
    #: (for a scraper on a private network); unset: ``/metrics`` on the API, admin key only
    metrics_bind: str | None = Field(None, pattern=r"^\[?[A-Za-z0-9_.:-]*\]?:[0-9]{1,5}$")

    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    tiers: dict[str, TierSettings] = Field(default_factory=default_tiers)
    credits: CreditSettings = Field(default_factory=CreditSettings)

    #: provider-related environment variables, filled by :func:`load_settings`
    provider_env: dict[str, str] = Field(default_factory=dict, exclude=True)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _config_path()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # Derived values -------------------------------------------------------

    @field_validator("tiers", mode="after")
    @classmethod
    def _merge_tiers(cls, value: dict[str, TierSettings]) -> dict[str, TierSettings]:
        tiers = default_tiers()
        tiers.update({name.upper(): tier for name, tier in value.items()})
        return tiers

    def tier(self, name: str) -> TierSettings:
        """The named tier's quotas; an unknown tier gets FREE's (the safe side)."""
        return self.tiers.get(name.upper()) or self.tiers["FREE"]

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pixelgate.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return f"file://{(self.data_dir / 'images').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_queue(self) -> Literal["embedded", "procrastinate"]:
        """The queue engine: ``queue`` unless "auto" (procrastinate on PostgreSQL)."""
        if self.queue != "auto":
            return self.queue
        return "embedded" if self.is_sqlite else "procrastinate"

    def base_url(self) -> str:
        """Base of image URLs: the CDN (``public_url``) or the server itself."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


#: where versions before 0.2 kept their data, relative to the working directory
LEGACY_DATA_DIR = Path("pixelgate-data")


def default_data_dir() -> Path:
    """The data directory when ``PIXELGATE_DATA_DIR`` is unset: the platform's user data
    directory (``$XDG_DATA_HOME/pixelgate``, usually ``~/.local/share/pixelgate``), the same
    for ``serve``, ``generate`` and the Python API wherever they run. A ``./pixelgate-data``
    that already holds a database (an earlier version's default) is still used."""
    if (LEGACY_DATA_DIR / "pixelgate.db").is_file():
        return LEGACY_DATA_DIR.resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("pixelgate", appauthor=False))


_CONFIG_PATH_OVERRIDE: list[Path] = []


def _config_path() -> Path | None:
    if _CONFIG_PATH_OVERRIDE:
        return _CONFIG_PATH_OVERRIDE[-1]
    raw = os.environ.get("PIXELGATE_CONFIG")
    return Path(raw) if raw else None


def _provider_env() -> dict[str, str]:
    wanted: dict[str, str] = {}
    for name, value in os.environ.items():
        if name in PROVIDER_KEY_ENV or (
            name.startswith("PIXELGATE_") and name.endswith(("_API_KEY", "_BASE_URL"))
        ):
            wanted[name] = value
    wanted.pop("PIXELGATE_ADMIN_KEY", None)
    return wanted


def _seed004_tier_env() -> dict[str, dict[str, int]]:
    """Seed 004's ``GENERATION_<TIER>_TIER_LIMIT`` / ``_WINDOW`` variables."""
    tiers: dict[str, dict[str, int]] = {}
    for name, value in os.environ.items():
        if not (name.startswith("GENERATION_") and "_TIER_" in name):
            continue
        tier, _, what = name.removeprefix("GENERATION_").partition("_TIER_")
        field = {"LIMIT": "daily_limit", "WINDOW": "window_s"}.get(what)
        if field is None:
            continue
        try:
            tiers.setdefault(tier.upper(), {})[field] = int(value)
        except ValueError:
            raise ConfigError(f"config error: {name}: must be an integer") from None
    return tiers


def load_settings(**overrides: Any) -> Settings:
    """Build settings from all sources; CLI flags come in as ``overrides``.

    Raises:
        ConfigError: one line naming the bad key and the source.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config_path = overrides.get("config")
    if config_path is not None:
        _CONFIG_PATH_OVERRIDE.append(Path(config_path))
    path = _config_path()
    try:
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"config error: PIXELGATE_CONFIG: file not found: {path}")
            try:
                with path.open("rb") as fh:
                    tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config error: {path}: invalid TOML: {exc}") from None
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, path)) from None
    finally:
        if config_path is not None:
            _CONFIG_PATH_OVERRIDE.pop()
    for tier_name, fields in _seed004_tier_env().items():
        current = settings.tiers.get(tier_name, TierSettings())
        settings.tiers[tier_name] = current.model_copy(update=fields)
    if settings.default_instance is None and os.environ.get("DEFAULT_INSTANCE_ID"):
        settings.default_instance = os.environ["DEFAULT_INSTANCE_ID"]
    if settings.queue == "procrastinate" and settings.is_sqlite:
        raise ConfigError(
            "config error: queue: procrastinate needs PostgreSQL (PIXELGATE_DATABASE_URL)"
        )
    _fill_from_aws_env(settings.storage_s3)
    env = _provider_env()
    plugins: dict[str, EntryPoint] | None = None
    for table in settings.providers.values():
        if plugins is None:  # one scan of the installed packages (~6 ms), not one a table
            plugins = {}
            for ep in entry_points(group=PROVIDER_ENTRY_POINTS):
                plugins.setdefault(ep.name, ep)
        for ref in _key_env_names(table, plugins):
            if ref in os.environ:
                env[ref] = os.environ[ref]
    settings.provider_env = env
    return settings


def _key_env_names(table: Any, plugins: dict[str, EntryPoint]) -> list[str]:
    """Variables a provider table may take its key from beyond the built-in names: its
    ``api_key_env``, and a plug-in kind's own ``key_env`` (``FOO_API_KEY``)."""
    if not isinstance(table, dict):
        return []
    names = [table["api_key_env"]] if isinstance(table.get("api_key_env"), str) else []
    kind = table.get("kind")
    if isinstance(kind, str) and kind in plugins:
        key_env = _plugin_key_env(plugins[kind])
        if key_env:
            names.append(key_env)
    return names


def _plugin_key_env(ep: EntryPoint) -> str | None:
    """A plug-in kind's ``key_env``, read from its entry point (not through the registry,
    which imports this module); built-in kinds have no entry point."""
    try:
        key_env = getattr(ep.load(), "key_env", None)
    except (ImportError, AttributeError):
        return None  # reported with the provider table when providers are built
    return key_env if isinstance(key_env, str) else None


def _fill_from_aws_env(s3: S3Settings) -> None:
    for field, names in AWS_ENV.items():
        if getattr(s3, field) is not None:
            continue
        value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value is not None:
            secret = field in ("secret_access_key", "session_token")
            setattr(s3, field, SecretStr(value) if secret else value)


def otel_settings() -> list[str] | None:
    """The trace exporters the standard ``OTEL_*`` variables ask for, None: tracing off.

    Off unless ``OTEL_TRACES_EXPORTER`` names one (``none`` does not), and always off
    with ``OTEL_SDK_DISABLED=true``. The SDK reads the other ``OTEL_*`` variables itself.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    names = [n.strip() for n in raw.split(",") if n.strip() and n.strip() != "none"]
    return names or None


def _describe(exc: ValidationError, path: Path | None) -> str:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "settings"
    where = (
        f" (config file {path}, or PIXELGATE_{key.upper().replace('.', '__')})"
        if path
        else (f" (PIXELGATE_{key.upper().replace('.', '__')})")
    )
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config error: {key}: {first['msg']}{where}{more}"
