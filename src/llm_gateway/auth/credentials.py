"""API keys and other random secrets: made here, stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "gw-"
DISPLAY_PREFIX_LEN = 11  # "gw-" + 8 characters


def generate_key() -> str:
    """``gw-`` and 43 random URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """SHA-256, hex. Keys and tokens carry 256 random bits, so a fast hash is
    safe here (no dictionary to attack) and keeps the hot path cheap."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LEN]


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and not credential.startswith(KEY_PREFIX)
