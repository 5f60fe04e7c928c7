"""Cache keys: the model and every parameter that changes the answer.

Everything the client sent is part of the key except what only changes the
framing or the bookkeeping (``stream``, ``stream_options``, ``user``,
``metadata``, ``store``), so a streamed request finds an answer stored by a
plain one and the reverse. Keys are hashed; nothing of the prompt is kept in
the key itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})


def cache_key(endpoint: str, body: dict[str, Any], scope: str) -> str:
    """``scope`` is the user id when entries are private to a user, or
    ``*`` when they are shared."""
    significant = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.blake2b(
        orjson.dumps(significant, option=orjson.OPT_SORT_KEYS), digest_size=20, person=endpoint.encode()[:16]
    ).hexdigest()
    return f"{scope}:{digest}"
