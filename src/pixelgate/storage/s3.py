"""Images in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO) through obstore.

``PIXELGATE_STORAGE_URL=s3://bucket/prefix``: objects live at ``prefix/key``. Every
object is written with its content type and ``Cache-Control: public, max-age=31536000,
immutable`` (keys are stable and never rewritten with other bytes). URLs are the CDN
base + object path when ``PIXELGATE_PUBLIC_URL`` is set, else presigned GET URLs valid
``PIXELGATE_PRESIGN_TTL_S`` seconds, or — ``s3_url_mode = "gateway"`` — the gateway's
own ``/files/{key}``, which answers with a 307 to a fresh presigned URL.

obstore covers everything used here (put with attributes and automatic multipart, get,
head, delete, list, local presigning); boto3 is not needed.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pixelgate.errors import ConfigError, NotFound, StorageError
from pixelgate.storage.base import CACHE_CONTROL, StorageStats, StoredObject, validate_key

if TYPE_CHECKING:
    from obstore.store import S3Store

    from pixelgate.config import Settings

__all__ = ["S3Storage", "parse_s3_url"]

S3_CONNECT_TIMEOUT_S = 5
S3_REQUEST_TIMEOUT_S = 30
S3_MAX_RETRIES = 3
S3_RETRY_TIMEOUT_S = 15

LIST_CHUNK = 1000
DEFAULT_REGION = "us-east-1"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"config error: storage_url: not an s3://bucket/prefix URL: {url!r}")
    prefix = parts.path.strip("/")
    if prefix:
        validate_key(prefix)
    return parts.netloc, prefix


class S3Storage:
    """A :class:`~pixelgate.storage.base.Storage` on an S3-compatible bucket."""

    backend = "s3"

    def __init__(
        self,
        store: S3Store,
        *,
        bucket: str,
        prefix: str,
        public_url: str | None = None,
        presign_ttl_s: int = 3600,
        url_mode: str = "presign",
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.prefix = prefix
        self.public_url = public_url.rstrip("/") if public_url else None
        self.presign_ttl = dt.timedelta(seconds=presign_ttl_s)
        self.url_mode = url_mode

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        from obstore.store import S3Store

        bucket, prefix = parse_s3_url(settings.resolved_storage_url)
        s3 = settings.storage_s3
        config: dict[str, Any] = {"region": s3.region or DEFAULT_REGION}
        if s3.endpoint_url:
            config["endpoint"] = s3.endpoint_url
        if s3.access_key_id:
            config["access_key_id"] = s3.access_key_id
        if s3.secret_access_key is not None:
            config["secret_access_key"] = s3.secret_access_key.get_secret_value()
        if s3.session_token is not None:
            config["session_token"] = s3.session_token.get_secret_value()
        store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options={
                # an endpoint written as http:// (MinIO, moto on a private network) is an
                # explicit choice: allowed without also setting PIXELGATE_S3_ALLOW_HTTP
                "allow_http": settings.s3_allow_http
                or (s3.endpoint_url or "").lower().startswith("http://"),
                "connect_timeout": timedelta(seconds=S3_CONNECT_TIMEOUT_S),
                "timeout": timedelta(seconds=S3_REQUEST_TIMEOUT_S),
            },
            # obstore's default (10 retries within 3 minutes) would hold a job far past
            # its deadline when the store is down; fail within seconds instead
            retry_config={
                "max_retries": S3_MAX_RETRIES,
                "retry_timeout": timedelta(seconds=S3_RETRY_TIMEOUT_S),
            },
        )
        return cls(
            store,
            bucket=bucket,
            prefix=prefix,
            public_url=settings.public_url,
            presign_ttl_s=settings.presign_ttl_s,
            url_mode=settings.s3_url_mode,
        )

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        import obstore

        validate_key(key)
        try:
            await obstore.put_async(
                self.store,
                key,
                data,
                attributes={"Content-Type": content_type, "Cache-Control": CACHE_CONTROL},
            )
        except Exception as exc:
            raise _storage_error("write", key, exc) from exc

    async def get(self, key: str) -> StoredObject:
        import obstore

        validate_key(key)
        try:
            result = await obstore.get_async(self.store, key)
            data = bytes(await result.bytes_async())
        except FileNotFoundError:
            raise NotFound(f"no stored object {key!r}") from None
        except Exception as exc:
            raise _storage_error("read", key, exc) from exc
        content_type = str(result.attributes.get("Content-Type", "application/octet-stream"))
        return StoredObject(key=key, data=data, content_type=content_type)

    async def delete(self, key: str) -> None:
        import obstore

        validate_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _storage_error("delete", key, exc) from exc

    async def check(self) -> None:
        """List at most one object: unlike a HEAD of a missing key, this tells a missing
        bucket (404) and refused credentials (403) apart from a healthy store.

        Raises:
            StorageError: with the store's first line of explanation.
        """
        import obstore

        try:
            async for _ in obstore.list(self.store, None, chunk_size=1):
                break
        except Exception as exc:
            raise _storage_error("list", self.prefix or "/", exc) from exc

    async def exists(self, key: str) -> bool:
        import obstore

        validate_key(key)
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise _storage_error("check", key, exc) from exc
        return True

    def url(self, key: str, base_url: str) -> str:
        """CDN URL, presigned URL, or the gateway's ``/files/{key}`` (see the module doc)."""
        validate_key(key)
        if self.public_url is None and self.url_mode == "gateway":
            return f"{base_url.rstrip('/')}/files/{key}"
        return self.direct_url(key)

    def direct_url(self, key: str) -> str:
        """Where the bytes are: the CDN URL, else a presigned GET URL (never ``/files``)."""
        validate_key(key)
        if self.public_url is not None:
            path = f"{self.prefix}/{key}" if self.prefix else key
            return f"{self.public_url}/{path}"
        import obstore

        # Signing is a local HMAC computation with static credentials (no request).
        return obstore.sign(self.store, "GET", key, self.presign_ttl)

    async def stats(self) -> StorageStats:
        import obstore

        objects = size = 0
        try:
            stream = obstore.list(self.store, None, chunk_size=LIST_CHUNK)
            async for batch in stream:
                for meta in batch:
                    objects += 1
                    size += int(meta["size"])
        except Exception as exc:
            raise _storage_error("list", self.prefix or "/", exc) from exc
        return StorageStats(objects=objects, bytes=size, backend=self.backend)

    async def close(self) -> None:
        return None


def _storage_error(action: str, key: str, exc: Exception) -> StorageError:
    # obstore's messages can be long (they embed the response body): keep the first line.
    first_line = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return StorageError(f"cannot {action} {key!r} in the bucket: {first_line}")
