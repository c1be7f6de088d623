"""Accounts and API keys: who may call, with which tier, balance and preferences."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from pixelgate.core.bounds import MAX_CREDITS
from pixelgate.core.ids import new_id
from pixelgate.core.keys import generate_key, hash_key
from pixelgate.core.models import AccountView
from pixelgate.db.base import StoreBase
from pixelgate.db.records import KeyInfo, account_view
from pixelgate.db.tables import Account, ApiKey, LedgerEntry
from pixelgate.errors import Conflict, NotFound, ValidationFailed

__all__ = ["AccountStore", "generate_key", "hash_key"]

ACCOUNT_CACHE_TTL_S = 2.0
ACCOUNT_CACHE_MAX = 10_000
#: the account columns a view needs
_ACCOUNT = select(Account.__table__)
_UPDATABLE = frozenset(
    {
        "tier",
        "daily_budget_usd",
        "preferred_providers",
        "credit_policy",
        "email",
        "webhook_url",
        "disabled",
        "settings",
    }
)


class AccountStore(StoreBase):
    """Accounts, their keys and their routing preferences."""

    async def create_account(
        self,
        name: str,
        *,
        tier: str = "FREE",
        credits: int | None = None,
        actor: str = "system",
        credit_policy: str = "refund",
        email: str | None = None,
    ) -> AccountView:
        if credits is not None and not 0 <= credits <= MAX_CREDITS:
            raise ValidationFailed(
                "credits",
                f"must be between 0 and {MAX_CREDITS}",
                code="balance_out_of_range",
            )
        now = self.clock()
        values: dict[str, Any] = {
            "id": new_id("acct"),
            "name": name,
            "tier": tier.upper(),
            "credits": credits,
            "credit_policy": credit_policy,
            "email": email,
            "preferred_providers": [],
            "settings": {},
            "created_at": now,
        }

        def create(c: Connection) -> AccountView:
            c.execute(insert(Account), values)
            if credits:
                c.execute(
                    insert(LedgerEntry),
                    {
                        "account_id": values["id"],
                        "kind": "grant",
                        "credits": credits,
                        "reason": "initial credits",
                        "actor": actor,
                        "created_at": now,
                    },
                )
            return account_view(c.execute(_ACCOUNT.where(Account.id == values["id"])).one())

        try:
            view: AccountView = await self.write(create)
        except IntegrityError:
            raise Conflict(f"account {name!r} already exists", code="account_exists") from None
        return view

    async def ensure_account(self, name: str) -> AccountView:
        existing = await self.find_account(name)
        if existing is not None:
            return existing
        try:
            return await self.create_account(name, tier="INTERNAL")
        except Conflict:
            found = await self.find_account(name)
            assert found is not None
            return found

    async def find_account(self, name: str) -> AccountView | None:
        row = await self.read(lambda c: c.execute(_ACCOUNT.where(Account.name == name)).first())
        return account_view(row) if row else None

    async def get_account(self, account_id: str) -> AccountView:
        row = await self.read(lambda c: c.execute(_ACCOUNT.where(Account.id == account_id)).first())
        if row is None:
            raise NotFound("account not found")
        return account_view(row)

    async def update_account(
        self, account_id: str, *, keep_an_admin: bool = True, **fields: Any
    ) -> AccountView:
        """Change account settings (tier, budget, preferences, policy, e-mail, webhook…).

        Disabling the last enabled account with an admin key is refused (``last_admin``)
        unless ``keep_an_admin`` is False: the operator on the box may (the CLI).
        """
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValidationFailed(sorted(unknown)[0], "cannot be changed")
        values = {k: v.upper() if k == "tier" else v for k, v in fields.items()}

        def change(c: Connection) -> AccountView:
            if values.get("disabled") is True and keep_an_admin:
                self._refuse_admin_lockout(c, disabling=account_id)
            if values:
                c.execute(update(Account).where(Account.id == account_id).values(**values))
            row = c.execute(_ACCOUNT.where(Account.id == account_id)).first()
            if row is None:
                raise NotFound("account not found")
            return account_view(row)

        self._forget_account(account_id)
        view: AccountView = await self.write(change)
        self._forget_account(account_id)
        return view

    async def get_account_cached(self, account_id: str) -> AccountView:
        """``get_account`` with a short-lived cache, for admission's tier and preferences.

        Money never depends on it: balances and budgets are read inside the admission
        transaction. A change made through this process drops the entry at once. Callers
        that miss at the same moment (thousands of jobs planning at once) share one read.
        """
        hit = self._account_cache.get(account_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return await self._account_loads.get(
            account_id, partial(self.get_account, account_id), partial(self._keep, account_id)
        )

    def peek_account_cached(self, account_id: str) -> AccountView | None:
        """The cached view of the account if it is fresh, else None (no read)."""
        hit = self._account_cache.get(account_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _keep(self, account_id: str, account: AccountView) -> None:
        if len(self._account_cache) > ACCOUNT_CACHE_MAX:
            self._account_cache.clear()
        self._account_cache[account_id] = (time.monotonic() + ACCOUNT_CACHE_TTL_S, account)

    async def list_accounts(self) -> list[AccountView]:
        rows = await self.read(lambda c: c.execute(_ACCOUNT.order_by(Account.created_at)).all())
        return [account_view(r) for r in rows]

    async def account_routing(self, account_id: str) -> tuple[list[str], dict[str, Any]]:
        """An account's preferred providers and the ``routing`` part of its settings."""
        account = await self.get_account_cached(account_id)
        routing = account.settings.get("routing")
        return list(account.preferred_providers), dict(routing) if isinstance(routing, dict) else {}

    async def set_account_routing(self, account_id: str, routing: dict[str, Any] | None) -> None:
        """Replace the ``routing`` part of an account's settings (None removes it)."""

        def change(c: Connection) -> None:
            row = c.execute(select(Account.settings).where(Account.id == account_id)).first()
            if row is None:
                raise NotFound("account not found")
            settings = dict(row[0] or {})
            if routing is None:
                settings.pop("routing", None)
            else:
                settings["routing"] = routing
            c.execute(update(Account).where(Account.id == account_id).values(settings=settings))

        self._forget_account(account_id)
        await self.write(change)
        self._forget_account(account_id)

    # Keys --------------------------------------------------------------------

    async def create_key(
        self,
        account_id: str,
        *,
        is_admin: bool = False,
        name: str | None = None,
        plain: str | None = None,
    ) -> tuple[str, str]:
        """Create a key; returns ``(key_id, plain_key)``. The plain key is never stored."""
        plain = plain or generate_key()
        key_id = new_id("key")
        values = {
            "id": key_id,
            "account_id": account_id,
            "key_hash": hash_key(plain),
            "prefix": plain[:8],
            "name": name,
            "is_admin": is_admin,
            "created_at": self.clock(),
        }

        def create(c: Connection) -> None:
            c.execute(insert(ApiKey), values)

        await self.write(create)
        return key_id, plain

    async def lookup_key(self, key_hash: str) -> KeyInfo | None:
        query = (
            select(ApiKey.id, ApiKey.account_id, Account.name, ApiKey.is_admin)
            .join(Account, Account.id == ApiKey.account_id)
            .where(
                ApiKey.key_hash == key_hash,
                ApiKey.revoked_at.is_(None),
                Account.disabled.is_(False),
            )
        )
        row = await self.read(lambda c: c.execute(query).first())
        if row is None:
            return None
        return KeyInfo(key_id=row[0], account_id=row[1], account_name=row[2], is_admin=row[3])

    async def has_key_hash(self, key_hash: str) -> bool:
        query = select(ApiKey.id).where(ApiKey.key_hash == key_hash)
        return (await self.read(lambda c: c.scalar(query))) is not None

    async def has_admin_key(self) -> bool:
        query = select(ApiKey.id).where(ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None))
        return (await self.read(lambda c: c.scalar(query.limit(1)))) is not None

    async def list_keys(self) -> list[dict[str, Any]]:
        query = (
            select(
                ApiKey.id,
                Account.name,
                ApiKey.prefix,
                ApiKey.is_admin,
                ApiKey.created_at,
                ApiKey.revoked_at,
            )
            .join(Account, Account.id == ApiKey.account_id)
            .order_by(ApiKey.created_at)
        )
        rows = await self.read(lambda c: c.execute(query).all())
        return [
            {
                "id": r[0],
                "account": r[1],
                "prefix": r[2],
                "admin": r[3],
                "created_at": r[4],
                "revoked_at": r[5],
            }
            for r in rows
        ]

    async def revoke_key(self, key_id: str) -> str:
        """Revoke a key; returns its hash so caches can drop it."""
        now = self.clock()

        def revoke(c: Connection) -> str:
            row = c.execute(select(ApiKey.key_hash).where(ApiKey.id == key_id)).first()
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            self._refuse_admin_lockout(c, revoking=key_id)
            c.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return str(row[0])

        result: str = await self.write(revoke)
        return result

    def _refuse_admin_lockout(
        self, c: Connection, *, disabling: str | None = None, revoking: str | None = None
    ) -> None:
        """``Conflict`` (``last_admin``) when disabling an account or revoking a key would
        leave no enabled account with an admin key: every admin route would then answer
        401 and only the operator on the box could recover (``pixelgate accounts enable``).

        Decided in the changing transaction, with the admin keys locked on PostgreSQL
        (SQLite has one writer), so two concurrent requests cannot both pass it.
        """
        query = (
            select(ApiKey.id, ApiKey.account_id)
            .join(Account, Account.id == ApiKey.account_id)
            .where(
                ApiKey.is_admin.is_(True),
                ApiKey.revoked_at.is_(None),
                Account.disabled.is_(False),
            )
        )
        holders = c.execute(query.with_for_update() if self.postgres else query).all()
        remaining = [k for k, acct in holders if k != revoking and acct != disabling]
        if holders and not remaining:
            what = f"disabling account {disabling!r}" if disabling else f"revoking key {revoking!r}"
            raise Conflict(
                f"{what} would leave no enabled account with an admin key; create another "
                "admin key first",
                code="last_admin",
            )
