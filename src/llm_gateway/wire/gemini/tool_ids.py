"""Tool-call ids that carry Gemini's thought signatures through the client.

Gemini function calls have no ids, and Gemini 3 answers 400 when a function
call in the current turn comes back without the ``thoughtSignature`` it was
sent with. A client speaking OpenAI (or Anthropic) echoes only the tool-call
id, so the gateway stays stateless by putting the signature into the id:
``call_<hex>`` alone, or ``call_<hex>_ts_<signature as unpadded base64url>``.
Gemini accepts the signature back in base64url (see the recorded
``streamGenerateContent-request-function-response.json``). Ids use only
``[A-Za-z0-9_-]``, which Anthropic-style clients also accept.
"""

from __future__ import annotations

import uuid

_MARK = "_ts_"


def new_call_id(signature: str | None = None) -> str:
    """A fresh id; ``signature`` is the standard base64 Gemini sent."""
    base = f"call_{uuid.uuid4().hex[:24]}"
    if not signature:
        return base
    url_safe = signature.replace("+", "-").replace("/", "_").rstrip("=")
    return f"{base}{_MARK}{url_safe}"


def signature_of(call_id: str) -> str | None:
    """The thought signature carried by ``call_id`` (base64url), if any.

    Only ids the gateway made carry one: ``call_`` followed by hex, then the
    mark. Hex digits cannot contain ``_ts_``, so the first mark is ours.
    """
    if not call_id.startswith("call_"):
        return None
    head, mark, signature = call_id[5:].partition(_MARK)
    if not mark or not signature or not head or any(c not in "0123456789abcdef" for c in head):
        return None
    return signature
