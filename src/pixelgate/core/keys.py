"""API keys: how they look and how they are stored (only their hash is)."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["KEY_PREFIX", "generate_key", "hash_key"]

KEY_PREFIX = "pg_"


def hash_key(plain: str) -> str:
    """SHA-256 of an API key. Keys carry 256 random bits, so a fast hash is safe."""
    return hashlib.sha256(plain.encode()).hexdigest()


def generate_key() -> str:
    """A new API key (``pg_`` and 256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)
