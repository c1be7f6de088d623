"""Settings: defaults < TOML file (``PIXELGATE_CONFIG``) < environment < CLI flags.

This is the one module that reads ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pixelgate.errors import ConfigError

__all__ = ["RoutingSettings", "Settings", "load_settings"]

# The providers' usual key variables (INTERFACE.md), collected for the registry.
PROVIDER_KEY_ENV = (
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "STABILITY_API_KEY",
    "REPLICATE_API_TOKEN",
    "FAL_KEY",
    "IDEOGRAM_API_KEY",
    "UNSPLASH_ACCESS_KEY",
)


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: fallback chain of provider instance names, tried in order
    default: list[str] = Field(default_factory=list)
    #: answer with the placeholder image (provider "default") when every candidate fails
    fallback_image: bool = True


class Settings(BaseSettings):
    """Every setting of pixelgate; build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="PIXELGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("./pixelgate-data")
    database_url: str | None = None
    storage_url: str | None = None
    storage_prefix: str = "ai"
    public_url: str | None = None
    redis_url: str | None = None
    admin_key: SecretStr | None = None
    config: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    worker: bool = True
    concurrency: int = Field(100, ge=1, le=100_000)
    lease_seconds: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0)
    shutdown_grace_s: float = Field(20.0, ge=0)
    max_deliveries: int = Field(5, ge=1)

    sync_timeout_s: float = Field(60.0, gt=0)
    max_wait_s: float = Field(120.0, gt=0)
    default_account: str = "default"
    max_prompt_length: int = Field(4000, ge=1)
    max_n: int = Field(10, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_dimension: int = Field(4096, ge=64)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"

    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

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

    def base_url(self) -> str:
        """Base of image URLs: the CDN (``public_url``) or the server itself."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


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
    env = _provider_env()
    for table in settings.providers.values():
        ref = table.get("api_key_env") if isinstance(table, dict) else None
        if isinstance(ref, str) and ref in os.environ:
            env[ref] = os.environ[ref]
    settings.provider_env = env
    return settings


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
