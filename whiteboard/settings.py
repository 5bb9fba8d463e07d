"""Settings, read once from the environment. Every setting is listed here with its help text;
`docs/configuration.md` lists the same names and a test keeps the two in step."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from whiteboard.store.accounts import SessionLimits

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///whiteboard.db"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "WHITEBOARD_DATABASE_URL",
        "The store of record. SQLite (embedded default) or postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DB.",
        DEFAULT_DATABASE_URL,
    ),
    Setting(
        "WHITEBOARD_REDIS_URL",
        "Redis for fanout between server processes (redis://HOST:PORT/DB). Unset: in-process.",
    ),
    Setting(
        "WHITEBOARD_SECRET_KEY",
        "Signs session and display cookies. Unset: made once and kept beside the SQLite database; "
        "required when WHITEBOARD_REDIS_URL is set (every process must share it).",
    ),
    Setting(
        "WHITEBOARD_ALLOWED_ORIGINS",
        "Comma-separated exact origins (scheme://host[:port]) allowed to open sockets. "
        "Unset: the server's own.",
    ),
    Setting(
        "WHITEBOARD_MLLP_PORT", "TCP port for the HL7 v2 MLLP listener on the --host interface. Unset: none."
    ),
    Setting(
        "WHITEBOARD_TRUSTED_PROXIES",
        "Comma-separated proxy addresses whose X-Forwarded-For/-Proto/-Host headers are believed.",
    ),
    Setting(
        "WHITEBOARD_REDIS_PREFIX",
        "Name-space for Redis channels, so deployments can share a Redis.",
        "whiteboard",
    ),
    Setting("WHITEBOARD_LOG_LEVEL", "Logging level: DEBUG, INFO, WARNING, ERROR.", "INFO"),
    Setting(
        "WHITEBOARD_WS_QUEUE_LIMIT",
        "Frames a socket may have waiting before it is closed 1013 as too slow (it resumes with since).",
        "256",
    ),
    Setting(
        "WHITEBOARD_SESSION_IDLE_MINUTES",
        "Minutes without activity after which a staff session ends (its sockets close).",
        "15",
    ),
    Setting(
        "WHITEBOARD_SESSION_MAX_HOURS",
        "Hours after sign-in after which a staff session ends, active or not.",
        "12",
    ),
    Setting(
        "WHITEBOARD_WRITE_RATE",
        "API writes a second allowed to one token or user (bursts of five times that); more get 429.",
        "100",
    ),
    Setting(
        "WHITEBOARD_VERIFY_BOARD_CACHE",
        "1 to check every cached board against a fresh read of the store before a write (the test "
        "suite runs this way; it costs a full board read per write).",
        "0",
    ),
)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    secret_key: str = ""
    allowed_origins: tuple[str, ...] = ()
    mllp_port: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    redis_prefix: str = "whiteboard"
    log_level: str = "INFO"
    heartbeat_seconds: float = 5.0
    catch_up_seconds: float = 0.5
    queue_limit: int = 256
    verify_board_cache: bool = False
    session_idle_minutes: int = 15
    session_max_hours: int = 12
    write_rate: int = 100
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def session_limits(self) -> SessionLimits:
        return SessionLimits(
            idle=timedelta(minutes=self.session_idle_minutes),
            absolute=timedelta(hours=self.session_max_hours),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip().rstrip("/") for v in (value or "").split(",") if v.strip())


def load(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    url = env.get("WHITEBOARD_DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise SettingsError(f"WHITEBOARD_DATABASE_URL is not a database URL: {exc}") from None
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError("WHITEBOARD_DATABASE_URL must be sqlite+aiosqlite://… or postgresql+asyncpg://…")
    redis_url = env.get("WHITEBOARD_REDIS_URL") or None
    secret = env.get("WHITEBOARD_SECRET_KEY") or ""
    if not secret:
        if redis_url:
            raise SettingsError(
                "WHITEBOARD_SECRET_KEY must be set when WHITEBOARD_REDIS_URL is (all processes share it)"
            )
        secret = _kept_secret(url)
    elif len(secret) < 32:
        raise SettingsError("WHITEBOARD_SECRET_KEY must be at least 32 characters")
    mllp = env.get("WHITEBOARD_MLLP_PORT") or None
    if mllp is not None and (not mllp.isdigit() or not 0 <= int(mllp) <= 65535):
        raise SettingsError("WHITEBOARD_MLLP_PORT must be a TCP port number")
    for origin in _csv(env.get("WHITEBOARD_ALLOWED_ORIGINS")):
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise SettingsError(f"WHITEBOARD_ALLOWED_ORIGINS: {origin!r} is not scheme://host[:port]")
    return Settings(
        database_url=url,
        redis_url=redis_url,
        secret_key=secret,
        allowed_origins=_csv(env.get("WHITEBOARD_ALLOWED_ORIGINS")),
        mllp_port=None if mllp is None else int(mllp),
        trusted_proxies=_csv(env.get("WHITEBOARD_TRUSTED_PROXIES")),
        redis_prefix=env.get("WHITEBOARD_REDIS_PREFIX") or "whiteboard",
        log_level=(env.get("WHITEBOARD_LOG_LEVEL") or "INFO").upper(),
        queue_limit=_positive_int(env, "WHITEBOARD_WS_QUEUE_LIMIT", 256),
        verify_board_cache=_flag(env, "WHITEBOARD_VERIFY_BOARD_CACHE"),
        session_idle_minutes=_positive_int(env, "WHITEBOARD_SESSION_IDLE_MINUTES", 15),
        session_max_hours=_positive_int(env, "WHITEBOARD_SESSION_MAX_HOURS", 12),
        write_rate=_positive_int(env, "WHITEBOARD_WRITE_RATE", 100),
    )


def _flag(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "0").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise SettingsError(f"{name} must be 1 or 0")
    return raw in ("1", "true", "yes")


def _positive_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name} must be a positive whole number")
    return int(raw)


def _kept_secret(database_url: str) -> str:
    """A random key made once and kept beside the SQLite database (0600)."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise SettingsError("WHITEBOARD_SECRET_KEY must be set for this database")
    path = Path(parsed.database).resolve().with_suffix(".secret")
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key
