"""HL7 backlog replay: 10,000 ADT messages over one MLLP connection, as after a feed outage.

A real `whiteboard serve` on SQLite (the embedded default) with `WHITEBOARD_MLLP_PORT` set and
a 2,000-bed layout (50 wards of 40 beds). Before the outage the hospital is 85 % full: 1,700
A01s fill it first, over the same connection, reported apart. The backlog is then a realistic
mix of A01 admit, A02 transfer, A03 discharge and A08 update written by the demo's fake PAS
(`whiteboard.hl7.fakepas`), generated in order from a model of the hospital so every message
applies cleanly (roughly 25 % admits, 15 % transfers, 25 % discharges, 35 % updates, steered to
keep occupancy near 85 %; one patient in 20 has no NHS number). Event times go forward 20 s a
message.

The messages go over ONE connection, each sent after the previous one's ACK, as MLLP requires
of a sender that keeps order. Measured: messages per second over the backlog, per-message ACK
latency (send to ACK, p50/p99/max), the AA/AE/AR counts (all should be AA), the server's CPU
and memory, and at the end that the board matches the model (beds occupied per ward). Results
go to bench/results/hl7_backlog.json and, for a full run, to the `hl7_backlog` section of
docs/benchmarks.md. `--profile` attaches `py-spy record --gil` to the server for the backlog and
prints where its CPU goes, step by step.

Run: .venv/bin/python bench/hl7_backlog.py [--quick] [--profile] [--no-doc] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

from whiteboard.hl7 import fakepas
from whiteboard.hl7.mllp import END_BLOCK, START_BLOCK, frame
from whiteboard.service import PatientDetails

FULL = {"messages": 10_000, "wards": 50, "beds": 40}
QUICK = {"messages": 1_000, "wards": 50, "beds": 40}
TARGET_MSG_S = 500.0
OCCUPANCY = 0.85
#: The steady mix once the hospital is full (the fill phase is mostly admissions).
MIX = {"A01": 0.25, "A02": 0.15, "A03": 0.25, "A08": 0.35}
GIVEN = ["Ada", "Bola", "Chen", "Dev", "Eilidh", "Femi", "Gwen", "Hamza", "Iris", "Jon", "Kasia", "Liam"]
FAMILY = [
    "Ahmed",
    "Brown",
    "Chowdhury",
    "Davies",
    "Evans",
    "Fraser",
    "Green",
    "Hughes",
    "Iqbal",
    "Jones",
    "Khan",
    "Lewis",
    "Murphy",
    "Nowak",
    "O'Brien",
    "Patel",
    "Quinn",
    "Roberts",
    "Smith",
    "Taylor",
]
DOCTORS = [
    "Dr Chidi Okafor",
    "Dr Ada Lovelace",
    "Ms Grace Hopper",
    "Mr Alan Turing",
    "Prof Mary Seacole",
    "Dr Rosalind Franklin",
    "Mr Joseph Lister",
    "Dr Elizabeth Anderson",
]


def nhs_number(n: int) -> str:
    """A valid NHS number in the 999 test range, different for every n (one in 11 skipped)."""
    for k in itertools.count(n * 2):
        stem = f"999{k:06d}"
        check = (11 - sum(int(d) * (10 - i) for i, d in enumerate(stem)) % 11) % 11
        if check != 10:
            return stem + str(check)
    raise AssertionError("unreachable")


@dataclass
class Hospital:
    """The model the backlog is generated from: who is in which bed."""

    beds: list[fakepas.Bed]
    rng: random.Random
    in_bed: dict[str, PatientDetails] = field(default_factory=dict)  # bed code -> patient
    where: dict[str, fakepas.Bed] = field(default_factory=dict)  # MRN -> bed
    free: set[str] = field(default_factory=set)
    by_code: dict[str, fakepas.Bed] = field(default_factory=dict)
    people: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    def __post_init__(self) -> None:
        self.by_code = {b.code: b for b in self.beds}
        self.free = set(self.by_code)

    def new_patient(self) -> PatientDetails:
        n = next(self.people)
        return PatientDetails(
            nhs_number=nhs_number(n) if n % 20 else None,  # one in 20 unidentified: MRN only
            mrn=f"RX{n:07d}",
            given_name=self.rng.choice(GIVEN),
            family_name=self.rng.choice(FAMILY),
            dob=f"{self.rng.randint(1925, 2005)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}",
            sex=self.rng.choice(["female", "male", "female", "male", "unknown"]),
        )

    def pick_free(self) -> fakepas.Bed:
        return self.by_code[self.rng.choice(sorted(self.free))]

    def pick_patient(self) -> PatientDetails:
        return self.in_bed[self.rng.choice(sorted(self.in_bed))]

    def next_event(self) -> str:
        weights = dict(MIX)
        occupancy = len(self.in_bed) / len(self.beds)
        if occupancy > OCCUPANCY:  # keep the hospital about as full as it was
            weights["A01"] *= 0.5
            weights["A03"] *= 1.5
        elif occupancy < OCCUPANCY - 0.02:
            weights["A01"] *= 1.5
            weights["A03"] *= 0.5
        if not self.free:
            weights["A01"] = weights["A02"] = 0.0
        if not self.in_bed:
            return "A01"
        return self.rng.choices(list(weights), list(weights.values()))[0]

    def message(self, event: str, when: datetime, control_id: str) -> bytes:
        """The fake PAS's message for `event`, with the model moved on to match."""
        rng = self.rng
        kw: dict[str, Any] = {"when": when, "control_id": control_id, "sender": "PAS", "facility": "RX1"}
        if event == "A01":
            who, bed = self.new_patient(), self.pick_free()
            edd = (when + timedelta(days=rng.randint(1, 14))).date().isoformat()
            kw.update(bed=bed, attending=rng.choice(DOCTORS), edd=edd)
            self.free.discard(bed.code)
            self.in_bed[bed.code] = who
            self.where[who.mrn] = bed
        elif event == "A02":
            who, bed = self.pick_patient(), self.pick_free()
            left = self.where[who.mrn]
            kw.update(bed=bed, prior=left, attending=rng.choice(DOCTORS))
            del self.in_bed[left.code]
            self.free.add(left.code)
            self.free.discard(bed.code)
            self.in_bed[bed.code] = who
            self.where[who.mrn] = bed
        elif event == "A03":
            who = self.pick_patient()
            left = self.where.pop(who.mrn)
            kw.update(bed=left)
            del self.in_bed[left.code]
            self.free.add(left.code)
        else:  # A08: a new consultant, a new EDD, sometimes a corrected name
            who = self.pick_patient()
            if rng.random() < 0.2:
                who = replace(who, family_name=rng.choice(FAMILY))
                self.in_bed[self.where[who.mrn].code] = who
            edd = (when + timedelta(days=rng.randint(0, 10))).date().isoformat()
            kw.update(bed=self.where[who.mrn], attending=rng.choice(DOCTORS), edd=edd)
        return fakepas.adt(event, who, **kw).encode()


