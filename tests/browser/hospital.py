"""A small test hospital behind a real `whiteboard serve`, set up the way an operator would.

`Hospital` owns a temporary folder with a SQLite database, runs the CLI against it (`db
upgrade`, `layout load`, `token create`, `user add`, `display add`), starts the server as a
subprocess (tests.helpers.ServerProcess) and offers a bearer-token API client for arranging
and checking the board behind a browser's back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nhs_number
import orjson

from tests.helpers import WHITEBOARD_EXE, ServerProcess, free_port, timeout

SECRET = "test-secret-key-0123456789abcdef-0123456789"
PASSWORD = "correct horse battery staple"

LAYOUT: dict[str, Any] = {
    "sites": [
        {
            "code": "TST",
            "name": "Test General Hospital",
            "wards": [
                {
                    "code": "T1",
                    "name": "Ward T1",
                    "specialty": "General Medicine",
                    "beds": [
                        *({"code": f"T1-B1-{n}", "bay": "B1", "kind": "bay"} for n in range(1, 5)),
                        *({"code": f"T1-B2-{n}", "bay": "B2", "kind": "bay"} for n in range(5, 9)),
                        {"code": "T1-SR-9", "bay": "SR", "kind": "side_room"},
                        {"code": "T1-SR-10", "bay": "SR", "kind": "negative_pressure"},
                    ],
                },
                {
                    "code": "T3",
                    "name": "Ward T3",
                    "specialty": "Respiratory",
                    "beds": [
                        *({"code": f"T3-B1-{n}", "bay": "B1", "kind": "bay"} for n in range(1, 5)),
                        *({"code": f"T3-B2-{n}", "bay": "B2", "kind": "bay"} for n in range(5, 9)),
                        {"code": "T3-SR-9", "bay": "SR", "kind": "side_room"},
                        {"code": "T3-SR-10", "bay": "SR", "kind": "negative_pressure"},
                    ],
                },
                {
                    "code": "T2",
                    "name": "Ward T2",
                    "specialty": "Surgery",
                    "beds": [
                        {"code": "T2-B1-1", "bay": "B1", "kind": "bay"},
                        {"code": "T2-B1-2", "bay": "B1", "kind": "bay"},
                        {"code": "T2-SR-3", "bay": "SR", "kind": "side_room"},
                    ],
                },
            ],
        },
        {
            "code": "ANX",
            "name": "Annexe Hospital",
            "wards": [
                {
                    "code": "A1",
                    "name": "Ward A1",
                    "specialty": "Rehabilitation",
                    "beds": [{"code": f"A1-B1-{n}", "bay": "B1", "kind": "bay"} for n in range(1, 4)],
                }
            ],
        },
    ]
}

USERS = {"nurse1": "nurse", "doctor1": "doctor", "ipc1": "ipc", "viewer1": "viewer"}

_mrns = itertools.count(1000)


def nhs() -> str:
    return str(nhs_number.generate(for_region=nhs_number.REGION_SYNTHETIC)[0])


class Hospital:
    def __init__(self, folder: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.env = {
            "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'wb.db'}",
            "WHITEBOARD_SECRET_KEY": SECRET,
            "WHITEBOARD_ALLOWED_ORIGINS": self.origin,
            "WHITEBOARD_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.server = ServerProcess(env=self.env, cwd=folder, log_path=folder / "server.log", port=self.port)
        self.token = ""
        self.ipc_token = ""
        self._spare_codes: list[str] = []

    # -- the operator's CLI --------------------------------------------------------------------

    def cli(self, *args: str, stdin: str = "") -> str:
        proc = subprocess.run(
            [str(WHITEBOARD_EXE), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.folder,
            env={**self.server.env},
            timeout=timeout(60),
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"whiteboard {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def set_up(self, pairing_codes: int = 0) -> None:
        """Migrate and load the layout, then (in parallel: each CLI run is mostly start-up time)
        create the API tokens, the users and `pairing_codes` spare display pairing codes for T1."""
        layout = self.folder / "layout.json"
        layout.write_bytes(orjson.dumps(LAYOUT))
        self.cli("db", "upgrade")
        self.cli("layout", "load", str(layout))
        jobs: list[tuple[tuple[str, ...], str]] = [
            (("token", "create", "--name", "tests", "--role", "admin"), ""),
            (("token", "create", "--name", "ipc-tests", "--role", "ipc"), ""),
            *((("user", "add", name, "--role", role), PASSWORD + "\n") for name, role in USERS.items()),
            *((("display", "add", "--ward", "T1"), "") for _ in range(pairing_codes)),
        ]
        with ThreadPoolExecutor(max_workers=4) as pool:
            outputs = list(pool.map(lambda job: self.cli(*job[0], stdin=job[1]), jobs))
        self.token = outputs[0].strip().splitlines()[-1]
        self.ipc_token = outputs[1].strip().splitlines()[-1]
        self._spare_codes = [self._code_from(out) for out in outputs[2 + len(USERS) :]]

    @staticmethod
    def _code_from(output: str) -> str:
        path = output.strip().splitlines()[-1]
        assert path.startswith("/displays/pair#"), path
        return path.split("#", 1)[1]

    def pairing_code(self, ward: str = "T1") -> str:
        """A fresh one-time code from `whiteboard display add` (made ahead at set-up for T1)."""
        if ward == "T1" and self._spare_codes:
            return self._spare_codes.pop()
        return self._code_from(self.cli("display", "add", "--ward", ward))

    async def start(self) -> None:
        await self.server.astart()

    def stop(self) -> None:
        self.server.kill()

    # -- arranging the board over the API ------------------------------------------------------

    def api(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server.base_url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=timeout(10),
        )

    async def admit(
        self,
        bed: str,
        given: str,
        family: str,
        *,
        edd: dt.date | None = None,
        number: str | None = None,
    ) -> dict[str, Any]:
        async with self.api() as client:
            response = await client.post(
                "/api/v1/stays",
                json={
                    "bed": bed,
                    "patient": {
                        "nhs_number": number or nhs(),
                        "mrn": f"MRN{next(_mrns)}",
                        "given_name": given,
                        "family_name": family,
                        "dob": "1948-03-02",
                        "sex": "female",
                    },
                    "consultant": "Dr R Shah",
                    "named_nurse": "Sam",
                    "edd": (edd or dt.date.today() + dt.timedelta(days=3)).isoformat(),
                },
            )
            assert response.status_code == 201, response.text
            stay: dict[str, Any] = response.json()
            return stay

    async def stay(self, ward: str, stay_id: str) -> dict[str, Any]:
        async with self.api() as client:
            snap = (await client.get(f"/api/v1/wards/{ward}")).json()
        for bed in snap["beds"]:
            if bed["stay"] and bed["stay"]["id"] == stay_id:
                found: dict[str, Any] = bed["stay"]
                return found
        raise AssertionError(f"stay {stay_id} is not in a bed on {ward}")

    async def patch_stay(self, stay: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        async with self.api() as client:
            response = await client.patch(
                f"/api/v1/stays/{stay['id']}", json=changes, headers={"If-Match": f'"{stay["version"]}"'}
            )
            assert response.status_code == 200, response.text
            patched: dict[str, Any] = response.json()
            return patched

    async def raise_flag(
        self, patient_id: str, code: str, status: str = "confirmed", precaution: str = "contact"
    ) -> dict[str, Any]:
        async with self.api(self.ipc_token) as client:
            response = await client.post(
                f"/api/v1/patients/{patient_id}/flags",
                json={"code": code, "status": status, "precaution": precaution},
            )
            assert response.status_code == 201, response.text
            flag: dict[str, Any] = response.json()
            return flag

    async def bed(self, ward: str, code: str) -> dict[str, Any]:
        async with self.api() as client:
            snap = (await client.get(f"/api/v1/wards/{ward}")).json()
        for bed in snap["beds"]:
            if bed["code"] == code:
                found: dict[str, Any] = bed
                return found
        raise AssertionError(f"no bed {code}")

    async def set_bed_state(self, code: str, state: str, ward: str = "T1") -> None:
        bed = await self.bed(ward, code)
        async with self.api() as client:
            response = await client.patch(
                f"/api/v1/beds/{code}", json={"state": state}, headers={"If-Match": f'"{bed["version"]}"'}
            )
            assert response.status_code == 200, response.text
