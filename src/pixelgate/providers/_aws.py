"""AWS credentials and SigV4 signing for the Bedrock adapter (botocore, no hand-written crypto).

A call is authenticated by a Bedrock API key (``Authorization: Bearer``), by keys given
in the settings, or by the standard AWS credential chain (environment, profile, SSO,
container or instance role). botocore is synchronous: the chain is loaded, and
refreshable credentials refreshed, in a thread with a deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from pixelgate.errors import ProviderAuthError, ProviderTimeout

__all__ = ["DEFAULT_REGION", "SIGNING_NAME", "Auth", "AwsAuth", "AwsSettings", "sign"]

SIGNING_NAME = "bedrock"
DEFAULT_REGION = "us-east-1"
CREDENTIALS_TIMEOUT_S = 30.0


class AwsSettings(Protocol):
    """What :class:`AwsAuth` reads of a provider's settings."""

    api_key: SecretStr | None
    region: str | None
    profile: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: SecretStr | None
    aws_session_token: SecretStr | None


@dataclass(frozen=True)
class Auth:
    """What one call is signed with: bearer key, or frozen SigV4 credentials."""

    region: str
    bearer: str | None = None
    credentials: Any = None


class AwsAuth:
    """Where one provider instance's calls get their credentials and region."""

    def __init__(self, name: str, settings: AwsSettings) -> None:
        self.name = name
        self._settings = settings
        self._chain: Any = None
        self._region: str | None = settings.region
        self._lock = asyncio.Lock()

    async def auth(self) -> Auth:
        """The bearer key, or SigV4 credentials from the settings or the AWS chain."""
        s = self._settings
        if s.api_key is not None:
            return Auth(region=await self._resolve_region(), bearer=s.api_key.get_secret_value())
        if s.aws_access_key_id and s.aws_secret_access_key:
            from botocore.credentials import ReadOnlyCredentials

            token = s.aws_session_token.get_secret_value() if s.aws_session_token else None
            frozen = ReadOnlyCredentials(
                s.aws_access_key_id, s.aws_secret_access_key.get_secret_value(), token
            )
            return Auth(region=await self._resolve_region(), credentials=frozen)
        async with self._lock:
            if self._chain is None:
                self._chain = await self._in_thread(self._load_chain)
        # refreshable credentials (SSO, roles) may refresh here: keep it off the loop
        frozen = await self._in_thread(self._chain.get_frozen_credentials)
        return Auth(region=self._region or DEFAULT_REGION, credentials=frozen)

    async def _resolve_region(self) -> str:
        if self._region is None:
            import botocore.session

            def region() -> str | None:
                session = botocore.session.Session(profile=self._settings.profile)
                value = session.get_config_variable("region")
                return str(value) if value else None

            self._region = await self._in_thread(region) or DEFAULT_REGION
        return self._region

    def _load_chain(self) -> Any:
        import botocore.session

        session = botocore.session.Session(profile=self._settings.profile)
        self._region = self._region or session.get_config_variable("region")
        credentials = session.get_credentials()
        if credentials is None:
            raise ProviderAuthError(
                f"{self.name}: no AWS credentials found (environment, profile, SSO, "
                "container or instance role) and no Bedrock API key",
                provider=self.name,
            )
        return credentials

    async def _in_thread(self, work: Any) -> Any:
        try:
            import botocore.exceptions
        except ImportError:
            raise ProviderAuthError(
                f"{self.name}: botocore is not installed (pip install 'pixelgate[bedrock]')",
                provider=self.name,
            ) from None
        try:
            async with asyncio.timeout(CREDENTIALS_TIMEOUT_S):
                return await asyncio.to_thread(work)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no AWS credentials within {CREDENTIALS_TIMEOUT_S:g} s",
                provider=self.name,
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ProviderAuthError(
                f"{self.name}: AWS credentials: {exc}", provider=self.name
            ) from None


def sign(
    method: str, url: str, payload: bytes, headers: dict[str, str], auth: Auth
) -> dict[str, str]:
    """SigV4 headers for exactly these bytes (botocore's signer; service ``bedrock``)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=payload, headers=headers)
    SigV4Auth(auth.credentials, SIGNING_NAME, auth.region).add_auth(request)
    # httpx sets Host itself from the same URL
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}