def backlog(
    n: int, beds: list[fakepas.Bed], seed: int = 20240601
) -> tuple[list[bytes], list[bytes], Hospital]:
    """(the admissions that fill the board before the outage, the `n` backlog messages in
    order, the hospital as it is after the last of them)."""
    h = Hospital(beds, random.Random(seed))
    when = datetime(2024, 6, 1, 6, 0, tzinfo=UTC)
    prefill = []
    while len(h.in_bed) < OCCUPANCY * len(beds):
        when += timedelta(seconds=20)
        prefill.append(h.message("A01", when, f"PF{len(prefill):07d}"))
    out = []
    for i in range(n):
        when += timedelta(seconds=20)
        out.append(h.message(h.next_event(), when, f"BL{i:07d}"))
    return prefill, out, h


class GilProfiler(c.Profiler):
    """`py-spy record --gil`: only samples of the thread holding the GIL, i.e. where the
    server's Python CPU time goes (threads blocked on a queue or a socket are left out)."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.process = subprocess.Popen(
            [exe, "record", "--gil", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", str(rate)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


#: (label, a frame that marks it), the first match of a stack wins: the feed's steps, then
#: the machinery under them.
STEPS = [
    ("HL7 parse (parse_adt)", "parse_adt ("),
    ("ACK build", "build_ack ("),
    ("feed: find_wards/_facts (patient, open stay, wards)", "Feed.apply.<locals>.find_wards ("),
    ("feed: plan (duplicate check, FeedCommand)", "Feed.apply.<locals>.plan ("),
    ("store: load_board (the wards' boards)", "load_board ("),
    ("core: decide_feed (pure rules)", "decide_feed ("),
    ("store: persist (rows + events)", "Repository.persist ("),
    ("feed: after (hl7_messages, feed_time)", "Feed.apply.<locals>.after ("),
    ("store: BEGIN/COMMIT", "AsyncTransaction"),
    ("announce (broker publish)", "BoardService.announce ("),
    ("MLLP framing and socket I/O", "whiteboard/hl7/mllp.py"),
    # SQLAlchemy runs each statement in a greenlet whose stack py-spy shows without its caller:
    ("SQLAlchemy statements in greenlets (compile, cache keys, execute; caller not shown)", "sqlalchemy/"),
    ("aiosqlite worker thread (sqlite3 calls, queue hand-off)", "aiosqlite/"),
    ("asyncio event loop (callbacks, results handed back from threads)", "asyncio/"),
]
MACHINERY = [
    ("aiosqlite worker thread (sqlite3 calls, queue hand-off)", "aiosqlite/core.py"),
    ("SQLAlchemy statement compile / cache keys", "sqlalchemy/sql/"),
    ("SQLAlchemy execution (greenlet, result rows)", "sqlalchemy/"),
    ("asyncio event loop (select, callbacks)", "asyncio/"),
]


def breakdown(raw: Path) -> list[tuple[str, float]]:
    """Share of samples per feed step (and, inside the steps, per piece of machinery)."""
    counts: dict[str, int] = {}
    total = 0
    for stack, n in c.collapsed_stacks(raw):
        total += n
        step = next((label for label, mark in STEPS if mark in stack), "other")
        leaf = stack.split(";")[-3:]
        how = next(
            (label for label, mark in MACHINERY if any(mark in f for f in leaf)), "Python (whiteboard, hl7)"
        )
        for key in (step, f"    of which {how}"):
            counts[key] = counts.get(key, 0) + n
    steps = sorted(((k, v) for k, v in counts.items() if not k.startswith(" ")), key=lambda kv: -kv[1])
    inner = sorted(((k, v) for k, v in counts.items() if k.startswith(" ")), key=lambda kv: -kv[1])
    return [
        (k, 100 * v / max(total, 1))
        for k, v in [*steps, ("all samples, by what runs at the leaf:", 0), *inner]
    ]


def msa_1(ack: bytes) -> str:
    start = ack.find(b"\rMSA")
    return ack[start + 5 : start + 7].decode() if start >= 0 else "??"


@dataclass
class Replay:
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"AA": 0, "AE": 0, "AR": 0, "??": 0})
    refused: list[bytes] = field(default_factory=list)
    wall: float = 0.0


async def replay(
    port: int, prefill: list[bytes], messages: list[bytes], on_start: Any = None
) -> tuple[Replay, Replay]:
    """Over ONE connection, each message after the previous one's ACK: the prefill (not
    timed as the backlog, reported apart), then `on_start()`, then the backlog."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        before = await _send_all(reader, writer, prefill, "prefill")
        if on_start is not None:
            on_start()
        measured = await _send_all(reader, writer, messages, "backlog")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return before, measured


