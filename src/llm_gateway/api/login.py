"""Sign-in: ``POST /auth/login``, ``POST /auth/refresh`` and, when
``auth.allow_signup`` is on, ``POST /auth/signup``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from llm_gateway.accounts import EMAIL_PATTERN, MAX_EMAIL, Email
from llm_gateway.api.deps import Gateway, Session
from llm_gateway.api.responses import json_response
from llm_gateway.auth.passwords import MAX_LENGTH, MIN_LENGTH, hash_password, verify_password
from llm_gateway.db import refresh as refresh_repo
from llm_gateway.db import users as user_repo
from llm_gateway.db.models import User
from llm_gateway.errors import AuthenticationFailed, PermissionDenied
from llm_gateway.state import GatewayState

router = APIRouter(prefix="/auth", tags=["Sign-in"])

# Signing in looks an address up, so only its shape is checked; signing up
# creates an account, so the address is checked as the admin API checks it.
LoginEmail = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL, pattern=EMAIL_PATTERN)]


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: LoginEmail
    password: Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    password: Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)]


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


async def _tokens(gw: GatewayState, session: Session, user: User, status: int = 200) -> Response:
    access = gw.auth.tokens.issue_access(user.id, user.role)
    refresh = await refresh_repo.issue(session, user.id, gw.settings.auth.refresh_ttl_s)
    body = TokenResponse(access_token=access, refresh_token=refresh, expires_in=gw.auth.tokens.access_ttl_s)
    return json_response(body.model_dump(), status=status, headers={"cache-control": "no-store"})


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login", summary="Exchange email and password for tokens", response_model=TokenResponse)
async def login(body: LoginRequest, request: Request, gw: Gateway, session: Session) -> Response:
    email = user_repo.normalise_email(body.email)
    ip = _client_ip(request)
    await gw.throttle.check(email, ip)
    user = await user_repo.get_by_email(session, email)
    ok = await verify_password(user.password_hash if user else None, body.password)
    if not ok or user is None or not user.is_active:
        await gw.throttle.failed(email, ip)
        raise AuthenticationFailed("Incorrect email or password.", code="invalid_api_key")
    await gw.throttle.succeeded(email)
    return await _tokens(gw, session, user)


@router.post("/refresh", summary="Rotate a refresh token for new tokens", response_model=TokenResponse)
async def refresh(body: RefreshRequest, gw: Gateway, session: Session) -> Response:
    user, new_refresh = await refresh_repo.rotate(session, body.refresh_token, gw.settings.auth.refresh_ttl_s)
    access = gw.auth.tokens.issue_access(user.id, user.role)
    out = TokenResponse(access_token=access, refresh_token=new_refresh, expires_in=gw.auth.tokens.access_ttl_s)
    return json_response(out.model_dump(), headers={"cache-control": "no-store"})


@router.post("/signup", summary="Create an account (when auth.allow_signup is on)", status_code=201,
             response_model=TokenResponse)
async def signup(body: SignupRequest, gw: Gateway, session: Session) -> Response:
    if not gw.settings.auth.allow_signup:
        raise PermissionDenied("Sign-up is disabled on this gateway.", code="signup_disabled")
    user = await user_repo.create_user(session, email=body.email, password_hash=await hash_password(body.password))
    return await _tokens(gw, session, user, status=201)
