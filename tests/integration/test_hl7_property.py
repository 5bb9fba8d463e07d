"""Property tests of the feed shell, in process: whatever arrives, an ACK, and no half-change.

`Feed.receive` is driven directly (no server) over a real SQLite store with a small layout.
For every input — arbitrary bytes, valid messages mutated at byte and field level, and
sequences of fake-PAS messages with repeated control IDs, late event times and mutations —

* `receive` returns an ACK whose MSA-1 is AA, AE or AR, and never raises;
* after AE or AR, every row of every table is as it was (nothing half-applied);
* after AA, each ward's event log is 1..N without gaps and the ward's counter is N, and the
  board is coherent: an occupied bed holds exactly one open stay that says it is there, a stay
  is in one bed or unplaced, a patient has at most one open stay.

The suite's event loop is a session loop (pytest-asyncio), so hypothesis cannot run its
examples there, nor call `asyncio.run`. The store lives on a private event loop in a thread
of its own; the sync `@given` tests hand it coroutines and wait for their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import hl7
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import fixtures_hl7 as fx
from tests.integration.conftest import layout
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.hl7 import fakepas
from whiteboard.hl7.feed import Feed
from whiteboard.layout import load_layout, parse_layout
from whiteboard.service import BoardService, PatientDetails
from whiteboard.settings import Settings
from whiteboard.store import migrate
from whiteboard.store.engine import open_engines
from whiteboard.store.repository import Repository

T = TypeVar("T")

WARDS = 3
BEDS = 6
#: Every table of the store (filled in when it is opened).
TABLES: list[str] = []
#: The tables the feed writes to, which `Store.restore` puts back.
STATEFUL = ("patients", "stays", "flags", "beds", "wards", "events", "hl7_messages")
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class Store:
    """A feed over a fresh SQLite store, on an event loop running in a thread of its own."""

    def __init__(self, folder: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hl7-property-loop", daemon=True)
        self.thread.start()
        self.path = str(folder / "feed.db")
        self.settings = Settings(database_url=f"sqlite+aiosqlite:///{self.path}", secret_key="p" * 48)
        self.checkpoints: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
        self.saved: dict[str, list[tuple[Any, ...]]] = {}
        self.call(self._open())

    def call(self, coro: Coroutine[Any, Any, T], wait: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(wait)

    async def _open(self) -> None:
        self.writer, self.reader = open_engines(self.settings.database_url)
        await migrate.upgrade(self.writer)
        await load_layout(self.writer, parse_layout(layout(WARDS, BEDS)))
        async with self.reader.connect() as conn:
            names = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
        TABLES[:] = sorted(names)
        # Where the repository keeps boards between commands, have it check every copy it uses
        # against the store (a stale board would make the rules decide on the wrong state).
        checked = {"verify_cache": True} if "verify_cache" in inspect.signature(Repository).parameters else {}
        self.repo = Repository(self.writer, self.reader, **checked)
        self.feed = Feed(BoardService(self.repo, MemoryBroker()))

    async def _close(self) -> None:
        close = getattr(self.repo, "close", None)
        if close is not None:
            close()
        await self.writer.dispose()
        await self.reader.dispose()
        await self.loop.shutdown_default_executor()

    def close(self) -> None:
        try:
            self.call(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    # -- what the tests ask ----------------------------------------------------------------

    def receive(self, raw: bytes) -> str:
        return self.call(self.feed.receive(raw))

    # The checks read and reset the file with the standard library's sqlite3, on this thread:
    # much cheaper than a round trip through the store's loop, and independent of the code
    # under test. (WAL mode: readers never wait for the feed's writes.)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        with contextlib.closing(self._db()) as db:
            return {name: sorted(db.execute(f'SELECT * FROM "{name}"'), key=repr) for name in TABLES}

    def checkpoint(self, name: str) -> None:
        """Remember the hospital as it is now, as `name`."""
        self.checkpoints[name] = {table: rows for table, rows in self.dump().items() if table in STATEFUL}

    def restore_to(self, name: str) -> None:
        """Back to checkpoint `name`; from now on `restore()` goes back to it too."""
        self.saved = self.checkpoints[name]
        self.restore()

    def restore(self) -> None:
        with contextlib.closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            for name, rows in self.saved.items():
                db.execute(f'DELETE FROM "{name}"')
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    db.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
            db.execute("COMMIT")
        # Rewinding a ward's seq is something only this test does: a board the repository kept
        # from before (valid "at seq N") would be taken for the new seq N. Forget them.
        cache = getattr(self.repo, "cache", None)
        if cache is not None:
            self.repo.cache = type(cache)()

    def problems(self) -> list[str]:
        """What is wrong with the store after an accepted message (empty when all is well)."""
        found: list[str] = []
        with contextlib.closing(self._db()) as db:
            db.row_factory = sqlite3.Row
            ward_seq = {r["code"]: r["seq"] for r in db.execute("SELECT code, seq FROM wards")}
            logged: dict[str, list[int]] = {code: [] for code in ward_seq}
            for r in db.execute("SELECT ward_code, seq FROM events ORDER BY seq"):
                logged.setdefault(r["ward_code"], []).append(r["seq"])
            bed_rows = db.execute("SELECT code, ward_code, state, stay_id FROM beds").fetchall()
            open_stays = {
                r["id"]: r
                for r in db.execute("SELECT id, patient_id, ward_code, bed_code FROM stays WHERE is_open")
            }
        for code, seqs in logged.items():
            if seqs != list(range(1, len(seqs) + 1)):
                found.append(f"ward {code}: event seqs {seqs} are not 1..N")
            if ward_seq.get(code) != len(seqs):
                found.append(f"ward {code}: counter {ward_seq.get(code)} but {len(seqs)} events")
        holders: dict[str, str] = {}
        for b in bed_rows:
            if (b["state"] == "occupied") != (b["stay_id"] is not None):
                found.append(f"bed {b['code']}: state {b['state']} with stay {b['stay_id']}")
            if b["stay_id"] is None:
                continue
            if b["stay_id"] in holders:
                found.append(f"stay {b['stay_id']} in beds {holders[b['stay_id']]} and {b['code']}")
            holders[b["stay_id"]] = b["code"]
            stay = open_stays.get(b["stay_id"])
            if stay is None:
                found.append(f"bed {b['code']}: holds {b['stay_id']}, which is not an open stay")
            elif (stay["bed_code"], stay["ward_code"]) != (b["code"], b["ward_code"]):
                found.append(f"bed {b['code']}: holds {stay['id']}, which says it is in {stay['bed_code']}")
        for stay in open_stays.values():
            if stay["bed_code"] is not None and holders.get(stay["id"]) != stay["bed_code"]:
                found.append(f"stay {stay['id']}: says bed {stay['bed_code']}, which does not hold it")
        per_patient: dict[str, int] = {}
        for stay in open_stays.values():
            per_patient[stay["patient_id"]] = per_patient.get(stay["patient_id"], 0) + 1
        found += [f"patient {p}: {n} open stays" for p, n in per_patient.items() if n > 1]
        return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("hl7-property"))
    try:
        s.checkpoint("empty")
        for admit in ADMIT_EVERYONE:
            assert msa_1(s.receive(admit)) == "AA"
        s.checkpoint("everyone_in")
        yield s
    finally:
        s.close()


@pytest.fixture
def everyone_in(store: Store) -> Store:
    """The store with every patient of PEOPLE admitted (restore() brings it back to that)."""
    store.restore_to("everyone_in")
    return store


def msa_1(ack: str) -> str:
    return str(hl7.parse(ack.replace("\n", "\r")).segment("MSA")(1))


def check(store: Store, raw: bytes) -> str:
    """Send one message and check the properties; return MSA-1."""
    before = store.dump()
    ack = store.receive(raw)  # never raises: an exception here fails the test
    assert isinstance(ack, str) and ack.startswith("MSH"), ack
    code = msa_1(ack)
    assert code in ("AA", "AE", "AR"), ack
    event(f"MSA-1 {code}")  # --hypothesis-show-statistics shows the mix
    if code == "AA":
        assert store.problems() == [], (raw, ack)
    else:
        assert store.dump() == before, f"{code} but the store changed: {raw!r} -> {ack!r}"
    return code


# --------------------------------------------------------------------------------------------
# Inputs


def _bed(w: int, b: int) -> fakepas.Bed:
    ward = f"W{w:02d}"
    code = f"{ward}-SR-{b}" if b == BEDS else f"{ward}-B1-{b}"
    return fakepas.Bed(ward, code.split("-")[1], code)


ALL_BEDS = [_bed(w, b) for w in range(1, WARDS + 1) for b in range(1, BEDS + 1)]
PEOPLE = [
    PatientDetails(
        nhs_number=fx.NHS_1, mrn="P1", given_name="Ann", family_name="Ames", dob="1940-01-02", sex="female"
    ),
    PatientDetails(
        nhs_number=fx.NHS_2, mrn="P2", given_name="Bo", family_name="Byrne", dob="1961-05-06", sex="male"
    ),
    PatientDetails(
        nhs_number=fx.NHS_3, mrn="P3", given_name="Cy", family_name="Cole", dob=None, sex="unknown"
    ),
    PatientDetails(nhs_number=None, mrn="P4", given_name="", family_name="UNKNOWN", dob=None, sex="other"),
]
EVENTS = ["A01", "A02", "A03", "A08", "A11", "A12", "A13"]
#: Sequences: admissions and transfers more often than cancellations, as in a real feed.
WEIGHTED_EVENTS = ["A01", "A01", "A01", "A02", "A02", "A03", "A08", "A08", "A11", "A12", "A13"]
T0 = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)  # spans the spring clock change

#: Valid messages to mutate: the fixtures, and fake-PAS messages that fit this layout.
SEEDS: list[bytes] = [raw.encode() for raw, _, _ in fx.ALL_ADT.values()] + [
    fakepas.adt(
        ev,
        PEOPLE[i % 4],
        bed=ALL_BEDS[i],
        prior=ALL_BEDS[-1 - i],
        attending="Dr A B",
        edd="2024-04-02",
        when=T0 + timedelta(minutes=i),
        control_id=f"SEED{i}",
    ).encode()
    for i, ev in enumerate(EVENTS)
]

#: Before each mutated message: every patient of PEOPLE admitted, earlier than any seed.
ADMIT_EVERYONE: list[bytes] = [
    fakepas.adt("A01", who, bed=ALL_BEDS[-1 - i], when=T0 - timedelta(days=90), control_id=f"IN{i}").encode()
    for i, who in enumerate(PEOPLE)
]

#: Characters that matter to HL7: separators, escapes, segment ends, MLLP framing, odd bytes.
SPICY = [
    *list('|^~\\&\r\n\x0b\x1c\x00 #EFSTRXHN.0123456789AZaz"'),
    "\\T\\",
    "\\X41\\",
    "\\.br\\",
    '""',
    "é",
    "\ufeff",
]
spicy_text = st.lists(st.sampled_from(SPICY) | st.text(max_size=3), max_size=12).map("".join)


@st.composite
def byte_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "repeat"]))
        chunk = draw(
            st.binary(min_size=1, max_size=8) | spicy_text.map(lambda t: t.encode("utf-8", "replace"))
        )
        if op == "insert":
            data[at:at] = chunk
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "replace":
            data[at : at + len(chunk)] = chunk
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def field_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    segments = [s for s in raw.decode("utf-8", "replace").replace("\n", "\r").split("\r") if s]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["field", "drop", "duplicate", "swap", "event", "version", "z"]))
        i = draw(st.integers(0, len(segments) - 1))
        fields = segments[i].split("|")
        if op == "field":
            j = draw(st.integers(1, max(1, len(fields) + 2)))
            fields += [""] * (j + 1 - len(fields))
            fields[j] = draw(spicy_text)
            segments[i] = "|".join(fields)
        elif op == "drop" and len(segments) > 1:
            del segments[i]
        elif op == "duplicate":
            segments.insert(i, segments[i])
        elif op == "swap":
            k = draw(st.integers(0, len(segments) - 1))
            segments[i], segments[k] = segments[k], segments[i]
        elif op == "event" and segments[0].startswith("MSH"):
            head = segments[0].split("|")
            if len(head) > 8:
                head[8] = f"ADT^{draw(st.sampled_from([*EVENTS, 'A04', 'A31', '', 'a01']))}"
                segments[0] = "|".join(head)
        elif op == "version" and segments[0].startswith("MSH"):
            head = segments[0].split("|")
            if len(head) > 11:
                head[11] = draw(
                    st.sampled_from(["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.2", "", "2.5^GBR"])
                )
                segments[0] = "|".join(head)
        else:
            segments.insert(
                i + 1, f"Z{draw(st.sampled_from('ABCXYZ'))}{draw(st.sampled_from('0123'))}|{draw(spicy_text)}"
            )
    ending = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    return ending.join(segments).encode("utf-8", "replace") + ending.encode()


mutated = st.sampled_from(SEEDS).flatmap(
    lambda raw: st.one_of(st.just(raw), byte_mutation(raw), field_mutation(raw))
)


@st.composite
def adt_sequence(draw: st.DrawFn) -> list[bytes]:
    """A run of fake-PAS messages for a few patients: mostly applicable, some late, some
    repeated, some from another sender, some mutated."""
    out: list[bytes] = []
    sent: list[bytes] = []
    clock = T0
    ids = itertools.count(1)
    for _ in range(draw(st.integers(1, 8))):
        if sent and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(sent)))  # the same message again
            continue
        event = draw(st.sampled_from(WEIGHTED_EVENTS))
        who = PEOPLE[draw(st.integers(0, len(PEOPLE) - 1))]
        if draw(st.booleans()):
            who = replace(who, family_name=draw(st.sampled_from(["Ames", "Zed", "O'Neil", "Smith&Jones"])))
        target = (
            draw(st.none() | st.sampled_from(ALL_BEDS))
            if event not in ("A01", "A02")
            else draw(st.sampled_from(ALL_BEDS))
        )
        clock += timedelta(minutes=draw(st.integers(-90, 120)))
        message = fakepas.adt(
            event,
            who,
            bed=target,
            prior=draw(st.none() | st.sampled_from(ALL_BEDS)),
            attending=draw(st.none() | st.sampled_from(["Dr Ada Lovelace", "Mr Smith", "Prof X Y Z"])),
            edd=draw(st.none() | st.sampled_from(["2024-04-01", "2024-04-30"])),
            when=clock,
            control_id=f"Q{next(ids)}",
            sender=draw(st.sampled_from(["PAS", "PAS", "ED"])),
            version=draw(st.sampled_from(["2.3", "2.4", "2.5"])),
        ).encode()
        if draw(st.integers(0, 5)) == 0:
            message = draw(st.one_of(byte_mutation(message), field_mutation(message)))
        sent.append(message)
        out.append(message)
    return out


# --------------------------------------------------------------------------------------------
# Properties


@PROPERTY
@given(raw=st.binary(max_size=3000) | spicy_text.map(lambda t: t.encode("utf-8", "replace")))
def test_any_bytes_get_an_ack_and_change_nothing(everyone_in: Store, raw: bytes) -> None:
    assert check(everyone_in, raw) in ("AE", "AR")


@PROPERTY
@given(raw=mutated)
def test_mutated_messages_get_an_ack_and_never_half_apply(everyone_in: Store, raw: bytes) -> None:
    everyone_in.restore()
    check(everyone_in, raw)


@settings(PROPERTY, max_examples=100)
@given(start=st.sampled_from(["empty", "everyone_in"]), messages=adt_sequence())
def test_message_sequences_keep_the_board_coherent(store: Store, start: str, messages: list[bytes]) -> None:
    store.restore_to(start)
    for raw in messages:
        check(store, raw)


def test_the_properties_see_every_answer(everyone_in: Store) -> None:
    """The inputs above reach AA, AE and AR (a guard against strategies that only make noise)."""
    everyone_in.restore()
    codes = [msa_1(everyone_in.receive(seed)) for seed in SEEDS]
    assert codes.count("AA") >= len(SEEDS) // 2, codes
    codes.append(msa_1(everyone_in.receive(b"\x00garbage")))
    assert set(codes) == {"AA", "AE", "AR"}, codes
