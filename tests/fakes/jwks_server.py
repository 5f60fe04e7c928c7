"""A fake identity provider: ``GET /.well-known/jwks.json`` from a mutable key
list (tests rotate keys by editing ``app.state.jwks.keys``), counting fetches;
plus keys and token makers, honest and forged.

``app.state.jwks.status`` ≠ 200 answers that status; ``app.state.jwks.body``
(bytes) replaces the document (a JWKS that is not one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ISSUER = "https://idp.test/"
AUDIENCE = "authenticated"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class JwksState:
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    body: bytes | None = None


async def jwks(request: Request) -> Response:
    state: JwksState = request.app.state.jwks
    state.fetches += 1
    if state.status != 200:
        return JSONResponse({"error": "unavailable"}, status_code=state.status)
    if state.body is not None:
        return Response(state.body, media_type="application/json")
    return JSONResponse({"keys": list(state.keys)})


def create_app(keys: list[dict[str, Any]] | None = None) -> Starlette:
    app = Starlette(routes=[Route(JWKS_PATH, jwks, methods=["GET"])])
    app.state.jwks = JwksState(list(keys or []))
    return app


@dataclass
class SigningKey:
    """A private key the fake identity provider signs with."""

    kid: str
    alg: str
    private: Any

    def jwk(self, *, with_alg: bool = True, **extra: Any) -> dict[str, Any]:
        """The public JWK, as a JWKS publishes it."""
        maker = RSAAlgorithm if isinstance(self.private, rsa.RSAPrivateKey) else ECAlgorithm
        data: dict[str, Any] = json.loads(maker.to_jwk(self.private.public_key()))
        data |= {"kid": self.kid, "use": "sig"}
        if with_alg:
            data["alg"] = self.alg
        return data | extra

    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None, alg: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers={"kid": self.kid} | (headers or {}))


def rsa_key(kid: str, alg: str = "RS256", bits: int = 2048) -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str, alg: str = "ES256") -> SigningKey:
    curve: ec.EllipticCurve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
    return SigningKey(kid, alg, ec.generate_private_key(curve))


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims a real identity provider would put in an access token; ``None``
    removes a claim. The email defaults to ``<sub>@example.com``."""
    now = int(time.time())
    sub = overrides.get("sub") or "idp-user-1"
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "email": f"{sub}@example.com",
        "email_verified": True, "iat": now, "exp": now + 600,
    }
    merged = base | overrides
    return {k: v for k, v in merged.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def unsigned_token(payload: dict[str, Any], kid: str | None = None, alg: str = "none") -> str:
    """``alg: none`` (or any casing of it), with an empty signature, made by hand."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return f"{_segment(header)}.{_segment(payload)}."


def hmac_token(payload: dict[str, Any], secret: bytes, *, alg: str = "HS256", kid: str | None = None) -> str:
    """An HS256 token made by hand, so any bytes can be the secret — e.g. an
    RSA public key's PEM, the classic algorithm-confusion forgery (PyJWT
    refuses to sign with a PEM as an HMAC secret)."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


def tamper_payload(token: str, **changes: Any) -> str:
    """The same header and signature around a changed payload."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_segment(data | changes)}.{signature}"


def tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{_b64(bytes(raw))}"
