"""Who may connect: API tokens, staff users and paired wall displays.

Secrets are never stored: tokens and pairing codes as SHA-256 (they are long random strings,
so a fast hash is the right one), passwords with argon2. A `Principal` is what the shells
carry around once a request is authenticated.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import JSON, String, bindparam, exists, func, literal_column, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from whiteboard.board.roles import ASSIGNABLE_ROLES, USER_ROLES
from whiteboard.errors import Conflict, Invalid, NotFound
from whiteboard.store import direct
from whiteboard.store.engine import lost_connection, outside_transaction
from whiteboard.store.tables import displays, sessions, tokens, users, wards
from whiteboard.types import iso_z, now_z, utc_now

TOKEN_PREFIX = "wbt_"  # noqa: S105 - a prefix, not a secret
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,99}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PAIR_MINUTES = 10
MIN_PASSWORD = 12

_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a staff user, an API token or a paired display."""

    kind: str  # "user" | "token" | "display"
    name: str
    role: str
    ward: str | None = None  # displays only: the one ward they may read
    session: str | None = None  # users signed in with a cookie: their server-side session

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise Invalid(
            f"{kind} name: letters, digits and . _ - @ (at most 100), starting with a letter or digit"
        )
    return name


# --- tokens ------------------------------------------------------------------------------------


async def create_token(engine: AsyncEngine, name: str, role: str) -> str:
    check_name("token", name)
    if role not in ASSIGNABLE_ROLES:
        raise Invalid(f"role: one of {', '.join(ASSIGNABLE_ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        if (await conn.execute(select(tokens.c.name).where(tokens.c.name == name))).first():
            raise Conflict(f"a token named {name} exists already; revoke it or choose another name")
        await conn.execute(
            tokens.insert().values(name=name, role=role, token_hash=digest(token), created_at=now_z())
        )
    return token


async def list_tokens(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(tokens.c.name, tokens.c.role, tokens.c.created_at, tokens.c.revoked_at)
        )
        return [dict(r._mapping) for r in result]


async def revoke_token(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(tokens)
            .where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now_z())
        )
        if result.rowcount == 0:
            raise NotFound(f"no live token named {name}")


#: Every request with a bearer token runs this, so it is built once and run on the driver's
#: cursor, outside a transaction: a revoked token is refused at once, never from a cache. (A
#: bed or stay edit with a token the process has seen checks it in its own write instead.)
LIVE_TOKEN = select(tokens.c.name, tokens.c.role).where(
    tokens.c.token_hash == bindparam("hash"), tokens.c.revoked_at.is_(None)
)


