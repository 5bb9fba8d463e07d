"""The `whiteboard` command: serve, demo, migrations, layout, tokens, users and wall displays.

Every subcommand that fails says why on stderr and exits non-zero; nothing half-done is left.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from whiteboard.errors import WhiteboardError
from whiteboard.settings import Settings, SettingsError, load

EXIT_FAILED = 1


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load()
    except SettingsError as exc:
        fail(str(exc))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace, Settings], Any] = args.handler
    try:
        result = handler(args, settings)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except WhiteboardError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass


def fail(message: str) -> None:
    print(f"whiteboard: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whiteboard", description="The real-time ward whiteboard.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text, handler in (
        ("serve", "run the server (applies pending migrations first)", cmd_serve),
        ("demo", "run the server with a seeded demo hospital and a simulated ADT feed", cmd_demo),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
        p.set_defaults(handler=handler)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(handler=cmd_db_upgrade)

    layout = sub.add_parser("layout", help="sites, wards and beds").add_subparsers(
        dest="action", required=True
    )
    p = layout.add_parser("load", help="load (or update) a layout JSON file")
    p.add_argument("file", type=Path)
    p.set_defaults(handler=cmd_layout_load)

    token = sub.add_parser("token", help="API bearer tokens").add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="create a token; it is printed once, on the last line")
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True)
    p.set_defaults(handler=cmd_token_create)
    token.add_parser("list", help="list tokens (never their secrets)").set_defaults(handler=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token; its sockets close")
    p.add_argument("name")
    p.set_defaults(handler=cmd_token_revoke)

    user = sub.add_parser("user", help="staff sign-in accounts").add_subparsers(dest="action", required=True)
    p = user.add_parser("add", help="add or reset a user; the password is the first line of stdin")
    p.add_argument("name")
    p.add_argument("--role", required=True)
    p.set_defaults(handler=cmd_user_add)
    p = user.add_parser("disable", help="disable a user; their sessions end and sockets close")
    p.add_argument("name")
    p.set_defaults(handler=cmd_user_disable)

    display = sub.add_parser("display", help="wall displays").add_subparsers(dest="action", required=True)
    p = display.add_parser("add", help="register a wall display; prints its one-time pairing path")
    p.add_argument("--ward", required=True)
    p.add_argument("--name")
    p.set_defaults(handler=cmd_display_add)
    display.add_parser("list", help="list displays").set_defaults(handler=cmd_display_list)
    p = display.add_parser("revoke", help="revoke a display; its cookie ends and its sockets close")
    p.add_argument("id")
    p.set_defaults(handler=cmd_display_revoke)
    return parser


# --- helpers ---------------------------------------------------------------------------------------


async def with_engine(
    settings: Settings, job: Callable[[Any], Awaitable[Any]], *, migrate_first: bool = True
) -> Any:
    from whiteboard.store import migrate
    from whiteboard.store.engine import open_engines

    writer, reader = open_engines(settings.database_url, connections=4)
    try:
        if migrate_first:
            await migrate.upgrade(writer)
        return await job(writer)
    finally:
        await writer.dispose()
        if reader is not writer:
            await reader.dispose()


# --- serving ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.server import run

    run(settings, args.host, args.port)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.demo import run_demo

    run_demo(settings, args.host, args.port)


async def cmd_db_upgrade(_args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import migrate

    async def job(engine: Any) -> None:
        before = await migrate.pending(engine)
        await migrate.upgrade(engine)
        print(f"database at head ({len(before)} migration(s) applied)")

    await with_engine(settings, job, migrate_first=False)


async def cmd_layout_load(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.layout import load_layout, parse_layout

    try:
        doc = orjson.loads(args.file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {args.file}: {exc.strerror}")
    except orjson.JSONDecodeError as exc:
        fail(f"{args.file} is not JSON: {exc}")
    layout = parse_layout(doc)
    counts = await with_engine(settings, lambda engine: load_layout(engine, layout))
    print(
        f"loaded {counts['sites']} site(s), {counts['wards']} ward(s); "
        f"{counts['beds_added']} bed(s) added, {counts['beds_updated']} updated"
    )


# --- tokens, users, displays -----------------------------------------------------------------------


async def cmd_token_create(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    token = await with_engine(settings, lambda e: accounts.create_token(e, args.name, args.role))
    print(f"# token {args.name} ({args.role}); shown once, keep it safe:")
    print(token)


async def cmd_token_list(_args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    rows = await with_engine(settings, accounts.list_tokens)
    print("# name\trole\tcreated\trevoked")
    for r in rows:
        print(f"{r['name']}\t{r['role']}\t{r['created_at']}\t{r['revoked_at'] or '-'}")


async def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    await with_engine(settings, lambda e: accounts.revoke_token(e, args.name))
    print(f"token {args.name} revoked")


async def cmd_user_add(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    password = sys.stdin.readline().rstrip("\r\n")
    created = await with_engine(settings, lambda e: accounts.add_user(e, args.name, args.role, password))
    print(f"user {args.name} {'added' if created else 'updated and enabled'} ({args.role})")


async def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    await with_engine(settings, lambda e: accounts.disable_user(e, args.name))
    print(f"user {args.name} disabled; their sessions have ended")


async def cmd_display_add(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    display_id, code = await with_engine(settings, lambda e: accounts.add_display(e, args.ward, args.name))
    print(f"# display {display_id} for ward {args.ward}; open this on the screen within 10 minutes:")
    print(f"/displays/pair#{code}")


async def cmd_display_list(_args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    rows = await with_engine(settings, accounts.list_displays)
    print("# id\tward\tname\tstatus")
    for r in rows:
        status = "revoked" if r["revoked_at"] else ("paired" if r["paired_at"] else "waiting to pair")
        print(f"{r['id']}\t{r['ward_code']}\t{r['name']}\t{status}")


async def cmd_display_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from whiteboard.store import accounts

    await with_engine(settings, lambda e: accounts.revoke_display(e, args.id))
    print(f"display {args.id} revoked")
