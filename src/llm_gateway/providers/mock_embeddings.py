"""The mock provider's embeddings: deterministic, of length one, and cheap.

Every component of a vector is ±1/√dimensions, its sign drawn from a hash of
the input, so the vector has length one by construction and is built from
bytes by C code (hash, ``bytes.translate``, slice assignment, ``memoryview``)
rather than by a Python loop per number: a vector of 8192 numbers takes
microseconds. The answer is bounded too: at most ``MAX_VALUES`` numbers
(inputs × dimensions), and past ``OFF_LOOP`` they are built on a worker
thread, so that no request holds the event loop for more than a few
milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import sys
from typing import cast

MAX_VALUES = 2048 * 1024  # e.g. 2048 inputs of 1024 dimensions, or 256 of 8192
OFF_LOOP = 1 << 14  # numbers past which the vectors are built off the event loop


def _layout(dims: int, encoded: bool) -> tuple[bytes, int, int, bytes]:
    """The bytes of a vector of ``+c`` components, each component's width,
    the offset of its sign byte, and a translation table from hash bytes to
    that byte: positive or negative by the hash byte's top bit."""
    c = round(1 / math.sqrt(dims), 8)  # eight digits: short in JSON, the length still one to 1e-7
    if encoded:  # OpenAI's base64 encoding is little-endian float32
        unit, width, sign_at = struct.pack("<f", c), 4, 3
    else:  # read back as native doubles
        unit, width = struct.pack("=d", c), 8
        sign_at = 7 if sys.byteorder == "little" else 0
    top = unit[sign_at]
    table = bytes(top | (b & 0x80) for b in range(256))
    return unit * dims, width, sign_at, table


def embedding_vectors(inputs: list[str] | list[list[int]], dims: int, encoded: bool) -> list[list[float]] | list[str]:
    """One vector of ``dims`` numbers per input, or with ``encoded`` its
    base64 (as OpenAI's ``encoding_format: base64``)."""
    template, width, sign_at, table = _layout(dims, encoded)
    floats: list[list[float]] = []
    texts: list[str] = []
    for item in inputs:
        text = item if isinstance(item, str) else " ".join(map(str, item))
        raw = bytearray(template)
        raw[sign_at::width] = hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(dims).translate(table)
        if encoded:
            texts.append(base64.b64encode(raw).decode())
        else:
            floats.append(cast("list[float]", memoryview(raw).cast("d").tolist()))  # (typeshed says ints)
    return texts if encoded else floats
