"""Users and API keys as the admin API, the self-service API and the CLI
change them: validated inputs, hashed passwords, and an invalidation published
after every change that could let a cached credential do more than it may.

The input models are the one place where account fields are validated; the
HTTP routes take them as request bodies and the CLI builds them from its
arguments, so both refuse the same things with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.auth.passwords import MAX_LENGTH as PASSWORD_MAX
from llm_gateway.auth.passwords import MIN_LENGTH as PASSWORD_MIN
from llm_gateway.auth.passwords import hash_password
from llm_gateway.billing.pricing import format_usd
from llm_gateway.db import keys as key_repo
from llm_gateway.db import users as user_repo
from llm_gateway.db.models import ApiKey, User
from llm_gateway.db.types import utcnow
from llm_gateway.errors import InvalidRequest, NotFound, PermissionDenied

# rpm and tpm are INTEGER columns (2**31 - 1); a round bound below that,
# far above any real limit, keeps every sum of them inside 64 bits too.
MAX_PER_MINUTE = 1_000_000_000
MAX_EMAIL = 320
MAX_NAME = 200
MAX_MODELS = 1000
# Money is a BIGINT of nano-dollars (at most ~9.2e9 USD); one amount a client
# sends is at most 1e9 USD, so that a sum of two never leaves 64 bits.
MAX_AMOUNT_USD = Decimal(1_000_000_000)
MAX_BUDGET_USD = MAX_AMOUNT_USD
MAX_ID = 64
# What ``valid_email`` accepts, for the OpenAPI document and a first check: one
# "@", something either side, no spaces or control characters (spaces around
# the address are trimmed).
EMAIL_PATTERN = r"^\s*[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\s*$"
# What an address may not hold: exactly what EMAIL_PATTERN (the documented rule) refuses.
_EMAIL_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


class Invalidator(Protocol):
    """Tells every gateway process to forget a cached key or user
    (``auth.invalidation.InvalidationBus``, or the CLI's Redis publisher)."""

    async def publish_key(self, key_hash: str) -> None: ...

    async def publish_user(self, user_id: str) -> None: ...


# ---------------------------------------------------------------- validation


def storable(value: str) -> str:
    """PostgreSQL refuses NUL in text and nobody can encode a lone surrogate:
    refuse both here (400) rather than fail in the driver (500)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def valid_email(value: str) -> str:
    """The one check of an email address, wherever one comes from (the admin
    API, the CLI, an identity provider's token); ``ValueError`` says why not."""
    value = storable(value).strip()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain:
        raise ValueError("must be an email address like name@example.com")
    if _EMAIL_BAD_CHAR.search(value):
        raise ValueError("must not contain spaces or control characters")
    if len(value) > MAX_EMAIL:
        raise ValueError(f"must be at most {MAX_EMAIL} characters")
    return value


def decimal_text(value: Any) -> Any:
    """An amount of USD as JSON sends it: a decimal string of ASCII digits
    (``Decimal`` alone would take "١٢" as 12, "1e3" or "NaN"), or a JSON
    number; never a boolean (which would pass as 1)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError('must be an amount of USD as a decimal string, such as "10.00"')
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(DECIMAL_PATTERN, value, flags=re.ASCII):
            raise ValueError('must be a decimal number of ASCII digits, such as "10.00"')
    elif isinstance(value, float) and not value.is_integer():
        # A binary float is not an amount of money: 0.1 is not 0.1.
        raise ValueError('must be a decimal string such as "10.25" (a JSON number must be a whole number)')
    return value


def _model_name(value: str) -> str:
    if not storable(value).strip():
        raise ValueError("model names must not be blank")
    return value


def _text(value: str) -> str:
    return storable(value)


Email = Annotated[str, Field(strict=True, min_length=3, max_length=MAX_EMAIL, pattern=EMAIL_PATTERN),
                  AfterValidator(valid_email)]
Password = Annotated[str, Field(strict=True, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX),
                     AfterValidator(_text)]
KeyName = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME), AfterValidator(_text)]
def _whole_number(value: Any) -> Any:
    """JSON has one number type: 60.0 is the integer 60 (as JSON Schema
    says), while "60", true or 60.5 stay refused by the strict int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PerMinute = Annotated[int, Field(strict=True, ge=1, le=MAX_PER_MINUTE), BeforeValidator(_whole_number)]
ModelName = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME), AfterValidator(_model_name)]
ModelList = Annotated[list[ModelName], Field(max_length=MAX_MODELS)]
Role = Literal["user", "admin"]
BudgetPeriod = Literal["day", "month"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(_Input):
    """``POST /admin/users`` and ``llm-gateway users create``."""

    email: Email
    password: Password | None = None
    role: Role = "user"
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    allowed_models: ModelList | None = None


class UserChanges(_Input):
    """``PATCH /admin/users/{id}``: only the fields sent change. ``null``
    clears ``rpm``, ``tpm``, ``allowed_models`` and ``password`` (no password
    login); ``email``, ``role`` and ``is_active`` cannot be null."""

    email: Email | None = None
    password: Password | None = None
    role: Role | None = None
    is_active: StrictBool | None = None
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    allowed_models: ModelList | None = None

    @field_validator("email", "role", "is_active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


class NewKey(_Input):
    """``POST /admin/users/{id}/keys``, ``POST /me/keys`` and ``llm-gateway keys create``."""

    name: KeyName
    allowed_models: ModelList | None = None
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    budget_usd: Annotated[Decimal, BeforeValidator(decimal_text),
                          Field(gt=0, le=MAX_BUDGET_USD, decimal_places=9, allow_inf_nan=False)] | None = None
    budget_period: BudgetPeriod | None = None
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value <= utcnow():
            raise ValueError("must be in the future")
        return value

    @model_validator(mode="after")
    def _budget_has_period(self) -> NewKey:
        if self.budget_usd is not None and self.budget_period is None:
            raise ValueError("budget_period ('day' or 'month') is required with budget_usd")
        if self.budget_period is not None and self.budget_usd is None:
            raise ValueError("budget_period needs budget_usd")
        return self


def plausible_id(value: str) -> bool:
    """Ids are short ASCII; anything else cannot exist, so it is not worth a
    query (and NUL would make PostgreSQL fail)."""
    return 0 < len(value) <= MAX_ID and value.isascii() and value.isprintable()


def check_after(after: str | None) -> str | None:
    if after is not None and not plausible_id(after):
        raise InvalidRequest("after: must be the id of the last item of the previous page.",
                             code="invalid_value", param="after")
    return after or None


# ---------------------------------------------------------------- users


async def create_user(session: AsyncSession, spec: NewUser) -> User:
    """409 ``email_taken`` when the email exists in any case."""
    password_hash = await hash_password(spec.password) if spec.password is not None else None
    return await user_repo.create_user(
        session, email=spec.email, password_hash=password_hash, role=spec.role, rpm=spec.rpm, tpm=spec.tpm,
        allowed_models=spec.allowed_models,
    )


async def update_user(session: AsyncSession, bus: Invalidator, user: User, spec: UserChanges) -> User:
    changes: dict[str, Any] = {name: getattr(spec, name) for name in spec.model_fields_set}
    if "password" in changes:
        password = changes.pop("password")
        changes["password_hash"] = await hash_password(password) if password is not None else None
    if changes:
        user = await user_repo.update_user(session, user, changes)
    # Role, limits, models or the account's state may have changed: every
    # cached credential of this user must be read again.
    await bus.publish_user(user.id)
    return user


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await user_repo.get_user(session, user_id) if plausible_id(user_id) else None
    if user is None:
        raise NotFound(f"No user with id {user_id!r}.", code="user_not_found", param="id")
    return user


async def find_user(session: AsyncSession, ref: str) -> User:
    """A user by id, else by email (any case)."""
    user = await user_repo.get_user(session, ref) if plausible_id(ref) else None
    if user is None and "@" in ref:
        user = await user_repo.get_by_email(session, ref)
    if user is None:
        raise NotFound(f"No user with id or email {ref!r}.", code="user_not_found")
    return user


async def list_users(session: AsyncSession, limit: int, after: str | None) -> tuple[Sequence[User], bool]:
    return await user_repo.list_users(session, limit, check_after(after))


# ---------------------------------------------------------------- keys


def narrow_models(
    requested: list[str] | None, user_models: list[str] | None, caller_key_models: list[str] | None
) -> list[str] | None:
    """The ``allowed_models`` of a key a user makes for themselves: never more
    than the caller may use now. A key may name only models the user (and, when
    the caller is itself a key, that key) may use; a key that names none
    inherits the calling key's list, so a narrow key cannot mint a wider one."""
    if requested is None:
        return list(caller_key_models) if caller_key_models is not None else None
    for ceiling in (user_models, caller_key_models):
        if ceiling is None:
            continue
        outside = sorted(set(requested) - set(ceiling))
        if outside:
            raise PermissionDenied(
                f"You are not allowed to use the model '{outside[0]}', so a key cannot allow it.",
                code="model_not_allowed", param="allowed_models",
            )
    return requested


def _wider(param: str, why: str) -> PermissionDenied:
    return PermissionDenied(f"{why}, so a key it makes cannot allow more.", code="exceeds_calling_key", param=param)


def within_calling_key(spec: NewKey, caller: ApiKey, budgets: Sequence[key_repo.Budget]) -> NewKey:
    """A key that a key makes (``POST /me/keys``) may narrow its maker's
    restrictions, never widen them; what it leaves out, it inherits. Else 403
    naming the field. ``budgets``: those the maker's spend counts against.

    The budget is not copied: the new key shares the maker's (``budget_key_id``,
    set by ``create_key``), so that every key a key makes spends from the
    same budget. A budget asked for is the new key's own, narrower one,
    checked too: in the maker's period and at most the maker's budget."""
    changes: dict[str, Any] = {}
    for field, unit in (("rpm", "requests"), ("tpm", "tokens")):
        ceiling, asked = getattr(caller, field), getattr(spec, field)
        if ceiling is None:
            continue
        if asked is None:
            changes[field] = ceiling
        elif asked > ceiling:
            raise _wider(field, f"The calling key may use at most {ceiling} {unit} a minute")
    if caller.expires_at is not None:
        if spec.expires_at is None:
            changes["expires_at"] = caller.expires_at
        elif spec.expires_at > caller.expires_at:
            raise _wider("expires_at", f"The calling key expires at {caller.expires_at.isoformat()}")
    if budgets and spec.budget_usd is not None:
        tightest = min(budgets, key=lambda b: b.budget_usd)
        if spec.budget_period != tightest.period:
            raise _wider("budget_period", f"The calling key's budget is per {tightest.period}")
        if spec.budget_usd > tightest.budget_usd:
            raise _wider("budget_usd", f"The calling key may spend at most {format_usd(tightest.budget_usd)} "
                                       f"USD a {tightest.period}")
        if len(budgets) >= key_repo.MAX_BUDGETS:
            raise InvalidRequest(
                f"The calling key already counts against {len(budgets)} budgets, the most a key may: leave out "
                "budget_usd and budget_period to share its budget.", code="invalid_value", param="budget_usd")
    return spec.model_copy(update=changes)


def shared_budget_key(caller: ApiKey) -> str | None:
    """The key whose budget a key made by ``caller`` shares: the caller, if it
    has a budget, else the one the caller shares."""
    return caller.id if caller.budget_usd is not None else caller.budget_key_id


async def narrow_for_caller(
    session: AsyncSession, spec: NewKey, user: User, caller_key_id: str | None
) -> tuple[NewKey, str | None]:
    """The key a user asks for themselves: within the user's models and, when
    the caller is an API key, within that key's restrictions; and the key
    whose budget it shares (``budget_key_id``). A caller signed in with a
    token (not a key) has no key restrictions to pass on."""
    caller = await key_repo.get_key(session, caller_key_id) if caller_key_id is not None else None
    models = narrow_models(spec.allowed_models, user.allowed_models,
                           caller.allowed_models if caller is not None else None)
    spec = spec.model_copy(update={"allowed_models": models})
    if caller is None:
        return spec, None
    budgets = await key_repo.budget_chain(session, caller.id) if shared_budget_key(caller) is not None else []
    return within_calling_key(spec, caller, budgets), shared_budget_key(caller)


async def create_key(
    session: AsyncSession, user: User, spec: NewKey, *, budget_key_id: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for ``user`` and its plaintext, which is shown only once.
    ``budget_key_id``: the key whose budget its spend also counts against."""
    return await key_repo.create_key(
        session, user_id=user.id, name=spec.name, allowed_models=spec.allowed_models,
        rpm=spec.rpm, tpm=spec.tpm, budget_usd=spec.budget_usd, budget_period=spec.budget_period,
        expires_at=spec.expires_at, budget_key_id=budget_key_id,
    )


async def get_key(session: AsyncSession, key_id: str, *, user_id: str | None = None) -> ApiKey:
    """The key; 404 when unknown or, with ``user_id``, owned by someone else
    (a caller learns nothing about other users' keys)."""
    key = await key_repo.get_key(session, key_id) if plausible_id(key_id) else None
    if key is None or (user_id is not None and key.user_id != user_id):
        raise NotFound(f"No API key with id {key_id!r}.", code="key_not_found", param="id")
    return key


async def list_keys(
    session: AsyncSession, user_id: str | None, limit: int, after: str | None
) -> tuple[Sequence[ApiKey], bool]:
    return await key_repo.list_keys(session, user_id, limit, check_after(after))


async def revoke_key(session: AsyncSession, bus: Invalidator, key: ApiKey) -> ApiKey:
    """Idempotent; the first revocation time stays. Every process forgets the
    key at once (this one directly, others through the bus)."""
    key = await key_repo.revoke(session, key)
    await bus.publish_key(key.key_hash)
    return key
