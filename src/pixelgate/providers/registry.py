"""Provider kinds by name, and the configured provider instances of a process.

Built-in kinds are listed once in :data:`BUILTIN_KINDS` (imported lazily);
third-party packages add kinds through the ``pixelgate.providers`` entry-point
group with no edit here. A default instance with no table and no key is built at its
first use, not at start: its adapter module is ~0.2 MB and ~7 ms to import, and most
processes never use most of the eleven.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from pixelgate.config import PROVIDER_ENTRY_POINTS, Settings
from pixelgate.errors import ConfigError, NotFound
from pixelgate.providers.base import Provider

__all__ = ["BUILTIN_KINDS", "ENTRY_POINT_GROUP", "ProviderSet", "build_providers", "load_kind"]

ENTRY_POINT_GROUP = PROVIDER_ENTRY_POINTS
PLACEHOLDER = "placeholder"

BUILTIN_KINDS: dict[str, str] = {
    "placeholder": "pixelgate.providers.placeholder:PlaceholderProvider",
    "openai": "pixelgate.providers.openai:OpenAIProvider",
    "openai_compatible": "pixelgate.providers.openai:OpenAICompatibleProvider",
    "gemini": "pixelgate.providers.gemini:GeminiProvider",
    "imagen": "pixelgate.providers.imagen:ImagenProvider",
    "stability": "pixelgate.providers.stability:StabilityProvider",
    "replicate": "pixelgate.providers.replicate:ReplicateProvider",
    "fal": "pixelgate.providers.fal:FalProvider",
    "ideogram": "pixelgate.providers.ideogram:IdeogramProvider",
    "unsplash": "pixelgate.providers.unsplash:UnsplashProvider",
    "comfyui": "pixelgate.providers.comfyui:ComfyUIProvider",
    "horde": "pixelgate.providers.horde:HordeProvider",
    "vertex": "pixelgate.providers.vertex:VertexProvider",
    "bedrock": "pixelgate.providers.bedrock:BedrockProvider",
    "azure_openai": "pixelgate.providers.azure_openai:AzureOpenAIProvider",
    "openrouter": "pixelgate.providers.openrouter:OpenRouterProvider",
    "xai": "pixelgate.providers.xai:XAIProvider",
    "recraft": "pixelgate.providers.recraft:RecraftProvider",
    "bfl": "pixelgate.providers.bfl:BflProvider",
}

#: kinds that get an instance of the same name even without a config table
#: (listed as "not configured" until a key is set)
#: imagen is opt-in (a ``[providers.imagen]`` table): it shares Gemini's key, and the
#: Gemini API retired Imagen on 2026-08-17 (PROVIDERS.md §3)
#: each with its kind's usual key variable (``Provider.key_env``; a test keeps them equal),
#: so an instance without a key is known to be unconfigured before its module is imported
DEFAULT_INSTANCES: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "stability": "STABILITY_API_KEY",
    "replicate": "REPLICATE_API_TOKEN",
    "fal": "FAL_KEY",
    "ideogram": "IDEOGRAM_API_KEY",
    "unsplash": "UNSPLASH_ACCESS_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "xai": "XAI_API_KEY",
    "recraft": "RECRAFT_API_TOKEN",
    "bfl": "BFL_API_KEY",
}


def _import(target: str) -> type[Provider]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"{target} is not a pixelgate Provider")
    return cls


def available_kinds() -> dict[str, str]:
    """Every known kind: built-ins plus installed plug-ins (plug-ins cannot shadow built-ins)."""
    kinds = dict(BUILTIN_KINDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kinds.setdefault(ep.name, ep.value)
    return kinds


def load_kind(kind: str, name: str | None = None) -> type[Provider]:
    """The provider class of ``kind``; ``name`` (the instance) puts its key path in the error.

    Raises:
        ConfigError: an unknown kind, or one whose module cannot be imported.
    """
    where = f"config error: providers.{name}.kind: " if name is not None else ""
    # a built-in needs no scan of the installed packages' entry points (plug-ins cannot
    # shadow one): the first scan costs ~30 ms of the start, each later one ~3 ms
    target = BUILTIN_KINDS.get(kind) or available_kinds().get(kind)
    if target is None:
        raise ConfigError(f"{where}unknown provider kind {kind!r}")
    try:
        return _import(target)
    except ImportError as exc:
        raise ConfigError(f"{where}provider kind {kind!r} cannot be loaded: {exc}") from None


class _Pending:
    """A default instance with no table and no key: built at its first use."""

    def __init__(self, name: str, settings: Settings, http: httpx.AsyncClient) -> None:
        self.name = name
        self.settings = settings
        self.http = http

    def build(self) -> Provider:
        return _build(self.name, {"kind": self.name}, self.settings, self.http)


class ProviderSet:
    """The provider instances of this process, by instance name.

    Instances known at start to be unconfigured may be pending: built the first time one
    is looked up or iterated over; :meth:`names`, ``in`` and :meth:`configured` never
    build one.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider | _Pending],
        default_chain: list[str],
    ) -> None:
        self._providers: dict[str, Provider | _Pending] = dict(providers)
        self.default_chain = default_chain

    def __iter__(self) -> Iterator[Provider]:
        for name in list(self._providers):
            provider = self.find(name)
            if provider is not None:
                yield provider

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def names(self) -> list[str]:
        return list(self._providers)

    def get(self, name: str) -> Provider:
        provider = self.find(name)
        if provider is None:
            raise NotFound(f"unknown provider {name!r}", code="unknown_provider")
        return provider

    def find(self, name: str) -> Provider | None:
        provider = self._providers.get(name)
        if isinstance(provider, _Pending):
            provider = self._providers[name] = provider.build()
        return provider

    def configured(self) -> list[Provider]:
        return [p for p in self._providers.values() if isinstance(p, Provider) and p.configured]

    def owner(self, model: str) -> Provider | None:
        """The instance that serves ``model``: the first configured one offering it, else
        the first one offering it (pending instances are built only then)."""
        for provider in self.configured():
            if provider.offers(model):
                return provider
        return next((p for p in self if p.offers(model)), None)

    def _built(self) -> list[str]:
        """Names of the instances built so far (tests)."""
        return [n for n, p in self._providers.items() if isinstance(p, Provider)]

    @property
    def placeholder(self) -> Provider:
        provider = self.find(PLACEHOLDER)
        if provider is None:  # configured away by name: build a plain one
            raise NotFound("no placeholder provider")
        return provider


