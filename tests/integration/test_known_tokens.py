"""Bed and stay edits with a bearer token this process has seen: not looked up again, but
checked by the write itself, so a revoked token is still refused at once (401), before any
other answer, and nothing is written — on the embedded SQLite and on PostgreSQL.

`api` runs the real app and lifespan; the token is revoked the way the CLI does it, on
the store, while the app holds it as known.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_api import Api, assert_error, running_app
from whiteboard.store import accounts


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    url = f"sqlite+aiosqlite:///{tmp_path}/api.db"
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database_url")
    async with running_app(url) as running:
        yield running


async def known_token(api: Api, name: str, role: str = "nurse") -> str:
    """A new token, used once so the app knows it."""
    token = await accounts.create_token(api.app.state.writer, name, role)
    r = await api.http.get("/api/v1/wards/W01", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert api.app.state.known_tokens.get(accounts.digest(token)) is not None
    return token


async def bed(api: Api, code: str) -> dict[str, Any]:
    snapshot = await api.snapshot("W01")
    return next(b for b in snapshot["beds"] if b["code"] == code)  # type: ignore[no-any-return]


async def patch_bed(api: Api, token: str, code: str, version: int, state: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}", "If-Match": f'"{version}"'}
    return await api.http.patch(f"/api/v1/beds/{code}", headers=headers, json={"state": state}, **kw)


async def test_an_edit_with_a_known_token_is_not_looked_up_again(api: Api, monkeypatch: Any) -> None:
    token = await known_token(api, "robot-a")
    lookups: list[str] = []
    lookup = accounts.token_principal

    async def counted(engine: Any, secret: str) -> Any:
        lookups.append(secret)
        return await lookup(engine, secret)

    version = (await bed(api, "W01-B1-1"))["version"]
    monkeypatch.setattr(accounts, "token_principal", counted)
    r = await patch_bed(api, token, "W01-B1-1", version, "closed")
    monkeypatch.undo()
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'"{version + 1}"'
    assert lookups == []
    assert (await bed(api, "W01-B1-1"))["state"] == "closed"


async def test_a_known_token_revoked_is_refused_at_once_and_writes_nothing(api: Api) -> None:
    token = await known_token(api, "robot-b")
    version = (await bed(api, "W01-B1-2"))["version"]
    assert (await patch_bed(api, token, "W01-B1-2", version, "closed")).status_code == 200
    stay = (await api.admit("W01-B1-3"))["id"]
    await accounts.revoke_token(api.app.state.writer, "robot-b")
    before = await api.state()
    assert_error(await patch_bed(api, token, "W01-B1-2", version + 1, "available"), 401)
    r = await api.http.patch(
        f"/api/v1/stays/{stay}",
        headers={"Authorization": f"Bearer {token}", "If-Match": '"1"'},
        json={"news2": 3},
    )
    assert_error(r, 401)
    assert await api.state() == before


async def test_a_known_token_revoked_hears_401_before_any_other_refusal(api: Api) -> None:
    """Wrong role, no If-Match, a bad body, a stale version, an unknown bed: each is 401 once
    the token is revoked, as if it had been looked up first."""
    viewer = await known_token(api, "robot-viewer", "viewer")
    nurse = await known_token(api, "robot-nurse")
    version = (await bed(api, "W01-B1-4"))["version"]
    before_revoking = {
        "wrong role": (await patch_bed(api, viewer, "W01-B1-4", version, "closed")).status_code,
        "stale": (await patch_bed(api, nurse, "W01-B1-4", version + 5, "closed")).status_code,
        "bad body": (await patch_bed(api, nurse, "W01-B1-4", version, "on fire")).status_code,
        "unknown bed": (await patch_bed(api, nurse, "W99-B1-1", 1, "closed")).status_code,
    }
    assert before_revoking == {"wrong role": 403, "stale": 412, "bad body": 422, "unknown bed": 404}
    for name in ("robot-viewer", "robot-nurse"):
        await accounts.revoke_token(api.app.state.writer, name)
    after = {
        "wrong role": await patch_bed(api, viewer, "W01-B1-4", version, "closed"),
        "stale": await patch_bed(api, nurse, "W01-B1-4", version + 5, "closed"),
        "bad body": await patch_bed(api, nurse, "W01-B1-4", version, "on fire"),
        "unknown bed": await patch_bed(api, nurse, "W99-B1-1", 1, "closed"),
        "no If-Match": await api.http.patch(
            "/api/v1/beds/W01-B1-4", headers={"Authorization": f"Bearer {nurse}"}, json={"state": "closed"}
        ),
    }
    for what, r in after.items():
        assert_error(r, 401)
        assert r.json()["error"]["code"] == "unauthenticated", what
    assert (await bed(api, "W01-B1-4"))["version"] == version


@pytest.mark.postgres
async def test_on_postgresql_the_write_checks_the_token_in_its_one_statement(
    pg_database_url: str, monkeypatch: Any
) -> None:
    """The check is the write's own: with the token revoked between the request's start and
    the write, the one statement applies nothing and the write is refused."""
    from whiteboard.store.held import HeldConnections

    async with running_app(pg_database_url) as api:
        token = await known_token(api, "robot-c")
        version = (await bed(api, "W01-B1-5"))["version"]
        assert (await patch_bed(api, token, "W01-B1-5", version, "closed")).status_code == 200
        sent: list[str] = []
        send = HeldConnections.send

        async def revoked_first(held: HeldConnections, sql: str, values: Any) -> None:
            async with held.engine.begin() as conn:
                await conn.exec_driver_sql(
                    "UPDATE tokens SET revoked_at = '2030-01-01T00:00:00.000Z' WHERE name = 'robot-c'"
                )
            sent.append(sql)
            await send(held, sql, values)

        monkeypatch.setattr(HeldConnections, "send", revoked_first)
        assert_error(await patch_bed(api, token, "W01-B1-5", version + 1, "available"), 401)
        assert len(sent) == 1 and "revoked_at IS NULL" in sent[0]  # the one statement was tried, and refused
        assert (await bed(api, "W01-B1-5"))["version"] == version + 1
