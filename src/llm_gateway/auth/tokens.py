"""The gateway's own JWTs: HS256 access tokens signed with the UTF-8 bytes of
``auth.jwt_secret`` (SPEC §8), carrying ``sub``, ``role``, ``iat``, ``exp``."""

from __future__ import annotations

import time
from typing import Any

import jwt

from llm_gateway.errors import AuthenticationFailed

ISSUER = "llm-gateway"


class TokenService:
    def __init__(self, secret: str, access_ttl_s: int) -> None:
        self._key = secret.encode("utf-8")
        self.access_ttl_s = access_ttl_s

    def issue_access(self, user_id: str, role: str) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "role": role, "typ": "access", "iss": ISSUER, "iat": now,
                  "exp": now + self.access_ttl_s}
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify_access(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=["HS256"], issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("The access token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("The access token is invalid.", code="invalid_api_key") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
            raise AuthenticationFailed("The access token is invalid.", code="invalid_api_key")
        return claims
