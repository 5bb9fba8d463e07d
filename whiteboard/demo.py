"""`whiteboard demo`: a made-up two-site hospital that lives.

It seeds the working folder's default database once (sites, wards, ~200 beds, side rooms,
patients with synthetic NHS numbers from the 999 range, flags, EDDs, red and green days),
prints the URLs and an admin token, and runs a simulated patient administration system that
admits, transfers and discharges through the real HL7 v2 feed path, plus ward staff updating
EDDs, readiness and flags through the same service the API uses, so every screen moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import nhs_number
import uvicorn
from sqlalchemy import func, select

from whiteboard.board.model import ALERTS
from whiteboard.hl7 import fakepas
from whiteboard.hl7.feed import Feed
from whiteboard.layout import load_layout, parse_layout
from whiteboard.server import run_on_server_loop, serve, uvicorn_config
from whiteboard.service import BoardService, PatientDetails
from whiteboard.settings import Settings
from whiteboard.store import accounts, migrate
from whiteboard.store.accounts import Principal
from whiteboard.store.engine import open_engines
from whiteboard.store.repository import Repository
from whiteboard.store.tables import beds, stays, wards

log = logging.getLogger("whiteboard.demo")

GIVEN = [
    "Ada",
    "Peter",
    "Mary",
    "Olu",
    "Priya",
    "Sean",
    "Grace",
    "Tomasz",
    "Aisha",
    "John",
    "Fatima",
    "Hugh",
    "Nia",
    "Arthur",
    "Elsie",
    "Wei",
    "Ibrahim",
    "Doris",
    "Kofi",
    "Maeve",
    "Rhys",
    "Zainab",
    "Harold",
    "Joan",
]
FAMILY = [
    "Okafor",
    "Wong",
    "Jones",
    "Adeyemi",
    "Patel",
    "Murphy",
    "Hughes",
    "Nowak",
    "Khan",
    "Smith",
    "Ali",
    "Evans",
    "Price",
    "Brown",
    "Taylor",
    "Chen",
    "Hassan",
    "Clarke",
    "Mensah",
    "Byrne",
    "Lloyd",
    "Begum",
]
CONSULTANTS = ["Dr A Okafor", "Dr R Shah", "Mr T Evans", "Dr L Murray", "Prof K Adebayo", "Dr S Lindqvist"]
NURSES = ["Sam", "Jo", "Alex", "Chris", "Pat", "Robin", "Jamie", "Morgan"]
BLOCKERS = ["awaiting OT assessment", "package of care", "awaiting echo", "social work review", ""]

SITES = [
    (
        "SJH",
        "St James's Hospital",
        [
            ("AMU", "Acute Medical Unit", "Acute Medicine", 30),
            ("J10", "Ward J10", "Respiratory", 26),
            ("J12", "Ward J12", "Care of the Elderly", 28),
            ("J14", "Ward J14", "Cardiology", 24),
            ("J16", "Ward J16", "General Surgery", 24),
        ],
    ),
    (
        "CAH",
        "Chapel Allerton Hospital",
        [
            ("C1", "Ward C1", "Orthopaedics", 22),
            ("C2", "Ward C2", "Rehabilitation", 22),
            ("C3", "Ward C3", "Stroke", 20),
            ("C4", "Ward C4", "Infectious Diseases", 16),
        ],
    ),
]


def demo_layout() -> dict[str, Any]:
    """Bays of six, then side rooms; the infectious diseases ward has negative-pressure rooms."""
    sites = []
    for site_code, site_name, ward_specs in SITES:
        ward_list = []
        for code, name, specialty, count in ward_specs:
            side_rooms = max(2, count // 6)
            bed_list = []
            for n in range(1, count + 1):
                if n > count - side_rooms:
                    kind = "negative_pressure" if code == "C4" else "side_room"
                    bed_list.append({"code": f"{code}-SR-{n}", "bay": "SR", "kind": kind})
                else:
                    bay = f"B{(n - 1) // 6 + 1}"
                    bed_list.append({"code": f"{code}-{bay}-{n}", "bay": bay, "kind": "bay"})
            ward_list.append({"code": code, "name": name, "specialty": specialty, "beds": bed_list})
        sites.append({"code": site_code, "name": site_name, "wards": ward_list})
    return {"sites": sites}


@dataclass
class Simulator:
    service: BoardService
    rng: random.Random

    @property
    def hl7(self) -> Feed:
        return Feed(self.service)

    @property
    def repo(self) -> Repository:
        return self.service.repo

    def new_patient(self) -> PatientDetails:
        number = nhs_number.generate(for_region=nhs_number.REGION_SYNTHETIC)[0]
        age = self.rng.randint(18, 97)
        dob = date.today() - timedelta(days=age * 365 + self.rng.randint(0, 364))
        return PatientDetails(
            nhs_number=number,
            mrn=f"H{self.rng.randint(100000, 999999)}",
            given_name=self.rng.choice(GIVEN),
            family_name=self.rng.choice(FAMILY),
            dob=dob.isoformat(),
            sex=self.rng.choice(["male", "female"]),
        )

    async def free_beds(self) -> list[str]:
        async with self.repo.reader.connect() as conn:
            result = await conn.execute(select(beds.c.code).where(beds.c.state == "available"))
            return [r.code for r in result]

    async def open_stays(self) -> list[tuple[str, str, int]]:
        async with self.repo.reader.connect() as conn:
            result = await conn.execute(
                select(stays.c.id, stays.c.patient_id, stays.c.version).where(
                    stays.c.is_open, stays.c.bed_code.is_not(None)
                )
            )
            return [(r.id, r.patient_id, r.version) for r in result]

    async def pas_patient(self, patient_id: str) -> PatientDetails:
        p = await self.repo.get_patient(patient_id)
        return PatientDetails(
            nhs_number=p.nhs_number,
            mrn=p.mrn,
            given_name=p.given_name,
            family_name=p.family_name,
            dob=p.dob,
            sex=p.sex,
        )

    async def bed_of(self, code: str) -> fakepas.Bed:
        async with self.repo.reader.connect() as conn:
            row = (await conn.execute(select(beds.c.ward_code, beds.c.bay).where(beds.c.code == code))).one()
        return fakepas.Bed(ward=row.ward_code, bay=row.bay, code=code)

    async def feed(self, message: str) -> None:
        """Send one ADT message down the real feed path, as the hospital's PAS would."""
        ack = await self.hl7.receive(message.encode())
        if "MSA|AA" not in ack:
            log.info("demo PAS message refused: %s", ack.replace("\r", " | "))

    async def pas_admit(self) -> None:
        free = await self.free_beds()
        if free:
            bed = await self.bed_of(self.rng.choice(free))
            edd = (date.today() + timedelta(days=self.rng.randint(0, 9))).isoformat()
            consultant = self.rng.choice(CONSULTANTS)
            await self.feed(fakepas.adt("A01", self.new_patient(), bed=bed, attending=consultant, edd=edd))

    async def pas_transfer(self, patient_id: str) -> None:
        free = await self.free_beds()
        if free:
            bed = await self.bed_of(self.rng.choice(free))
            await self.feed(fakepas.adt("A02", await self.pas_patient(patient_id), bed=bed))

    async def pas_discharge(self, patient_id: str) -> None:
        await self.feed(fakepas.adt("A03", await self.pas_patient(patient_id)))

    async def admit_random(self, who: Principal, edd_days: int | None = None) -> None:
        free = await self.free_beds()
        if not free:
            return
        outcome = await self.service.admit(
            who,
            self.rng.choice(free),
            self.new_patient(),
            consultant=self.rng.choice(CONSULTANTS),
            named_nurse=self.rng.choice(NURSES),
            edd=(
                date.today() + timedelta(days=edd_days if edd_days is not None else self.rng.randint(-1, 9))
            ).isoformat(),
        )
        assert outcome.stay is not None
        await self.dress(who, outcome.stay.id, outcome.stay.version)

    async def dress(self, who: Principal, stay_id: str, version: int) -> None:
        """Give a stay what a real board shows: a day status, NEWS2, alerts, readiness."""
        changes: dict[str, Any] = {
            "day_status": self.rng.choice(["red", "green", "green", None]),
            "news2": self.rng.choice([0, 0, 1, 2, 3, 5, 7]),
            "alerts": self.rng.sample(list(ALERTS), self.rng.choice([0, 0, 1, 2])),
            "discharge": {
                "medically_optimised": self.rng.random() < 0.3,
                "pathway": self.rng.choice([None, 0, 1, 2, 3]),
                "tto_ready": self.rng.random() < 0.2,
                "transport_booked": self.rng.random() < 0.1,
                "home_first": self.rng.random() < 0.15,
                "blockers": self.rng.choice(BLOCKERS),
            },
        }
        outcome = await self.service.update_stay(who, stay_id, version, changes)
        if self.rng.random() < 0.12 and outcome.stay is not None:
            code, precaution = self.rng.choice(
                [
                    ("MRSA", "contact"),
                    ("CDIFF", "contact"),
                    ("COVID19", "droplet"),
                    ("NOROVIRUS", "contact"),
                    ("INFLUENZA", "droplet"),
                    ("CPE", "contact"),
                    ("TB", "airborne"),
                ]
            )
            await self.service.raise_flag(
                Principal("token", "demo-ipc", "ipc"),
                outcome.stay.patient.id,
                code,
                self.rng.choice(["suspected", "confirmed"]),
                precaution,  # type: ignore[arg-type]
            )

    async def step(self) -> None:
        """One thing happening somewhere in the hospital."""
        who = Principal("token", "demo-ward-staff", "nurse")
        roll = self.rng.random()
        open_stays = await self.open_stays()
        try:
            if roll < 0.3 or not open_stays:
                await self.pas_admit()
            elif roll < 0.5:
                await self.pas_discharge(self.rng.choice(open_stays)[1])
            elif roll < 0.6:
                await self.pas_transfer(self.rng.choice(open_stays)[1])
            elif roll < 0.75:
                await self.clean_a_bed(who)
            else:
                stay_id, _pid, version = self.rng.choice(open_stays)
                await self.dress(who, stay_id, version)
        except Exception as exc:  # a demo collision (a bed taken meanwhile) is not worth stopping for
            log.info("demo step skipped: %s", exc)

    async def clean_a_bed(self, who: Principal) -> None:
        board_beds = []
        async with self.repo.reader.connect() as conn:
            result = await conn.execute(select(beds.c.code, beds.c.version).where(beds.c.state == "dirty"))
            board_beds = [(r.code, r.version) for r in result]
        if board_beds:
            code, version = self.rng.choice(board_beds)
            await self.service.update_bed(who, code, version, "available")


