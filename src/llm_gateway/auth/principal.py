"""The authenticated caller, as every later step sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from llm_gateway.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Principal:
    """``kind``: ``master`` (the master key: admin, charged to nobody),
    ``key`` (a user's API key) or ``user`` (a JWT). ``allowed_models`` is the
    intersection of the user's and the key's lists; ``None`` allows all.

    ``budget_usd`` is the key's own budget; ``shared_budgets`` are the
    budgets of the keys it was minted from, as (key id, USD), nearest first,
    which its spend counts against too; ``budget_period`` is the period of
    all of them (a minted key's budget is always in its maker's period)."""

    kind: Literal["master", "key", "user"]
    role: Literal["admin", "user"]
    user_id: str | None = None
    key_id: str | None = None
    email: str | None = None
    allowed_models: frozenset[str] | None = None
    user_rpm: int | None = None
    user_tpm: int | None = None
    key_rpm: int | None = None
    key_tpm: int | None = None
    budget_usd: Decimal | None = None
    budget_period: str | None = None
    shared_budgets: tuple[tuple[str, Decimal], ...] = ()
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise PermissionDenied(
                f"You are not allowed to use the model '{model}'.", code="model_not_allowed", param="model"
            )


MASTER = Principal(kind="master", role="admin")


def allowed(user_list: list[str] | None, key_list: list[str] | None) -> frozenset[str] | None:
    if user_list is None and key_list is None:
        return None
    if user_list is None:
        return frozenset(key_list or ())
    if key_list is None:
        return frozenset(user_list)
    return frozenset(user_list) & frozenset(key_list)
