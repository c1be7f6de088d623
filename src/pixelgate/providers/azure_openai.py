"""Azure OpenAI adapter: OpenAI's image models deployed on an Azure resource.

The request and response bodies are OpenAI's, so :class:`AzureOpenAIProvider` subclasses
:class:`~pixelgate.providers.openai.OpenAIProvider` and changes only what Azure changes:
the URL (a deployment per model and ``?api-version=``, or the v1 route
``/openai/v1/...`` where ``model`` is the deployment name), the auth (``api-key`` header,
or an Entra ID bearer token from azure-identity, ``pixelgate[azure]``), no WebP output,
and Azure's content-filter error bodies, which are refusals.
Wire protocol: PROVIDERS-2.md §1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ValidationError, field_validator

from pixelgate.providers._openai_models import CAPS, DESCRIPTIONS, SPECS, Size, Spec
from pixelgate.providers._openai_wire import ErrorBody
from pixelgate.providers.base import (
    Health,
    JobContext,
    ModelInfo,
    ProviderAuthError,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    Refused,
)
from pixelgate.providers.openai import OpenAIProvider, OpenAISettings

__all__ = ["AzureOpenAIProvider", "AzureOpenAISettings"]

#: the models Azure deploys that the OpenAI adapter knows (no DALL·E 2 on Azure)
AZURE_MODELS = ("gpt-image-1", "gpt-image-1-mini", "dall-e-3")
#: the ``output_format`` values Azure takes (WebP "isn't supported")
AZURE_FORMATS = ("png", "jpeg")
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
#: refresh an Entra token this long before it expires
TOKEN_MARGIN_S = 300.0
#: ``error.code`` / ``error.inner_error.code`` values that mean a safety refusal
REFUSAL_CODES = frozenset(
    {"contentFilter", "content_filter", "content_policy_violation", "moderation_blocked"}
)
RAI_CODE = "ResponsibleAIPolicyViolation"


class AccessToken(Protocol):
    token: str
    expires_on: int


class TokenCredential(Protocol):
    """azure-core's ``AsyncTokenCredential`` (what ``azure.identity.aio`` credentials are)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


class AzureOpenAISettings(OpenAISettings):
    """Settings of a ``kind = "azure_openai"`` instance; ``base_url`` is the resource endpoint
    (``https://NAME.openai.azure.com``)."""

    kind: str = "azure_openai"
    #: model -> deployment name; empty means each model is deployed under its own name
    deployments: dict[str, str] = {}
    #: e.g. ``2025-04-01-preview``: the deployments route; None: the v1 route
    api_version: str | None = None
    #: use an Entra ID token (DefaultAzureCredential) instead of the API key
    entra_id: bool = False
    entra_scope: str = ENTRA_SCOPE

    @field_validator("deployments")
    @classmethod
    def _known_models(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(AZURE_MODELS))
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r} (known: {', '.join(AZURE_MODELS)})")
        return value


class _InnerError(BaseModel):
    code: str | None = None


class _AzureError(ErrorBody):
    inner_error: _InnerError | None = None


class _AzureEnvelope(BaseModel):
    error: _AzureError


