"""Vertex AI adapter: Imagen ``:predict`` and Gemini image models ``:generateContent``.

The request and response shapes are those of the Gemini API adapters
(:mod:`pixelgate.providers.gemini`, :mod:`pixelgate.providers.imagen`), reused by
subclassing them with a Vertex transport: the URL names a project and a location,
and every call carries an OAuth access token from a service-account file
(``credentials_file``) or Application Default Credentials (google-auth, extra
``pixelgate[vertex]``). Tokens are refreshed off the event loop *before* they
expire (``token_refresh_margin_s``); a 401 forces one refresh and one retry.
Wire protocol: PROVIDERS-2.md §2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx

from pixelgate.providers import _http, gemini, imagen
from pixelgate.providers.base import (
    Capabilities,
    Health,
    JobContext,
    ModelInfo,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    ProviderTimeout,
    Refused,
    Transient,
)

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = ["VertexProvider", "VertexSettings"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
HEALTH_TIMEOUT_S = 5.0
TOKEN_TIMEOUT_S = 30.0
DEFAULT_LOCATION = "us-central1"
#: multi-region locations served from ``aiplatform.{loc}.rep.googleapis.com``
MULTI_REGIONS = frozenset({"us", "eu"})
#: phrases of Vertex's whole-call safety block (400 INVALID_ARGUMENT, *observed*)
_BLOCKED = ("response is blocked", "violate our policies")

IMAGEN_ASPECT_RATIOS = imagen.ASPECT_RATIOS
#: USD per image, Imagen on Vertex (PROVIDERS-2.md §2, *observed*: the Gemini API
#: prices; Ultra at $0.08 on Vertex is unconfirmed, so $0.06 is kept)
IMAGEN_PRICES_USD: dict[str, Decimal] = dict(imagen.PRICES_USD)
IMAGEN_DESCRIPTIONS = {
    imagen.FAST_MODEL: "Imagen 4 Fast on Vertex AI",
    "imagen-4.0-generate-001": "Imagen 4 on Vertex AI",
    "imagen-4.0-ultra-generate-001": "Imagen 4 Ultra on Vertex AI",
}
#: Gemini image models on Vertex, USD per image (about 1290 image tokens at $30/1M for
#: 2.5 Flash Image; the previews' prices are *observed* hints)
GEMINI_PRICES_USD: dict[str, Decimal] = {
    "gemini-2.5-flash-image": gemini.PRICE_PER_IMAGE_USD,
    "gemini-3-pro-image-preview": Decimal("0.134"),
    "gemini-3.1-flash-image-preview": Decimal("0.067"),
}
GEMINI_DESCRIPTIONS = {
    "gemini-2.5-flash-image": "Gemini 2.5 Flash Image on Vertex AI: generation and editing",
    "gemini-3-pro-image-preview": "Gemini 3 Pro Image (preview) on Vertex AI, up to 4K",
    "gemini-3.1-flash-image-preview": "Gemini 3.1 Flash Image (preview) on Vertex AI, up to 4K",
}
#: models that take ``imageConfig.imageSize`` (1K, 2K, 4K)
SIZED_GEMINI = frozenset({"gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"})
ONE_K_PIXELS = 1536 * 1024
TWO_K_PIXELS = 2560 * 2048
MAX_SIDE_4K = 4096

_IMAGEN_PERSON = {"allow_all": "ALLOW_ALL", "allow_adult": "ALLOW_ADULT", "none": "DONT_ALLOW"}
_GEMINI_PERSON = {"allow_all": "ALLOW_ALL", "allow_adult": "ALLOW_ADULT", "none": "ALLOW_NONE"}


class VertexSettings(ProviderSettings):
    """Settings of a ``vertex`` instance."""

    #: Google Cloud project; defaults to the credentials' project
    project: str | None = None
    #: a region (``us-central1``), ``global``, or a multi-region (``us``, ``eu``)
    location: str = DEFAULT_LOCATION
    #: per-model location, e.g. ``{"gemini-3-pro-image-preview" = "global"}``
    model_locations: dict[str, str] = {}
    #: service-account (or other google-auth) JSON file; unset: Application Default
    #: Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the metadata server)
    credentials_file: str | None = None
    api_version: Literal["v1", "v1beta1"] = "v1"
    #: refresh the access token when it has less than this many seconds left
    token_refresh_margin_s: float = 300.0
    person_generation: Literal["allow_all", "allow_adult", "none"] | None = None
    #: Imagen ``safetySetting``
    safety_setting: (
        Literal["block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"]
        | None
    ) = None
    #: Imagen's SynthID watermark; Vertex takes a ``seed`` only when it is off
    add_watermark: bool = True


class _TokenSource:
    """OAuth access tokens from google-auth, refreshed in a thread before they expire."""

    def __init__(self, provider: str, settings: VertexSettings) -> None:
        self.provider = provider
        self.settings = settings
        self.project = settings.project
        self.quota_project: str | None = None
        self.refreshes = 0
        self._credentials: Credentials | None = None
        self._request: Any = None
        self._lock = asyncio.Lock()

    async def token(self, *, force: bool = False) -> str:
        """A token with more than the margin left (``force``: a new one regardless)."""
        async with self._lock:
            if self._credentials is None:
                self._credentials = await self._in_thread(self._load)
            credentials = self._credentials
            if force or self._stale(credentials):
                await self._in_thread(lambda: credentials.refresh(self._transport()))
                self.refreshes += 1
            if not credentials.token:
                raise ProviderAuthError(f"{self.provider}: no access token", provider=self.provider)
            return str(credentials.token)

    def _stale(self, credentials: Credentials) -> bool:
        if not credentials.token:
            return True
        expiry = credentials.expiry
        if expiry is None:
            return False
        # google-auth keeps expiry as a naive UTC datetime
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        return (expiry - now).total_seconds() <= self.settings.token_refresh_margin_s

    def _load(self) -> Credentials:
        import google.auth

        if self.settings.credentials_file:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(
                self.settings.credentials_file, scopes=list(SCOPES)
            )
            project = credentials.project_id
        else:
            credentials, project = google.auth.default(scopes=list(SCOPES))
        self.project = self.project or project
        self.quota_project = getattr(credentials, "quota_project_id", None)
        return credentials

    def _transport(self) -> Any:
        if self._request is None:
            import google.auth.transport.requests

            base = google.auth.transport.requests.Request()

            def request(*args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", TOKEN_TIMEOUT_S)
                return base(*args, **kwargs)

            self._request = request
        return self._request

    async def _in_thread(self, work: Any) -> Any:
        """Run a blocking google-auth call in a thread; map its errors onto the taxonomy."""
        try:
            import google.auth.exceptions as gerrors
        except ImportError:
            raise ProviderAuthError(
                f"{self.provider}: google-auth is not installed (pip install 'pixelgate[vertex]')",
                provider=self.provider,
            ) from None
        try:
            async with asyncio.timeout(TOKEN_TIMEOUT_S):
                return await asyncio.to_thread(work)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.provider}: no access token within {TOKEN_TIMEOUT_S:g} s",
                provider=self.provider,
            ) from None
        except gerrors.RefreshError as exc:
            message = f"{self.provider}: token refresh failed: {_first_line(exc)}"
            if getattr(exc, "retryable", False):
                raise Transient(message, provider=self.provider) from None
            raise ProviderAuthError(message, provider=self.provider) from None
        except gerrors.TransportError as exc:
            raise Transient(
                f"{self.provider}: token endpoint unreachable: {_first_line(exc)}",
                provider=self.provider,
            ) from None
        except (gerrors.GoogleAuthError, OSError, ValueError) as exc:
            raise ProviderAuthError(
                f"{self.provider}: cannot load Google credentials: {_first_line(exc)}",
                provider=self.provider,
            ) from None


class _VertexTransport(gemini.GoogleAPIProvider):
    """The Vertex endpoint and OAuth auth in place of the Gemini API's key header."""

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        http: httpx.AsyncClient,
        *,
        vertex: VertexSettings,
        tokens: _TokenSource,
        models: dict[str, ModelInfo],
    ) -> None:
        super().__init__(name, settings, http)
        self.vertex = vertex
        self.tokens = tokens
        self._models = models

    @property
    def models(self) -> dict[str, ModelInfo]:
        return self._models

    def api_key(self) -> str:
        # Vertex authenticates with OAuth tokens (``_send``), not an API key
        return ""

    def model_url(self, model: str, method: str) -> str:
        location = self.vertex.model_locations.get(model, self.vertex.location)
        project = self.tokens.project
        if not project:
            raise ProviderAuthError(
                f"{self.name}: no Google Cloud project (set project, or use credentials "
                "that name one)",
                provider=self.name,
            )
        host = self.vertex.base_url or _host(location)
        return (
            f"{host.rstrip('/')}/{self.vertex.api_version}/projects/{project}/locations/"
            f"{location}/publishers/google/models/{model}:{method}"
        )

    async def _send(
        self, method: str, path: str, *, deadline_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``path`` is ``/models/{model}:{method}`` as the Gemini API adapters build it."""
        limit = deadline_s if deadline_s is not None else self.settings.timeout_s
        model, _, verb = path.removeprefix("/models/").partition(":")
        try:
            async with asyncio.timeout(limit):
                token = await self.tokens.token()
                url = self.model_url(model, verb)
                response = await self._authorized(method, url, token, limit, **kwargs)
                if response.status_code == 401:
                    # revoked or expired early: one fresh token, one more try
                    token = await self.tokens.token(force=True)
                    response = await self._authorized(method, url, token, limit, **kwargs)
                return response
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {limit:g} s", provider=self.name
            ) from None

    async def _authorized(
        self, method: str, url: str, token: str, limit: float, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if self.tokens.quota_project:
            headers["x-goog-user-project"] = self.tokens.quota_project
        return await _http.request(
            self.http, self.name, method, url, timeout=limit, headers=headers, **kwargs
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        error = super()._error(response)
        if response.status_code == 400 and any(p in error.message for p in _BLOCKED):
            return Refused(error.message, provider=self.name, status_code=400)
        return error


class _VertexImagen(_VertexTransport, imagen.ImagenProvider):
    """Imagen's ``:predict`` body plus the Vertex-only parameters."""

    def _parameters(self, model: str, request: ProviderRequest, ratio: str) -> dict[str, Any]:
        parameters = super()._parameters(model, request, ratio)
        if self.vertex.person_generation:
            parameters["personGeneration"] = _IMAGEN_PERSON[self.vertex.person_generation]
        if self.vertex.safety_setting:
            parameters["safetySetting"] = self.vertex.safety_setting
        if not self.vertex.add_watermark:
            parameters["addWatermark"] = False
            if request.seed is not None:
                parameters["seed"] = request.seed
        return parameters


class _VertexGemini(_VertexTransport, gemini.GeminiProvider):
    """Gemini's ``:generateContent`` body plus ``imageSize`` on the models that take it."""

    def _body(self, request: ProviderRequest, ratio: str) -> dict[str, Any]:
        body = super()._body(request, ratio)
        image_config = body["generationConfig"]["imageConfig"]
        if self.vertex.person_generation:
            image_config["personGeneration"] = _GEMINI_PERSON[self.vertex.person_generation]
        if (request.model or self.default_model) in SIZED_GEMINI:
            pixels = request.width * request.height
            size = "1K" if pixels <= ONE_K_PIXELS else "2K" if pixels <= TWO_K_PIXELS else "4K"
            image_config["imageSize"] = size
        return body

    def _cost(self, parsed: Any, count: int) -> Decimal:
        # the token price of the Gemini API adapter is 2.5 Flash Image's; the previews
        # are billed per image here from the table (their answers name the model)
        price = GEMINI_PRICES_USD.get(parsed.model_version or "")
        if price is not None and parsed.model_version in SIZED_GEMINI:
            return price * count
        return super()._cost(parsed, count)


class VertexProvider(Provider):
    """Imagen 4 and the Gemini image models on Vertex AI, authenticated with OAuth.

    Imagen models take text only (up to 4 images per call, ``seed`` when
    ``add_watermark`` is off); Gemini models also edit (``edit_image``) and take a
    reference image, one image per call (``n`` calls at once). Filtered Imagen
    images are dropped by Vertex; none left is :class:`Refused`, as is a Gemini
    answer without an image and a ``finishReason`` of the safety kind.
    """

    kind: ClassVar[str] = "vertex"
    settings_class: ClassVar[type[ProviderSettings]] = VertexSettings
    needs_key: ClassVar[bool] = False

    settings: VertexSettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, VertexSettings):
            settings = VertexSettings.model_validate(settings.model_dump())
        super().__init__(name, settings, http)
        self.tokens = _TokenSource(name, settings)
        common: dict[str, Any] = {"kind": self.kind, "timeout_s": settings.timeout_s}
        self._imagen = _VertexImagen(
            name,
            imagen.ImagenSettings(**common),
            http,
            vertex=settings,
            tokens=self.tokens,
            models=self._imagen_models(),
        )
        self._gemini = _VertexGemini(
            name,
            gemini.GeminiSettings(**common),
            http,
            vertex=settings,
            tokens=self.tokens,
            models=self._gemini_models(),
        )

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {**self._gemini.models, **self._imagen.models}

    @property
    def default_model(self) -> str:
        return self.settings.default_model or "gemini-2.5-flash-image"

    @property
    def configured(self) -> bool:
        """Enabled, and a project is named (directly or by the credentials file)."""
        return self.settings.enabled and bool(
            self.settings.project or self.settings.credentials_file
        )

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        self.model_info(model)
        backend = self._imagen if model in self._imagen.models else self._gemini
        return await backend.generate(dataclasses.replace(request, model=model), ctx)

    async def health(self) -> Health:
        """Get a token, then GET the default model's publisher entry (no image is made)."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        model = self.default_model
        location = self.settings.model_locations.get(model, self.settings.location)
        host = (self.settings.base_url or _host(location)).rstrip("/")
        url = f"{host}/{self.settings.api_version}/publishers/google/models/{model}"
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                token = await self.tokens.token()
                response = await self._gemini._authorized("GET", url, token, HEALTH_TIMEOUT_S)
        except ProviderAuthError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        except TimeoutError:
            return Health(healthy=False, status="unreachable", detail="health check timed out")
        latency = (time.monotonic() - started) * 1000
        if response.status_code >= 400:
            error = self._gemini._error(response)
            status = "auth_failed" if isinstance(error, ProviderAuthError) else "degraded"
            return Health(healthy=False, status=status, detail=error.message, latency_ms=latency)
        return Health(healthy=True, latency_ms=latency)

    def _imagen_models(self) -> dict[str, ModelInfo]:
        seed = not self.settings.add_watermark
        return {
            name: ModelInfo(
                name=name,
                capabilities=Capabilities(
                    seed=seed,
                    aspect_ratios=IMAGEN_ASPECT_RATIOS,
                    max_n=imagen.MAX_N,
                    output_formats=("png", "jpeg"),
                    max_width=imagen.MAX_SIDE_1K
                    if name == imagen.FAST_MODEL
                    else imagen.MAX_SIDE_2K,
                    max_height=imagen.MAX_SIDE_1K
                    if name == imagen.FAST_MODEL
                    else imagen.MAX_SIDE_2K,
                ),
                price_usd=price,
                description=IMAGEN_DESCRIPTIONS[name],
            )
            for name, price in IMAGEN_PRICES_USD.items()
        }

    def _gemini_models(self) -> dict[str, ModelInfo]:
        def caps(name: str) -> Capabilities:
            big = name in SIZED_GEMINI
            return Capabilities(
                edit=True,
                reference_image=True,
                aspect_ratios=gemini.ASPECT_RATIOS,
                max_n=gemini.MAX_N,
                output_formats=("png",),
                max_width=MAX_SIDE_4K if big else gemini.MAX_WIDTH,
                max_height=MAX_SIDE_4K if big else gemini.MAX_HEIGHT,
            )

        return {
            name: ModelInfo(
                name=name,
                capabilities=caps(name),
                price_usd=price,
                description=GEMINI_DESCRIPTIONS[name],
            )
            for name, price in GEMINI_PRICES_USD.items()
        }


def _host(location: str) -> str:
    """The regional, global or multi-region host (python-genai ``_api_client.py``)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in MULTI_REGIONS:
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__
