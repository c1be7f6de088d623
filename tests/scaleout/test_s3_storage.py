"""S3Storage against moto's S3 server: headers, URLs (presigned, CDN, gateway), stats."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from pixelgate.config import load_settings
from pixelgate.errors import ConfigError, NotFound, StorageError
from pixelgate.storage.s3 import S3Storage, parse_s3_url
from tests.scaleout.services import S3Server

KEY = "ai/acct/proj/2026/11/gen_1-0.png"


def _storage(s3: S3Server, tmp_path: Path, **extra: object) -> S3Storage:
    settings = load_settings(
        data_dir=tmp_path, **s3.settings(f"root{secrets.token_hex(3)}"), **extra
    )
    return S3Storage.from_settings(settings)


async def test_put_get_exists_delete_and_stats(s3: S3Server, tmp_path: Path) -> None:
    storage = _storage(s3, tmp_path)
    assert not await storage.exists(KEY)
    await storage.put(KEY, b"png-bytes", "image/png")
    await storage.put(KEY, b"png-bytes", "image/png")  # a re-run overwrites the same key
    assert await storage.exists(KEY)
    obj = await storage.get(KEY)
    assert (obj.data, obj.content_type) == (b"png-bytes", "image/png")
    stats = await storage.stats()
    assert (stats.objects, stats.bytes, stats.backend) == (1, 9, "s3")
    [stored] = s3.keys(storage.prefix + "/")
    head = s3.client().head_object(Bucket=s3.bucket, Key=stored)
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert head["ContentType"] == "image/png"
    await storage.delete(KEY)
    await storage.delete(KEY)  # idempotent
    with pytest.raises(NotFound):
        await storage.get(KEY)


async def test_presigned_url_serves_the_object_with_its_headers(
    s3: S3Server, tmp_path: Path
) -> None:
    storage = _storage(s3, tmp_path, presign_ttl_s=120)
    await storage.put(KEY, b"\x89PNG-data", "image/png")
    url = storage.url(KEY, "http://gateway.example")
    assert url.startswith(f"{s3.endpoint}/{s3.bucket}/{storage.prefix}/{KEY}?")
    assert "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as http:
        r = await http.get(url)
    assert r.status_code == 200 and r.content == b"\x89PNG-data"
    assert r.headers["content-type"] == "image/png"
    assert "immutable" in r.headers["cache-control"]


async def test_cdn_and_gateway_urls(s3: S3Server, tmp_path: Path) -> None:
    cdn = _storage(s3, tmp_path, public_url="https://cdn.example.com/")
    assert cdn.url(KEY, "http://ignored") == f"https://cdn.example.com/{cdn.prefix}/{KEY}"
    gateway = _storage(s3, tmp_path, s3_url_mode="gateway")
    assert gateway.url(KEY, "http://api:8080/") == f"http://api:8080/files/{KEY}"
    assert gateway.direct_url(KEY).startswith(s3.endpoint)


async def test_bad_keys_and_urls_are_refused(s3: S3Server, tmp_path: Path) -> None:
    storage = _storage(s3, tmp_path)
    for key in ("../etc/passwd", "/abs", "a//b", "a/../b"):
        with pytest.raises(StorageError):
            await storage.put(key, b"x", "image/png")
    assert parse_s3_url("s3://bucket/some/prefix") == ("bucket", "some/prefix")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigError):
        parse_s3_url("https://bucket/prefix")


async def test_unreachable_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        storage_url="s3://bucket/x",
        s3_allow_http=True,
        storage_s3={
            "endpoint_url": "http://127.0.0.1:9",
            "access_key_id": "a",
            "secret_access_key": "b",
        },
    )
    storage = S3Storage.from_settings(settings)
    import obstore  # noqa: F401  (the extra is installed)

    with pytest.raises(StorageError):
        await storage.exists(KEY)


def test_aws_variables_fill_the_s3_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    settings = load_settings(storage_url="s3://b/p")
    s3 = settings.storage_s3
    assert (s3.endpoint_url, s3.region, s3.access_key_id) == (
        "http://minio:9000",
        "eu-west-3",
        "AKIAEXAMPLE",
    )
    assert s3.secret_access_key is not None
    assert "very-secret" not in repr(settings)
    explicit = load_settings(storage_s3={"region": "us-west-2"})
    assert explicit.storage_s3.region == "us-west-2"