async def seed(settings: Settings, rng: random.Random) -> bool:
    """Seed an empty database; False when it was seeded already."""
    writer, reader = open_engines(settings.database_url)
    try:
        await migrate.upgrade(writer)
        async with reader.connect() as conn:
            if (await conn.execute(select(func.count()).select_from(wards))).scalar():
                return False
        await load_layout(writer, parse_layout(demo_layout()))
        from whiteboard.fanout.memory import MemoryBroker

        repo = Repository(writer, reader)
        sim = Simulator(BoardService(repo, MemoryBroker()), rng)
        who = Principal("token", "demo-seed", "admin")
        total = len(await sim.free_beds())
        for n in range(int(total * 0.82)):
            await sim.admit_random(
                who, edd_days=rng.choice([-2, -1, 0, 0, 1, 1, 2, 3, 5, 8]) if n % 3 else None
            )
        await repo.release_connections()
        repo.close()
        return True
    finally:
        await writer.dispose()
        await reader.dispose()


#: Demo sign-ins, one per role; the password is printed (and reset) on every demo start.
DEMO_USERS = (
    ("admin", "admin"),
    ("nurse", "nurse"),
    ("doctor", "doctor"),
    ("ipc", "ipc"),
    ("beds", "bed_manager"),
)
DEMO_PASSWORD = "whiteboard-demo"  # noqa: S105 - a made-up hospital's sign-in, printed on purpose