async def _send_all(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, messages: list[bytes], label: str
) -> Replay:
    r = Replay()
    latencies, counts, refused = r.latencies, r.counts, r.refused
    t0 = time.perf_counter()
    try:
        for i, message in enumerate(messages):
            sent = time.perf_counter()
            writer.write(frame(message))
            await writer.drain()
            data = await asyncio.wait_for(reader.readuntil(END_BLOCK), 60)
            latencies.append(time.perf_counter() - sent)
            ack = data[data.find(START_BLOCK) + 1 : -len(END_BLOCK)]
            code = msa_1(ack)
            counts[code] = counts.get(code, 0) + 1
            if code != "AA" and len(refused) < 5:
                refused.append(ack)
            if (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - t0)
                print(f"  {label}: {i + 1:>6} sent, {rate:,.0f} msg/s so far", flush=True)
    finally:
        r.wall = time.perf_counter() - t0
    return r


def board_occupancy(port: int, token: str) -> dict[str, int]:
    """Occupied beds per ward, as the API shows them."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/wards", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        wards = orjson.loads(r.read())
    out = {}
    for w in wards:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/wards/{w['code']}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            snap = orjson.loads(r.read())
        out[w["code"]] = sum(1 for b in snap["beds"] if b["state"] == "occupied")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1,000 messages instead of 10,000; writes no doc"
    )
    parser.add_argument("--messages", type=int, default=None, help="override the number of messages")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy --gil on the server during the backlog"
    )
    parser.add_argument("--wait-quiet", type=float, default=None, help="wait up to this many seconds for "
                        "the machine to go quiet first (default: 0 with --quick, else 300)")  # fmt: skip
    args = parser.parse_args()
    p = dict(QUICK if args.quick else FULL)
    if args.messages:
        p["messages"] = args.messages
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 300)
    quiet = c.wait_quiet(wait) if wait > 0 else {"waited_s": 0, "busy_pct": None, "quiet": None}
    machine = {**c.machine(), "commit": code_version()}
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-hl7-"))
    name = "hl7_backlog-quick" if args.quick else "hl7_backlog"
    print(f"# hl7_backlog ({p['messages']:,} messages) in {tmp}", flush=True)
    mllp_port = c.free_port()
    env = c.base_env(
        {
            "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/whiteboard.db",
            "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
            "WHITEBOARD_MLLP_PORT": str(mllp_port),
            "WHITEBOARD_LOG_LEVEL": "WARNING",
        }
    )
    server: c.Service | None = None
    profiler: c.Profiler | None = None
    started: dict[str, float] = {}
    try:
        wards = c.write_layout(tmp / "layout.json", p["wards"], p["beds"])
        c.wb_cli(env, tmp, "db", "upgrade")
        c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
        token = c.make_token(env, tmp, "bench-admin", "admin")
        beds = [fakepas.Bed(w, code.split("-")[1], code) for w, codes in wards.items() for code in codes]
        t = time.perf_counter()
        prefill, messages, model = backlog(p["messages"], beds)
        events = ("A01", "A02", "A03", "A08")
        mix = {e: sum(1 for m in messages if f"|ADT^{e}^".encode() in m) for e in events}
        sizes = sorted(len(m) for m in messages)
        print(
            f"  generated in {time.perf_counter() - t:.1f} s: {len(prefill):,} to fill, then {mix}",
            flush=True,
        )
        server = c.Service.whiteboard("whiteboard", env, tmp).start()

        def on_start() -> None:  # between the prefill and the backlog
            nonlocal profiler
            if args.profile:
                profiler = GilProfiler(server.pid, c.RESULTS / "profiles" / f"{name}.txt")
                time.sleep(1.0)
            started.update(cpu=c.proc_cpu_seconds(server.pid), at=time.monotonic())

        filled, run = asyncio.run(replay(mllp_port, prefill, messages, on_start))
        server_cpu = (
            100 * (c.proc_cpu_seconds(server.pid) - started["cpu"]) / (time.monotonic() - started["at"])
        )
        profile_path = profiler.stop() if profiler is not None else None
        rss_mib = server.rss_kib() / 1024
        shown = board_occupancy(server.port, token)
        expected = {w: sum(1 for code in model.in_bed if code.startswith(f"{w}-")) for w in wards}
        matches = shown == expected
        problems = server.log_problems()
    finally:
        if profiler is not None:
            profiler.stop()
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    lat = c.summary_ms(run.latencies)
    rate = len(messages) / run.wall
    fill_rate = len(prefill) / filled.wall
    data = {
        "machine": machine,
        "quiet": quiet,
        "parameters": {
            **p,
            "prefill": len(prefill),
            "mix": mix,
            "message_bytes_p50": sizes[len(sizes) // 2],
            "occupancy_target": OCCUPANCY,
        },
        "messages_per_s": round(rate, 1),
        "wall_s": round(run.wall, 2),
        "ack_latency_ms": lat,
        "acks": run.counts,
        "refused_examples": [r.decode("utf-8", "replace") for r in run.refused + filled.refused],
        "prefill": {
            "messages_per_s": round(fill_rate, 1),
            "acks": filled.counts,
            "ack_latency_ms": c.summary_ms(filled.latencies),
        },
        "server_cpu_pct": round(server_cpu, 1),
        "server_cpu_ms_per_message": round(10 * server_cpu / rate, 2),
        "server_rss_mib": round(rss_mib, 1),
        "board_matches_model": matches,
        "occupied_at_end": sum(shown.values()),
        "server_log_problems": problems[:10],
        "target_msg_s": TARGET_MSG_S,
    }
    path = c.save_results(name, data)
    print(
        orjson.dumps({k: v for k, v in data.items() if k != "machine"}, option=orjson.OPT_INDENT_2).decode()
    )
    if profile_path is not None and profile_path.exists():
        print(f"\n# where the server's GIL-holding time goes (py-spy --gil), {profile_path}")
        for label, pct in breakdown(profile_path):
            print(f"  {pct:5.1f} %  {label}")
        print("\n# heaviest frames (inclusive %)")
        for frame_name, self_pct, incl in c.top_frames(profile_path, 40):
            print(f"  {incl:5.1f} % incl  {self_pct:5.1f} % self  {frame_name}")
    if not (args.no_doc or args.quick):  # a quick run is a smoke check: it writes no doc
        c.write_doc_section("hl7_backlog", doc_section(data, len(messages)))
    print(f"\nresults: {path}")
    counts = run.counts
    if counts["AA"] != len(messages) or filled.counts["AA"] != len(prefill) or not matches:
        print("FAILED: not every message was applied cleanly", file=sys.stderr)
        sys.exit(1)


def code_version() -> str:
    """The commit measured, marked when whiteboard/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "whiteboard"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} with uncommitted changes in whiteboard/" if dirty else head