def _env_key(
    name: str, table: dict[str, Any], kind: str, key_env: str | None, env: dict[str, str]
) -> str | None:
    """The key an instance takes from the environment: its ``api_key_env``, then
    ``PIXELGATE_<NAME>_API_KEY``, then its kind's variables."""
    env_name = name.upper().replace("-", "_")
    key = None
    if table.get("api_key_env"):
        key = env.get(str(table["api_key_env"]))
    key = key or env.get(f"PIXELGATE_{env_name}_API_KEY")
    if key is None and key_env and table.get("kind") == name:
        key = env.get(key_env)
    if key is None and key_env and not table.get("api_key_env"):
        key = env.get(f"PIXELGATE_{kind.upper()}_API_KEY") or env.get(key_env)
    return key


def _instance_settings(
    name: str, table: dict[str, Any], cls: type[Provider], env: dict[str, str]
) -> Any:
    data = dict(table)
    env_name = name.upper().replace("-", "_")
    if data.get("api_key") is None:
        key = _env_key(name, data, cls.kind, cls.key_env, env)
        if key:
            data["api_key"] = SecretStr(key)
    if data.get("base_url") is None:
        url = env.get(f"PIXELGATE_{env_name}_BASE_URL")
        if url:
            data["base_url"] = url
    try:
        return cls.settings_class.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"config error: providers.{name}.{loc}: {first['msg']}") from None


def _build(
    name: str, table: dict[str, Any], settings: Settings, http: httpx.AsyncClient
) -> Provider:
    cls = load_kind(str(table["kind"]), name)
    return cls(name, _instance_settings(name, table, cls, settings.provider_env), http)


def _keyless_default(name: str, settings: Settings) -> bool:
    """A default instance without a table or a key: unconfigured whatever its module says."""
    key_env = DEFAULT_INSTANCES.get(name)
    if key_env is None or name in settings.providers:
        return False
    return not _env_key(name, {"kind": name}, name, key_env, settings.provider_env)


def validate_provider_tables(settings: Settings) -> None:
    """Check every ``[providers.NAME]`` table and the fallback chain without building anything.

    Raises:
        ConfigError: one line naming the bad key.
    """
    for name, table in settings.providers.items():
        if not isinstance(table, dict) or "kind" not in table:
            raise ConfigError(f"config error: providers.{name}.kind: field required")
        cls = load_kind(str(table["kind"]), name)
        _instance_settings(name, table, cls, settings.provider_env)
    known = set(settings.providers) | set(DEFAULT_INSTANCES) | {PLACEHOLDER}
    for name in settings.routing.default:
        if name not in known:
            raise ConfigError(f"config error: routing.default: unknown provider {name!r}")


def build_providers(settings: Settings, http: httpx.AsyncClient) -> ProviderSet:
    """Instantiate every provider from the config tables and the environment.

    Raises:
        ConfigError: a table names an unknown kind or has a bad field.
    """
    tables: dict[str, dict[str, Any]] = {}
    for kind in DEFAULT_INSTANCES:
        tables[kind] = {"kind": kind}
    tables[PLACEHOLDER] = {"kind": PLACEHOLDER}
    for name, table in settings.providers.items():
        if not isinstance(table, dict) or "kind" not in table:
            raise ConfigError(f"config error: providers.{name}.kind: field required")
        tables[name] = dict(table)

    providers: dict[str, Provider | _Pending] = {}
    for name, table in tables.items():
        if _keyless_default(name, settings):
            providers[name] = _Pending(name, settings, http)
        else:
            providers[name] = _build(name, table, settings, http)

    chain = list(settings.routing.default)
    for name in chain:
        if name not in providers:
            raise ConfigError(f"config error: routing.default: unknown provider {name!r}")
    if not chain:
        real = [
            n
            for n, p in providers.items()
            if isinstance(p, Provider) and p.configured and p.kind != PLACEHOLDER
        ]
        explicit = [n for n in settings.providers if n in real]
        chain = explicit + [n for n in real if n not in explicit] or [PLACEHOLDER]
    return ProviderSet(providers, chain)