async def token_principal(engine: AsyncEngine, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await _live_token(engine, digest(token))
    return None if row is None else Principal("token", row[0], row[1])


async def token_live(engine: AsyncEngine, token_digest: str) -> bool:
    """Whether the token with this digest is known and not revoked."""
    return await _live_token(engine, token_digest) is not None


async def _live_token(engine: AsyncEngine, token_digest: str) -> tuple[Any, ...] | None:
    """(name, role) of the live token with this digest, or None."""

    async def read() -> tuple[Any, ...] | None:
        async with engine.connect() as conn:
            conn = await outside_transaction(conn)
            return (await conn.run_sync(direct.run, LIVE_TOKEN, {"hash": token_digest})).first()

    try:
        return await read()
    except Exception as error:  # a read: once more on a fresh connection if this one was dead
        if not lost_connection(error):
            raise
    return await read()


# --- users -------------------------------------------------------------------------------------


async def add_user(engine: AsyncEngine, username: str, role: str, password: str) -> bool:
    """Create or reset a user (new password and role, enabled again). True when newly created."""
    check_name("user", username)
    if role not in USER_ROLES:
        raise Invalid(f"role: one of {', '.join(USER_ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password: at least {MIN_PASSWORD} characters")
    hashed = _hasher.hash(password)
    async with engine.begin() as conn:
        row = (await conn.execute(select(users.c.session_epoch).where(users.c.username == username))).first()
        if row is None:
            await conn.execute(
                users.insert().values(
                    username=username,
                    role=role,
                    password_hash=hashed,
                    enabled=True,
                    created_at=now_z(),
                    session_epoch=0,
                )
            )
            return True
        await conn.execute(
            update(users)
            .where(users.c.username == username)
            .values(role=role, password_hash=hashed, enabled=True, session_epoch=row.session_epoch + 1)
        )
        return False


async def disable_user(engine: AsyncEngine, username: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(users)
            .where(users.c.username == username)
            .values(enabled=False, session_epoch=users.c.session_epoch + 1)
        )
        if result.rowcount == 0:
            raise NotFound(f"no user named {username}")
        await conn.execute(
            update(sessions)
            .where(sessions.c.username == username, sessions.c.ended_at.is_(None))
            .values(ended_at=now_z())
        )


async def check_password(engine: AsyncEngine, username: str, password: str) -> tuple[Principal, int] | None:
    """The user and their session epoch when the password is right and the user enabled."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).first()
    if row is None:
        _hasher.hash(password)  # spend the same time as a real check: no user enumeration by timing
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if not row.enabled:
        return None
    return Principal("user", row.username, row.role), int(row.session_epoch)


async def user_session(engine: AsyncEngine, username: str, epoch: int) -> Principal | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).first()
    if row is None or not row.enabled or int(row.session_epoch) != epoch:
        return None
    return Principal("user", row.username, row.role)


# --- staff sessions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle: timedelta = timedelta(minutes=15)
    absolute: timedelta = timedelta(hours=12)
    #: How stale `last_seen_at` may get before a request writes it again (saves a write per hit).
    touch_every: timedelta = timedelta(seconds=30)


async def start_session(engine: AsyncEngine, username: str) -> str:
    session_id = secrets.token_urlsafe(32)
    now = now_z()
    async with engine.begin() as conn:
        await conn.execute(
            sessions.insert().values(id=session_id, username=username, created_at=now, last_seen_at=now)
        )
    return session_id


def _live_session(limits: SessionLimits) -> Any:
    now = utc_now()
    return _session_live_since(iso_z(now - limits.idle), iso_z(now - limits.absolute))


def _session_live_since(seen_since: Any, created_since: Any) -> Any:
    """A session not ended, seen since `seen_since` and made since `created_since`."""
    return (
        sessions.c.ended_at.is_(None)
        & (sessions.c.last_seen_at > seen_since)
        & (sessions.c.created_at > created_since)
    )


async def session_principal(
    engine: AsyncEngine, session_id: str, limits: SessionLimits
) -> tuple[Principal, str] | None:
    """The signed-in user and when they were last seen, while the session is live and the
    user enabled."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(users.c.username, users.c.role, sessions.c.last_seen_at)
                .join(users, users.c.username == sessions.c.username)
                .where(sessions.c.id == session_id, users.c.enabled, _live_session(limits))
            )
        ).first()
    if row is None:
        return None
    return Principal("user", row.username, row.role, session=session_id), row.last_seen_at


async def touch_session(engine: AsyncEngine, session_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(sessions).where(sessions.c.id == session_id).values(last_seen_at=now_z()))


async def end_session(engine: AsyncEngine, session_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.ended_at.is_(None))
            .values(ended_at=now_z())
        )


# --- wall displays -----------------------------------------------------------------------------


def normalise_pair_code(code: str) -> str:
    """Crockford base32, case-insensitive, spaces and hyphens ignored (O->0, I/L->1 as Crockford says)."""
    cleaned = re.sub(r"[\s\-]", "", code).upper().translate(str.maketrans("OIL", "011"))
    return cleaned


async def add_display(engine: AsyncEngine, ward: str, name: str | None) -> tuple[str, str]:
    """A new display for `ward`; returns (display id, one-time pairing code)."""
    display_id = "d" + secrets.token_hex(6)
    code = "".join(secrets.choice(CROCKFORD) for _ in range(8))
    now = utc_now()
    async with engine.begin() as conn:
        if (await conn.execute(select(wards.c.code).where(wards.c.code == ward))).first() is None:
            raise NotFound(f"ward {ward} is not known")
        await conn.execute(
            displays.insert().values(
                id=display_id,
                ward_code=ward,
                name=name or f"{ward} wall",
                pair_code_hash=digest(code),
                pair_expires_at=iso_z(now + timedelta(minutes=PAIR_MINUTES)),
                created_at=iso_z(now),
            )
        )
    return display_id, code


async def list_displays(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(displays).order_by(displays.c.ward_code, displays.c.created_at))
        return [dict(r._mapping) for r in result]


async def revoke_display(engine: AsyncEngine, display_id: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(displays)
            .where(displays.c.id == display_id, displays.c.revoked_at.is_(None))
            .values(revoked_at=now_z(), pair_code_hash=None)
        )
        if result.rowcount == 0:
            raise NotFound(f"no live display with id {display_id}")