class AzureOpenAIProvider(OpenAIProvider):
    """GPT image and DALL·E 3 deployments of an Azure OpenAI (or Foundry) resource.

    Generate and edit (GPT image models); no variations. The credential is an
    ``api-key`` or, with ``entra_id = true``, a bearer token fetched (and cached until
    shortly before expiry) from azure-identity's ``DefaultAzureCredential``.
    """

    kind: ClassVar[str] = "azure_openai"
    settings_class: ClassVar[type[ProviderSettings]] = AzureOpenAISettings
    key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    default_base_url: ClassVar[str | None] = None

    settings: AzureOpenAISettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        super().__init__(name, settings, http)
        #: the Entra credential; built on first use, or set by the embedding code
        self.credential: TokenCredential | None = None
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        if not self.settings.enabled or not self.settings.base_url:
            return False
        return self.settings.entra_id or self.settings.api_key is not None

    def offers(self, model: str) -> bool:
        return model in (self.settings.deployments or AZURE_MODELS)

    @property
    def models(self) -> dict[str, ModelInfo]:
        names = list(self.settings.deployments) or list(AZURE_MODELS)
        return {name: self._info(name) for name in names}

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        await self._authorize()
        return await super().generate(request, ctx)

    async def health(self) -> Health:
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        try:
            await self._authorize()
        except ProviderError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        return await super().health()

    # -- what Azure changes ----------------------------------------------------------

    def deployment(self, model: str) -> str:
        """The deployment that serves ``model``."""
        return self.settings.deployments.get(model, model)

    def _path(self, model: str | None, endpoint: str) -> str:
        version = self.settings.api_version
        if version is None:
            return f"/openai/v1{endpoint}"
        if model is None:  # resource-level routes (/models)
            return f"/openai{endpoint}?api-version={version}"
        return f"/openai/deployments/{self.deployment(model)}{endpoint}?api-version={version}"

    def _fields(
        self, model: str, spec: Spec, request: ProviderRequest, size: Size, *, edit: bool
    ) -> dict[str, Any]:
        fields = super()._fields(model, spec, request, size, edit=edit)
        if self.settings.api_version is None:
            fields["model"] = self.deployment(model)  # the v1 route names the deployment
        else:
            fields.pop("model")  # the deployment in the path decides
        if fields.get("output_format") not in (None, *AZURE_FORMATS):
            fields["output_format"] = "png"  # the pipeline converts to what was asked
        return fields

    def _headers(self) -> dict[str, str]:
        if self.settings.entra_id:
            if self._token is None:
                raise ProviderAuthError(f"{self.name}: no Entra ID token", provider=self.name)
            return {"Authorization": f"Bearer {self._token[0]}"}
        return {"api-key": self.api_key()}

    async def _authorize(self) -> None:
        """Make sure a fresh Entra token is cached (no-op with an API key)."""
        if not self.settings.entra_id:
            self.api_key()
            return
        async with self._token_lock:
            if self._token is not None and self._token[1] - TOKEN_MARGIN_S > time.time():
                return
            credential = self.credential or self._default_credential()
            self.credential = credential
            try:
                token = await credential.get_token(self.settings.entra_scope)
            except Exception as exc:  # azure-identity raises its own tree; none may escape
                raise ProviderAuthError(
                    f"{self.name}: Entra ID token: {type(exc).__name__}: {exc}"[:500],
                    provider=self.name,
                ) from None
            self._token = (token.token, float(token.expires_on))

    def _default_credential(self) -> TokenCredential:
        try:
            from azure.identity.aio import DefaultAzureCredential
        except ImportError:
            raise ProviderAuthError(
                f"{self.name}: entra_id needs azure-identity (pip install 'pixelgate[azure]')",
                provider=self.name,
            ) from None
        credential: TokenCredential = DefaultAzureCredential()
        return credential

    def _error(self, response: httpx.Response) -> ProviderError:
        if response.status_code == 400:
            try:
                error: _AzureError | None = _AzureEnvelope.model_validate_json(
                    response.content
                ).error
            except ValidationError:
                error = None
            if error is not None and _refusal(error):
                message = self._redact(f"{self.name}: HTTP 400: {error.message or error.code}")
                return Refused(message, provider=self.name, status_code=400)
        return super()._error(response)

    def _stream_error(self, error: ErrorBody) -> ProviderError:
        if error.code in REFUSAL_CODES:
            message = self._redact(f"{self.name}: stream error: {error.message or error.code}")
            return Refused(message, provider=self.name)
        return super()._stream_error(error)

    def _info(self, name: str) -> ModelInfo:
        spec = SPECS[name]
        base = CAPS[name]
        caps = dataclasses.replace(
            base, output_formats=AZURE_FORMATS if spec.family == "gpt-image" else ("png",)
        )
        price: Decimal = self._unit_price(name, spec, None, spec.sizes[0])
        deployment = self.deployment(name)
        description = f"{DESCRIPTIONS[name]} (deployment {deployment!r})"
        return ModelInfo(name=name, capabilities=caps, price_usd=price, description=description)


def _refusal(error: _AzureError) -> bool:
    inner = error.inner_error.code if error.inner_error is not None else None
    return error.code in REFUSAL_CODES or inner == RAI_CODE