async def demo_access(settings: Settings) -> tuple[str, str]:
    """Demo logins (reset each start) and a fresh wall-display pairing path for ward J12."""
    writer, reader = open_engines(settings.database_url)
    try:
        for name, role in DEMO_USERS:
            await accounts.add_user(writer, name, role, DEMO_PASSWORD)
        token = await accounts.create_token(writer, f"demo-admin-{secrets.token_hex(3)}", "admin")
        _display_id, code = await accounts.add_display(writer, "J12", "J12 demo wall")
        return token, code
    finally:
        await writer.dispose()
        await reader.dispose()


def run_demo(settings: Settings, host: str, port: int) -> None:
    rng = random.Random()
    print("Preparing the demo hospital (the first run seeds it: about 20 seconds)…", flush=True)
    asyncio.run(seed(settings, rng))
    token, code = asyncio.run(demo_access(settings))
    base = f"http://{host}:{port}"
    lines = [
        "Ward whiteboard demo: a made-up two-site hospital; its PAS feed moves someone every few seconds",
        f"  sign in:        {base}/login   as {', '.join(n for n, _ in DEMO_USERS)} "
        f"(password {DEMO_PASSWORD})",
        f"  wards:          {base}/            tablet board: {base}/wards/J12",
        f"  IPC board:      {base}/ipc        capacity: {base}/capacity",
        f"  wall display:   {base}/displays/pair#{code}   (pairs this browser as J12's wall; 10 minutes)",
        f"  API token:      {token}",
        f"  watch a ward:   .venv/bin/python scripts/watch.py J12 {token} --url ws://{host}:{port}",
        f"  health:         {base}/readyz",
    ]
    print("\n".join(lines), flush=True)
    config = uvicorn_config(settings, host, port)
    run_on_server_loop(config, _serve_with_simulator(uvicorn.Server(config), host, port, rng))


async def _serve_with_simulator(server: uvicorn.Server, host: str, port: int, rng: random.Random) -> None:
    serving = asyncio.create_task(serve(server, host, port))
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.05)
    app: Any = server.config.loaded_app
    state = _find_state(app)
    sim = Simulator(state.service, rng)
    try:
        while not serving.done():
            await sim.step()
            await asyncio.sleep(rng.uniform(1.0, 3.0))
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving


def _find_state(app: Any) -> Any:
    while not hasattr(app, "state") or not hasattr(app.state, "service"):
        app = app.app
    return app.state