def doc_section(data: dict[str, Any], n: int) -> str:
    m, p, lat, counts = data["machine"], data["parameters"], data["ack_latency_ms"], data["acks"]
    rate = data["messages_per_s"]
    verdict = "meets it" if rate >= TARGET_MSG_S else "**misses it**"
    quiet = data["quiet"]
    noisy = (
        "" if quiet.get("quiet") in (None, True) else f" (it never went quiet: {quiet['busy_pct']} % busy)"
    )
    mix = p["mix"]
    per_message = data["server_cpu_ms_per_message"]
    rows = [
        ["messages per second (backlog)", f"**{rate:,.0f}** (target ≥ {TARGET_MSG_S:,.0f}: {verdict})"],
        ["wall time", f"{data['wall_s']:,.1f} s"],
        ["ACK latency p50 / p99 / max", f"{lat['p50']} / {lat['p99']} / {lat['max']} ms"],
        ["ACKs AA / AE / AR", f"{counts['AA']:,} / {counts['AE']:,} / {counts['AR']:,}"],
        ["board matches the model at the end", "yes" if data["board_matches_model"] else "**no**"],
        ["server CPU (one core = 100 %)", f"{data['server_cpu_pct']:.0f} % ({per_message} ms a message)"],
        ["server RSS at the end", f"{data['server_rss_mib']:.0f} MiB"],
        ["prefill (A01 only), for comparison", f"{data['prefill']['messages_per_s']:,.0f} msg/s"],
    ]  # fmt: skip
    return f"""## HL7 backlog replay (`bench/hl7_backlog.py`)

{m["date"]}; {m["nproc"]} CPUs ({m["cpu"]}), {m["mem_gib"]} GiB, Linux {m["kernel"]},
Python {m["python"]}; load average {m["loadavg_at_start"]:.2f} when it started{noisy}; code at
{m["commit"]}.

One `whiteboard serve` on SQLite with `WHITEBOARD_MLLP_PORT`, {p["wards"]} wards of {p["beds"]} beds
({p["wards"] * p["beds"]:,} beds), filled to {p["occupancy_target"]:.0%} first ({p["prefill"]:,} A01s over the
same connection, not counted). Then the backlog: {n:,} fake-PAS ADT messages generated in order so each
applies cleanly (A01 {mix["A01"]:,}, A02 {mix["A02"]:,}, A03 {mix["A03"]:,}, A08 {mix["A08"]:,}; median
{p["message_bytes_p50"]} bytes), over **one** MLLP connection, each sent after the previous ACK.

{c.table(["", "value"], rows)}
"""


if __name__ == "__main__":
    main()