async def pair_display(engine: AsyncEngine, code: str) -> Principal | None:
    """Spend a pairing code: the display it names, once, within its 10 minutes."""
    hashed = digest(normalise_pair_code(code))
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(displays).where(displays.c.pair_code_hash == hashed, displays.c.revoked_at.is_(None))
            )
        ).first()
        if row is None or row.pair_expires_at < now_z():
            return None
        await conn.execute(
            update(displays).where(displays.c.id == row.id).values(pair_code_hash=None, paired_at=now_z())
        )
    return Principal("display", row.id, "display", ward=row.ward_code)


async def display_principal(engine: AsyncEngine, display_id: str) -> Principal | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(displays.c.id, displays.c.ward_code).where(
                    displays.c.id == display_id,
                    displays.c.revoked_at.is_(None),
                    displays.c.paired_at.is_not(None),
                )
            )
        ).first()
    return None if row is None else Principal("display", row.id, "display", ward=row.ward_code)


async def revoked(
    engine: AsyncEngine, principals: Collection[Principal], limits: SessionLimits | None = None
) -> set[Principal]:
    """Those of `principals` no longer allowed in: a revoked token or display, a disabled user,
    a session signed out, idled out or past its absolute limit."""
    asked: dict[str, set[str]] = {kind: set() for kind in ASKED_KINDS}
    for p in principals:
        if p.kind in asked:
            asked[p.kind].add(p.name)
        if p.session:
            asked["session"].add(p.session)
    limits = limits or SessionLimits()
    now = utc_now()
    params: dict[str, Any] = {kind: list(names) for kind, names in asked.items()}
    params["idle_since"] = iso_z(now - limits.idle)
    params["created_since"] = iso_z(now - limits.absolute)
    async with engine.connect() as conn:
        # One statement sees one snapshot: no transaction needed (on PostgreSQL, none is begun).
        conn = await outside_transaction(conn)
        rows = await conn.run_sync(direct.run, no_longer_allowed(engine.dialect.name), params)
    gone: dict[str, set[str]] = {kind: set() for kind in ASKED_KINDS}
    for kind, name in rows:
        gone[kind].add(name)
    return {
        p
        for p in principals
        if p.kind not in PRINCIPAL_KINDS
        or p.name in gone[p.kind]
        or (p.session and p.session in gone["session"])
    }


PRINCIPAL_KINDS = ("token", "user", "display")
#: What `no_longer_allowed` is asked about, each kind's names (or ids) bound as one JSON list.
ASKED_KINDS = (*PRINCIPAL_KINDS, "session")


@cache
def no_longer_allowed(dialect_name: str) -> Executable:
    """(kind, name) of those of the given tokens, users, displays and sessions no longer
    allowed in: revoked, disabled, ended, expired, or never known.

    One statement, one round trip, whatever the number of names: each kind's names are bound
    as one JSON list, read back as rows (json_array_elements_text on PostgreSQL, json_each on
    SQLite). An IN list with a parameter per name is written out again for every execution,
    and on PostgreSQL each length is a prepared statement of its own; the hub asks this every
    second. It answers with those gone, not those still allowed: nearly always none, so
    nearly nothing comes back to decode.

    The list is joined to its table (an anti-join) rather than tested with `= ANY(:array)`:
    PostgreSQL soon settles on a generic plan for a prepared statement, and in a plan that
    cannot know the array, `= ANY` searches it linearly for every row (12 ms for 1,875 names,
    against ~2 ms joined). A JSON text is also cheaper for asyncpg to send than an array.
    """

    def listed(kind: str) -> Any:
        names = bindparam(kind, type_=JSON)
        if dialect_name == "postgresql":
            return func.json_array_elements_text(names).table_valued("value").render_derived()
        return func.json_each(names).table_valued("value")

    def unmatched(kind: str, key: Any, *allowed: Any) -> Any:
        names = listed(kind)
        return select(literal_column(f"'{kind}'", String).label("kind"), names.c.value.label("name")).where(
            ~exists().where(key == names.c.value, *allowed)
        )

    return union_all(
        unmatched("token", tokens.c.name, tokens.c.revoked_at.is_(None)),
        unmatched("user", users.c.username, users.c.enabled),
        unmatched("display", displays.c.id, displays.c.revoked_at.is_(None)),
        unmatched(
            "session", sessions.c.id, _session_live_since(bindparam("idle_since"), bindparam("created_since"))
        ),
    )
