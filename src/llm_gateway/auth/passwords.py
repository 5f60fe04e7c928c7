"""Password hashing with Argon2id, off the event loop."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # stateless and thread-safe: the library's recommended parameters
MIN_LENGTH = 8
MAX_LENGTH = 1024



@functools.cache
def _dummy_hash() -> str:
    """A real hash to verify against when the user does not exist, so a login
    for an unknown email takes as long as one with a wrong password. Made on
    first use: hashing at import would slow every start-up."""
    return _hasher.hash("dummy password for timing")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
