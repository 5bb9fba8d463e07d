"""Fanout across processes (issue 3): two `whiteboard serve` sharing PostgreSQL and Redis.

80 wards × 25 beds (2,000 beds), every second bed occupied (admitted through the API). 2,500
sockets (clinical view, bearer token) over the 80 wards, split evenly across both processes,
one parsing probe per ward per process. Writes go through both processes' APIs in turn
(PATCH bed state / PATCH stay news2 with If-Match, round-robin over wards, open-loop):

1. steady: 20 changes/s for 30 s;
2. burst: 500 changes/s for 10 s (offered vs achieved is reported);
3. saturation: the sockets re-opened on 4 hot wards (625 per ward), the change rate ramped
   in steps until delivery falls behind: the most frames/s the fanout delivers;
4. 10,000 idle sockets on one fresh process: RSS per socket, heartbeats, then 20 changes/s.

Every phase checks every socket: each committed change reaches every socket of its ward, in
seq order, no gaps, no duplicates. The same phases run against a bare reference
(`bench/reference/server.py`: two `websockets`-library processes, and for memory and
saturation also two Starlette/uvicorn ones) with frames of the same mean size; results are
given as ratios to it. PostgreSQL and Redis are private ones started for the run (or
WHITEBOARD_TEST_DATABASE_URL / WHITEBOARD_TEST_REDIS_URL when set).

Run: .venv/bin/python bench/fanout_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c

FULL = {
    "wards": 80,
    "beds": 25,
    "sockets": 2500,
    "steady_rate": 20.0,
    "steady_s": 30.0,
    "burst_rate": 500.0,
    "burst_s": 10.0,
    "idle_s": 5.0,
    "sat_wards": 2,
    "sat_sockets": 2500,
    "sat_steps": [4, 8, 16, 24, 32, 40, 48, 64, 96],
    "sat_step_s": 5.0,
    "sat_repeats": 2,
    "big_sockets": 10000,
    "big_hold_s": 12.0,
    "big_rate": 20.0,
    "big_s": 20.0,
    "rounds": 2,
    "writer_tokens": 8,
}
QUICK = {
    "wards": 8,
    "beds": 25,
    "sockets": 200,
    "steady_rate": 20.0,
    "steady_s": 4.0,
    "burst_rate": 100.0,
    "burst_s": 2.0,
    "idle_s": 1.0,
    "sat_wards": 2,
    "sat_sockets": 200,
    "sat_steps": [32],
    "sat_step_s": 2.0,
    "sat_repeats": 1,
    "big_sockets": 200,
    "big_hold_s": 5.5,
    "big_rate": 20.0,
    "big_s": 2.0,
    "rounds": 1,
    "writer_tokens": 2,
}
TARGETS = {"steady_p99_ms": 25.0, "burst_p99_ms": 100.0, "sat_ratio": 0.7, "kib_per_socket": 20.0}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.p = c.apply_overrides(dict(QUICK if args.quick else FULL), args.set)
        self.tmp = Path(tempfile.mkdtemp(prefix="wb-bench-cluster-"))
        self.out: dict[str, Any] = {"params": self.p, "machine": c.machine()}
        self.sockets = c.Sockets(args.socket_procs)
        self.writer = c.Worker(c.writer_worker, "writer")
        self.services: list[c.Service] = []  # every server now running, for the CPU meter
        self.pg_pids: Any = list
        self.redis_pids: Any = list
        self.res: dict[tuple[str, str], c.Resource] = {}
        self.source: dict[str, Any] = {"env": {}}
        self.writer_tokens: list[str] = []
        self.skip = {x for x in args.skip.split(",") if x}
        self.out["skipped"] = sorted(self.skip)

    # --- plumbing ----------------------------------------------------------------------------

    def meter(self) -> c.CpuMeter:
        groups: dict[str, Any] = {s.name: (lambda s=s: [s.pid]) for s in self.services}
        groups["postgres"] = self.pg_pids
        groups["redis"] = self.redis_pids
        groups["load generator (sockets)"] = self.sockets.pids
        groups["load generator (writer)"] = lambda: [self.writer.pid]
        return c.CpuMeter(groups)

    def start(self, *services: c.Service) -> None:
        for s in services:
            s.start()
            self.services.append(s)

    def stop(self, *services: c.Service) -> None:
        for s in services:
            s.stop()
            if s in self.services:
                self.services.remove(s)

    def idle_memory(
        self, label: str, servers: list[c.Service], token: str, n: int, wards: list[str], tag: str
    ) -> dict[str, Any]:
        """RSS of `servers` with 0 sockets (after a warm-up) and with n idle ones (left open, tagged)."""
        c.warm_up(self.sockets, servers, token, wards)
        rss0 = c.steady_rss([s.pid for s in servers])
        specs = c.socket_specs(servers, wards, n)
        for spec in specs:
            spec.tag = tag
        meter = self.meter()
        meter.start()
        opened = self.sockets.open(specs, token)
        connect_cpu = meter.stop()
        side = "whiteboard" if label.startswith("whiteboard") else "reference"
        connect_ms = (
            sum(v for k, v in connect_cpu.items() if k.startswith(side)) / 100 * meter.wall * 1000
        ) / max(opened["opened"], 1)
        print(
            f"{label}: opened {opened['opened']:,} sockets in {opened['seconds']} s "
            f"(failures: {opened['failures'] or 'none'})",
            flush=True,
        )
        meter = self.meter()
        meter.start()
        time.sleep(self.p["idle_s"])
        cpu = meter.stop()
        rss1 = c.steady_rss([s.pid for s in servers])
        grown = sum(rss1.values()) - sum(rss0.values())
        return {
            "rss0_kib": rss0,
            "rss1_kib": rss1,
            "sockets": opened["opened"],
            "open": opened,
            "kib_per_socket": round(grown / max(opened["opened"], 1), 1),
            "idle_cpu": cpu,
            "connect_cpu_ms_per_socket": round(connect_ms, 2),
        }

    def api_msg(
        self, servers: list[c.Service], token: str, wards: list[str] | None, rate: float, duration: float
    ) -> dict[str, Any]:
        """A write phase through the API of `servers` in turn; `wards` None: all of them."""
        resources = [r for r in self.res.values() if wards is None or r.ward in wards]
        return {
            "cmd": "write",
            "mode": "api",
            "targets": [{"host": "127.0.0.1", "port": s.port} for s in servers],
            "token": token,
            "tokens": self.writer_tokens,
            "resources": resources,
            "rate": rate,
            "duration": duration,
            "pool": 32,
        }

    def put_res(self, result: c.PhaseResult) -> None:
        """Keep the versions the writer saw, so the next phase's If-Match headers are current."""
        for r in result.extra.pop("resources", None) or []:
            r.busy = False
            self.res[(r.kind, r.ref)] = r

    @staticmethod
    def ref_msg(servers: list[c.Service], wards: list[str], rate: float, duration: float) -> dict[str, Any]:
        return {
            "cmd": "write",
            "mode": "reference",
            "wards": wards,
            "rate": rate,
            "duration": duration,
            "targets": [{"host": "127.0.0.1", "port": s.port} for s in servers],
        }

    def phase(self, name: str, msg: dict[str, Any], finals: Any, record: bool = True) -> c.PhaseResult:
        r = c.run_phase(
            name, self.sockets, self.writer, msg, finals, self.meter(), catch_up_timeout=30.0, record=record
        )
        self.put_res(r)
        return r

    # --- saturation ----------------------------------------------------------------------------

    def ramp(self, label: str, make_msg: Any, finals: Any, fanout: float) -> dict[str, Any]:
        """Raise the change rate step by step until delivery falls behind."""
        p = self.p
        steps = []
        peak = 0.0
        for rate in p["sat_steps"]:
            r = c.run_phase(
                f"{label} {rate}/s",
                self.sockets,
                self.writer,
                make_msg(rate, p["sat_step_s"]),
                finals,
                self.meter(),
                catch_up_timeout=15.0,
                record=False,
            )
            self.put_res(r)
            expected_fps = r.achieved_rate * fanout
            side = "whiteboard" if label.startswith("whiteboard") else "ref"
            step = {
                "rate": rate,
                "achieved": r.achieved_rate,
                "offered_fps": rate * fanout,
                "expected_fps": round(expected_fps),
                "delivered_fps": r.frames_per_s,
                "probe_p50_ms": r.probe_ms["p50"],
                "probe_p99_ms": r.probe_ms["p99"],
                "lost": r.lost_frames,
                "gaps": r.gaps,
                "closed": r.closed,
                "failed": r.writes_failed,
                "skipped": r.skipped,
                "catch_up_s": r.catch_up_s,
                "cpu": r.cpu,
                "servers_cpu": round(sum(v for k, v in r.cpu.items() if k.startswith(side)), 1),
                # the servers' CPU time per frame delivered: what saturation costs, less sensitive to
                # other tenants of the machine than the frames/s themselves
                "cpu_us_per_frame": round(c.cpu_seconds(r, side) / max(r.delivered_frames, 1) * 1e6, 1),
                "loadgen_us_per_frame": round(
                    c.cpu_seconds(r, "load generator (sockets)") / max(r.delivered_frames, 1) * 1e6, 1
                ),
            }
            steps.append(step)
            peak = max(peak, r.frames_per_s)
            print(
                f"  {label} {rate:>4}/s: achieved {r.achieved_rate:7.1f}/s, delivered {r.frames_per_s:9,.0f} "
                f"frames/s of {expected_fps:9,.0f}, probe p99 {r.probe_ms['p99']:8.1f} ms, "
                f"catch-up {r.catch_up_s:.2f} s, lost {r.lost_frames}, closed {r.closed or 0}, "
                f"servers CPU {step['servers_cpu']:.0f} %, load-gen sockets CPU "
                f"{r.cpu.get('load generator (sockets)', 0):.0f} %",
                flush=True,
            )
            if r.frames_per_s < 0.8 * rate * fanout or r.closed or r.catch_up_s > 10 or r.lost_frames:
                break
        sustained = [
            s
            for s in steps
            if s["delivered_fps"] >= 0.95 * s["offered_fps"]
            and not s["closed"]
            and not s["lost"]
            and s["catch_up_s"] <= 2.0
        ]
        return {
            "label": label,
            "fanout": fanout,
            "steps": steps,
            "peak_fps": peak,
            "sustained_fps": max((s["delivered_fps"] for s in sustained), default=0.0),
        }

    # --- the run -------------------------------------------------------------------------------

    def quiet(self, label: str, cap: float) -> None:
        """Wait (bounded) for other tenants of the machine to quieten before a group of phases."""
        wait = self.args.wait_quiet if self.args.wait_quiet is not None else (0 if self.args.quick else cap)
        if wait > 0:
            self.out.setdefault("quiet", {})[label] = c.wait_quiet(min(wait, cap))

    def run(self) -> None:
        p, tmp = self.p, self.tmp
        self.quiet("start", 600)
        self.out["machine"] = c.machine()
        self.source = c.source_tree(self.args.source, tmp / "src")
        self.out["source"] = self.source
        started = time.monotonic()
        print(f"# fanout_cluster ({'quick' if self.args.quick else 'full'}) in {tmp}", flush=True)
        with c.postgres_database() as (db_url, pg_pids), c.redis_server() as (redis_url, prefix, redis_pids):
            self.pg_pids, self.redis_pids = pg_pids, redis_pids
            env = c.base_env(
                {
                    "WHITEBOARD_DATABASE_URL": db_url,
                    "WHITEBOARD_REDIS_URL": redis_url,
                    "WHITEBOARD_REDIS_PREFIX": prefix,
                    "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
                    **self.source["env"],
                }
            )
            wards = c.write_layout(tmp / "layout.json", p["wards"], p["beds"])
            ward_list = list(wards)
            c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
            token = c.make_token(env, tmp, "bench", "nurse")
            self.writer_tokens = [
                c.make_token(env, tmp, f"writer{i}", "nurse") for i in range(p["writer_tokens"])
            ]
            seqs = c.postgres_seqs(db_url)
            v = self.args.variant
            ours = [c.Service.whiteboard(f"whiteboard {k}", env, tmp, v) for k in "ab"]
            refs: list[c.Service] = []
            try:
                self.start(*ours)
                hosts = [("127.0.0.1", s.port) for s in ours]
                resources, admitted = c.admit_and_list(hosts, token, wards)
                self.res = {(r.kind, r.ref): r for r in resources}
                self.out["setup"] = admitted
                print(f"admitted {admitted['admitted']} patients in {admitted['seconds']} s", flush=True)
                self.frame_bytes = admitted["frame_bytes_estimate"]
                refs = [
                    c.Service.reference(f"reference websockets {k}", "websockets", tmp, self.frame_bytes)
                    for k in "ab"
                ]
                self.start(*refs)
                self.run_together(token, ward_list, seqs, ours, refs)
            finally:
                self.stop(*ours, *refs)
            if "big" not in self.skip:
                self.run_big(env, token, ward_list, seqs)
        if "starlette" not in self.skip:
            self.run_starlette(ward_list)
        self.sockets.stop()
        self.writer.stop()
        self.out["seconds"] = round(time.monotonic() - started, 1)

    def run_together(
        self, token: str, ward_list: list[str], seqs: Any, ours: list[c.Service], refs: list[c.Service]
    ) -> None:
        """Memory, steady, burst and saturation, the whiteboard and the reference in alternation.

        Both hold their sockets at once (the reference's on wards named "R-W01"…, so the sets never
        mix); each round runs the whiteboard phase, then the same phase on the reference, so other
        tenants of the machine disturb both alike."""
        p = self.p
        ref_wards = ["R-" + w for w in ward_list]
        finals_ours = lambda _r: seqs()  # noqa: E731
        finals_ref = lambda r: r["ref_seq"]  # noqa: E731
        profiles = self.out.setdefault("profiles", {})
        with c.profiled(self.args.profile, "connect", ours, profiles):
            self.out["ours_idle"] = self.idle_memory(
                "whiteboard", ours, token, p["sockets"], ward_list, "ours"
            )
        self.out["ref_websockets_idle"] = self.idle_memory(
            "reference websockets", refs, "", p["sockets"], ref_wards, "ref"
        )
        for name, rate, secs in (
            ("steady", p["steady_rate"], p["steady_s"]),
            ("burst", p["burst_rate"], p["burst_s"]),
        ):
            o_rounds, r_rounds = [], []
            for i in range(p["rounds"]):
                if name == "burst" and i == 0 and "cprofile" in self.args.variant:
                    for s in ours:  # cProfile from here on: the bursts, not the start-up
                        os.kill(s.pid, signal.SIGUSR1)
                with c.profiled(self.args.profile and i == 0, name, ours, profiles):
                    r = self.phase(
                        f"{name} {i + 1}", self.api_msg(ours, token, None, rate, secs), finals_ours
                    )
                o_rounds.append(r)
                print(c.table(c.PHASE_HEADERS, [c.phase_row(f"whiteboard {name} {i + 1}", r)]), flush=True)
                print(f"  p99 ms by second: {by_second(r)}", flush=True)
                r = self.phase(
                    f"reference {name} {i + 1}", self.ref_msg(refs, ref_wards, rate, secs), finals_ref
                )
                r_rounds.append(r)
                print(c.table(c.PHASE_HEADERS, [c.phase_row(f"reference {name} {i + 1}", r)]), flush=True)
            self.out[f"ours_{name}_rounds"], self.out[f"ref_websockets_{name}_rounds"] = o_rounds, r_rounds
            self.out[f"ours_{name}"] = c.combine(o_rounds, name)
            self.out[f"ref_websockets_{name}"] = c.combine(r_rounds, f"reference {name}")
        self.sockets.close()

        self.out["ours_metrics"] = {s.name: c.scrape_metrics(s) for s in ours}
        self.out["ours_log_problems"] = {s.name: s.log_problems()[-20:] for s in ours}
        self.out["ours_tracebacks"] = {s.name: s.log_tracebacks() for s in ours}
        if "saturation" in self.skip:
            return
        # saturation: both sets of hot-ward sockets open, ramps in alternation
        self.quiet("saturation", 120)
        hot = ward_list[: p["sat_wards"]]
        ref_hot = ["R-" + w for w in hot]
        o_open = self.sockets.open(c.socket_specs(ours, hot, p["sat_sockets"]), token)
        r_open = self.sockets.open(c.socket_specs(refs, ref_hot, p["sat_sockets"]), "")
        print(
            f"saturation sockets: whiteboard {o_open['opened']:,}, reference {r_open['opened']:,}", flush=True
        )
        o_sats, r_sats = [], []
        for i in range(p["sat_repeats"]):
            with c.profiled(self.args.profile and i == 0, "saturation", ours, profiles):
                o_sats.append(
                    self.ramp(
                        "whiteboard",
                        lambda rate, secs: self.api_msg(ours, token, hot, rate, secs),
                        finals_ours,
                        o_open["opened"] / len(hot),
                    )
                )
            r_sats.append(
                self.ramp(
                    "reference websockets",
                    lambda rate, secs: self.ref_msg(refs, ref_hot, rate, secs),
                    finals_ref,
                    r_open["opened"] / len(ref_hot),
                )
            )
        self.sockets.close()
        self.out["ours_saturation"], self.out["ref_websockets_saturation"] = o_sats, r_sats
        self.out["ours_metrics"] = {s.name: c.scrape_metrics(s) for s in ours}
        self.out["ours_log_problems"] = {s.name: s.log_problems()[-20:] for s in ours}
        self.out["ours_tracebacks"] = {s.name: s.log_tracebacks() for s in ours}

    def run_big(self, env: dict[str, str], token: str, ward_list: list[str], seqs: Any) -> None:
        """10,000 idle sockets on one fresh process (with the same PostgreSQL and Redis), then the
        same on the websockets reference."""
        p = self.p
        big = c.Service.whiteboard("whiteboard big", env, self.tmp, self.args.variant)
        try:
            self.start(big)
            with c.profiled(self.args.profile, "connect-10k", [big], self.out.setdefault("profiles", {})):
                idle = self.idle_memory("whiteboard 10k", [big], token, p["big_sockets"], ward_list, "big")
            self.sockets.mark()
            meter = self.meter()
            meter.start()
            time.sleep(p["big_hold_s"])
            hold_cpu = meter.stop()
            stats = self.sockets.stats()
            hb = sorted(s["heartbeats"] for s in stats if s["open"])
            gaps = sorted(s["max_gap"] for s in stats if s["open"])
            idle["hold"] = {
                "seconds": p["big_hold_s"],
                "open": sum(1 for s in stats if s["open"]),
                "closed": sum(1 for s in stats if not s["open"]),
                "heartbeats_min": hb[0] if hb else 0,
                "heartbeats_median": c.percentile(hb, 50) if hb else 0,
                "max_silence_p50_s": c.percentile(gaps, 50),
                "max_silence_max_s": gaps[-1] if gaps else 0,
                "cpu": hold_cpu,
            }
            print(f"10k hold: {idle['hold']}", flush=True)
            r = self.phase(
                "10k steady", self.api_msg([big], token, None, p["big_rate"], p["big_s"]), lambda _r: seqs()
            )
            self.out["ours_big"] = idle
            self.out["ours_big_steady"] = r
            print(c.table(c.PHASE_HEADERS, [c.phase_row("whiteboard 10k sockets", r)]), flush=True)
            self.sockets.close()
            self.out["big_log_problems"] = big.log_problems()[-20:]
            self.out["big_tracebacks"] = big.log_tracebacks()
        finally:
            self.stop(big)
        if self.args.quick:
            return
        ref = c.Service.reference("reference websockets big", "websockets", self.tmp, self.frame_bytes)
        try:
            self.start(ref)
            self.out["ref_big"] = self.idle_memory(
                "reference 10k", [ref], "", p["big_sockets"], ["R-" + w for w in ward_list], "ref-big"
            )
            self.sockets.close()
        finally:
            self.stop(ref)

    def run_starlette(self, ward_list: list[str]) -> None:
        """The Starlette/uvicorn reference: memory and one saturation ramp (full runs only)."""
        if self.args.quick:
            return
        p = self.p
        self.writer.call({"cmd": "reset"})
        refs = [
            c.Service.reference(f"reference starlette {k}", "starlette", self.tmp, self.frame_bytes)
            for k in "ab"
        ]
        ref_wards = ["R-" + w for w in ward_list]
        try:
            self.start(*refs)
            self.out["ref_starlette_idle"] = self.idle_memory(
                "reference starlette", refs, "", p["sockets"], ref_wards, "ref"
            )
            self.sockets.close()
            hot = ref_wards[: p["sat_wards"]]
            opened = self.sockets.open(c.socket_specs(refs, hot, p["sat_sockets"]), "")
            self.out["ref_starlette_saturation"] = [
                self.ramp(
                    "reference starlette",
                    lambda rate, secs: self.ref_msg(refs, hot, rate, secs),
                    lambda r: r["ref_seq"],
                    opened["opened"] / len(hot),
                )
            ]
            self.sockets.close()
        finally:
            self.stop(*refs)


def sat_summary(sats: list[dict[str, Any]]) -> tuple[float, float]:
    """Median over repeats of the peak and of the highest sustained delivery rate (frames/s)."""
    if not sats:
        return math.nan, math.nan
    return c.median([s["peak_fps"] for s in sats]), c.median([s["sustained_fps"] for s in sats])


def sat_cpu_per_frame(sats: list[dict[str, Any]]) -> float:
    """Median over repeats of the servers' CPU µs per frame in the step that delivered most."""
    values = []
    for sat in sats:
        if sat["steps"]:
            best = max(sat["steps"], key=lambda s: s["delivered_fps"])
            values.append(best["cpu_us_per_frame"])
    return c.median(values) if values else math.nan


def by_second(r: c.PhaseResult) -> str:
    """A round's p99 second by second of its schedule: a tail bunched in the first seconds is a
    warm-up cost, one spread over the round is queueing."""
    return ", ".join(f"{v:.0f}" for v in r.extra.get("p99_ms_by_second", []))


def p99_verdict(target: str, out: dict[str, Any], phase: str, limit_ms: float) -> list[str]:
    """A latency target is met only when every round meets it: the worst round is the figure judged,
    so a lucky round cannot carry an unlucky one."""
    ours = [r.latency_ms["p99"] for r in out[f"ours_{phase}_rounds"]]
    ref = [r.latency_ms["p99"] for r in out[f"ref_websockets_{phase}_rounds"]]
    rounds = " / ".join(f"{v:.1f}" for v in ours)
    return [
        target,
        f"{max(ours):.1f} ms, the worst of {len(ours)} rounds ({rounds})",
        "met" if max(ours) <= limit_ms else "NOT met",
        c.ratio(max(ours), max(ref)),
    ]


def per_write_ms(rounds: list[c.PhaseResult], prefix: str) -> float:
    """Median over rounds of CPU ms used by `prefix` processes per successful write (with its fanout)."""
    return c.median([c.cpu_seconds(r, prefix) / max(r.writes_ok, 1) * 1000 for r in rounds])


def cpu_text(r: c.PhaseResult) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in r.cpu.items())


def mem_row(label: str, m: dict[str, Any]) -> list[Any]:
    return [
        label,
        m["sockets"],
        sum(m["rss0_kib"].values()) / 1024,
        sum(m["rss1_kib"].values()) / 1024,
        m["kib_per_socket"],
        m["open"]["seconds"],
        m.get("connect_cpu_ms_per_socket", math.nan),
    ]


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    quick = args.quick
    p, m = out["params"], out["machine"]
    n = p["rounds"]
    o_st, o_bu = out["ours_steady"], out["ours_burst"]
    r_st, r_bu = out["ref_websockets_steady"], out["ref_websockets_burst"]
    oi, ri, si = out["ours_idle"], out["ref_websockets_idle"], out.get("ref_starlette_idle")
    big, big_st, rbig = out.get("ours_big"), out.get("ours_big_steady"), out.get("ref_big")
    o_peak, o_sus = sat_summary(out.get("ours_saturation") or [])
    r_peak, r_sus = sat_summary(out.get("ref_websockets_saturation") or [])
    s_peak, s_sus = sat_summary(out.get("ref_starlette_saturation") or [])
    quiet = (out.get("quiet") or {}).get("start") or {}
    src = out.get("source") or {}
    lines = [
        "## Fanout across two processes (issue 3)"
        + (" — QUICK smoke run, not the real figures" if quick else ""),
        "",
        f"Run {m['date']} on {m['nproc']} × {m['cpu']} ({m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}), commit {src.get('commit', '?')} ({src.get('mode', '?')}), in "
        f"{out['seconds']:.0f} s. Load average {m['loadavg_at_start']:.2f} at start; the machine was "
        f"{quiet.get('busy_pct') or 'not checked, '} % busy before the run (waited {quiet.get('waited_s', 0)} s for quiet). "
        "Servers, PostgreSQL, Redis, the load generator and other tenants all share the 2 cores: see "
        "the CPU lines.",
        "",
        "Parameters: two `whiteboard serve` processes (default settings) sharing a private PostgreSQL "
        f"(fsync off) and a private Redis; {p['wards']} wards × {p['beds']} beds, every second bed "
        f"occupied ({out['setup']['admitted']} admissions through the API, {out['setup']['per_s']}/s); "
        f"{p['sockets']:,} sockets (clinical view, bearer token), ~{p['sockets'] / p['wards']:.0f} per "
        "ward, half on each process, one parsing probe per ward per process. Writes alternate between "
        "the two processes' APIs (PATCH bed state / PATCH stay news2 with If-Match, round-robin over "
        "wards, open-loop schedule). Latency = the API call's *scheduled* send → its `change` frame on "
        "every socket of the ward, on both processes; stamp→socket = the frame's `at` (the server's "
        "clock as the command starts) → its arrival on the probes. Mean change frame "
        f"{o_st.extra['mean_change_frame_bytes']:.0f} B. Reference: `bench/reference/server.py` "
        "(`websockets.broadcast`, no database), two processes holding the same number of sockets at the "
        "same time, frames of the same size, triggered over a control socket; each whiteboard round is "
        f"followed by the same round on the reference ({n} rounds; medians shown, every round below).",
        "",
        "### Steady and burst",
        "",
    ]
    rows = [
        c.phase_row(f"**whiteboard, steady** (median of {n})", o_st),
        c.phase_row(f"**reference, steady** (median of {n})", r_st),
        c.phase_row(f"**whiteboard, burst** (median of {n})", o_bu),
        c.phase_row(f"**reference, burst** (median of {n})", r_bu),
    ]
    if big_st:
        rows.append(c.phase_row(f"whiteboard, {big['sockets']:,} sockets on one process", big_st))
    for name in ("steady", "burst"):
        for i, (o, r) in enumerate(
            zip(out[f"ours_{name}_rounds"], out[f"ref_websockets_{name}_rounds"], strict=True)
        ):
            rows.append(c.phase_row(f"whiteboard, {name}, round {i + 1}", o))
            rows.append(c.phase_row(f"reference, {name}, round {i + 1}", r))
    lines += [
        c.table(c.PHASE_HEADERS, rows),
        "",
        f"CPU, % of one core (median of the rounds). Steady: {cpu_text(o_st)}. Burst: {cpu_text(o_bu)}. "
        f"Reference burst: {cpu_text(r_bu)}.",
        "",
        "CPU time per change, with its fanout to every socket of the ward (median of the burst rounds): "
        f"whiteboard processes {per_write_ms(out['ours_burst_rounds'], 'whiteboard'):.2f} ms, PostgreSQL "
        f"{per_write_ms(out['ours_burst_rounds'], 'postgres'):.2f} ms, Redis "
        f"{per_write_ms(out['ours_burst_rounds'], 'redis'):.2f} ms; reference processes "
        f"{per_write_ms(out['ref_websockets_burst_rounds'], 'reference'):.2f} ms.",
        "",
        f"API calls (scheduled → response): steady p50 {o_st.api_ms['p50']} ms / p99 {o_st.api_ms['p99']} "
        f"ms; burst p50 {o_bu.api_ms['p50']} ms / p99 {o_bu.api_ms['p99']} ms. Burst: "
        f"{p['burst_rate']:g}/s offered, {o_bu.achieved_rate:g}/s achieved (median); "
        f"{o_bu.writes_ok:,} calls answered 2xx over the rounds, {o_bu.skipped} not sent because every "
        "resource of the ward was still in flight. Every socket had caught up "
        f"{o_st.catch_up_s:.2f} s (steady) and {o_bu.catch_up_s:.2f} s (burst) after the last call.",
        "",
        "Steady: " + c.heartbeat_note(o_st),
        "",
        "Burst p99 (ms) by second of each round, whiteboard: "
        + "; ".join(f"round {i + 1}: {by_second(r)}" for i, r in enumerate(out["ours_burst_rounds"]))
        + "; reference: "
        + "; ".join(
            f"round {i + 1}: {by_second(r)}" for i, r in enumerate(out["ref_websockets_burst_rounds"])
        )
        + ".",
        "",
        "### Saturation",
        "",
        f"Sockets re-opened on {p['sat_wards']} hot wards ({p['sat_sockets']:,} for the whiteboard, "
        f"{p['sat_sockets'] // p['sat_wards']} per ward, half on each process; as many on the reference). "
        f"The change rate is raised in {p['sat_step_s']:g} s steps until delivery falls below 80 % of what "
        "was asked for (or a socket is closed, or a frame lost). Peak = the most frames/s delivered in any "
        "step; sustained = the highest step delivered at ≥ 95 % with every socket caught up within 2 s. "
        f"Median of {p['sat_repeats']} ramps each for the whiteboard and the websockets reference, in "
        "alternation (one ramp for Starlette, run afterwards).",
        "",
        c.table(
            [
                "server",
                "peak frames/s",
                "sustained frames/s",
                "peak ÷ websockets ref",
                "peak ÷ Starlette ref",
                "servers' CPU µs per frame at peak",
            ],
            [
                [
                    "whiteboard (2 processes + Redis + PostgreSQL)",
                    o_peak,
                    o_sus,
                    c.ratio(o_peak, r_peak),
                    c.ratio(o_peak, s_peak),
                    sat_cpu_per_frame(out.get("ours_saturation") or []),
                ],
                [
                    "reference: websockets.broadcast (2 processes)",
                    r_peak,
                    r_sus,
                    "1.00×",
                    c.ratio(r_peak, s_peak),
                    sat_cpu_per_frame(out.get("ref_websockets_saturation") or []),
                ],
                [
                    "reference: Starlette/uvicorn send loop (2 processes)",
                    s_peak,
                    s_sus,
                    c.ratio(s_peak, r_peak),
                    "1.00×",
                    sat_cpu_per_frame(out.get("ref_starlette_saturation") or []),
                ],
            ],
        ),
        "",
    ]
    step_rows = []
    for sat in [
        *(out.get("ours_saturation") or []),
        *(out.get("ref_websockets_saturation") or []),
        *(out.get("ref_starlette_saturation") or []),
    ]:
        for s in sat["steps"]:
            step_rows.append(
                [
                    sat["label"],
                    s["rate"],
                    s["achieved"],
                    s["offered_fps"],
                    s["delivered_fps"],
                    s["probe_p50_ms"],
                    s["probe_p99_ms"],
                    s["catch_up_s"],
                    s["lost"],
                    ", ".join(f"{k}×{v}" for k, v in s["closed"].items()) or "0",
                    s["servers_cpu"],
                    s["cpu_us_per_frame"],
                    s["cpu"].get("load generator (sockets)", 0.0),
                    s["loadgen_us_per_frame"],
                    s["cpu"].get("machine busy % (all cores)", 0.0),
                ]
            )
    lines += [
        "<details><summary>Every saturation step</summary>",
        "",
        c.table(
            [
                "server",
                "asked changes/s",
                "achieved/s",
                "asked frames/s",
                "delivered frames/s",
                "probe p50 ms",
                "probe p99 ms",
                "catch-up s",
                "lost",
                "closed",
                "its servers' CPU %",
                "servers' CPU µs/frame",
                "load-gen sockets CPU %",
                "load-gen µs/frame",
                "machine busy %",
            ],
            step_rows,
        ),
        "",
        "</details>",
        "",
        "### Memory and 10,000 sockets",
        "",
    ]
    mem_rows = [mem_row("whiteboard (2 processes)", oi), mem_row("reference websockets (2 processes)", ri)]
    if si:
        mem_rows.append(mem_row("reference Starlette/uvicorn (2 processes)", si))
    if big:
        mem_rows.append(mem_row("whiteboard, one process", big))
    if rbig:
        mem_rows.append(mem_row("reference websockets, one process", rbig))
    lines += [
        c.table(
            [
                "server",
                "idle sockets",
                "RSS 0 sockets (MiB)",
                "RSS with sockets (MiB)",
                "KiB per socket",
                "seconds to open them",
                "server CPU ms per connect",
            ],
            mem_rows,
        ),
        "",
    ]
    if big:
        h, o = big["hold"], big["open"]
        lines += [
            f"{p['big_sockets']:,} sockets on one process: {big['sockets']:,} opened in {o['seconds']} s, 64 "
            f"upgrades in flight (upgrade → snapshot p50 {o['handshake_p50_ms']} ms, p99 "
            f"{o['handshake_p99_ms']} ms; failures: {o['failures'] or 'none'}). Held idle "
            f"{h['seconds']:g} s: {h['open']:,} open, {h['closed']} closed; heartbeats per socket min "
            f"{h['heartbeats_min']}, median {h['heartbeats_median']} (one every 5 s expected); longest "
            f"silence on any socket {h['max_silence_max_s']:.1f} s (median socket "
            f"{h['max_silence_p50_s']:.1f} s). Server CPU while idle with them: "
            f"{h['cpu'].get('whiteboard big', 0):.0f} % of one core.",
            "",
        ]
    lost = o_st.lost_frames + o_bu.lost_frames
    gaps = o_st.gaps + o_bu.gaps + o_st.dupes + o_bu.dupes
    verdict = [
        p99_verdict("API-call-to-socket p99 ≤ 25 ms (steady)", out, "steady", TARGETS["steady_p99_ms"]),
        p99_verdict(
            f"API-call-to-socket p99 ≤ 100 ms (burst, {p['burst_rate']:g}/s offered)",
            out,
            "burst",
            TARGETS["burst_p99_ms"],
        ),
        [
            "burst rate sustained",
            f"{o_bu.achieved_rate:g}/s of {p['burst_rate']:g}/s",
            "met" if o_bu.achieved_rate >= 0.95 * p["burst_rate"] else "NOT met",
            c.ratio(o_bu.achieved_rate, r_bu.achieved_rate),
        ],
        [
            "0 lost, in seq order, no gaps or duplicates",
            f"lost {lost}, gaps + duplicates {gaps}",
            "met" if not (lost or gaps) else "NOT met",
            "–",
        ],
        [
            "saturation ≥ 0.7 × reference",
            f"{o_peak:,.0f} frames/s",
            "met" if r_peak and o_peak >= TARGETS["sat_ratio"] * r_peak else "NOT met",
            c.ratio(o_peak, r_peak),
        ],
        [
            "≤ 20 KiB RSS per idle socket",
            f"{oi['kib_per_socket']:.1f} KiB",
            "met" if oi["kib_per_socket"] <= TARGETS["kib_per_socket"] else "NOT met",
            c.ratio(oi["kib_per_socket"], ri["kib_per_socket"]),
        ],
    ]
    if big:
        ok = (
            big["sockets"] >= p["big_sockets"]
            and big["hold"]["closed"] == 0
            and big["hold"]["heartbeats_min"] >= 1
            and big["hold"]["max_silence_max_s"] <= 10.5
        )
        verdict.append(
            [
                f"{p['big_sockets']:,} sockets on one process, heartbeats arrive",
                f"{big['sockets']:,} open, {big['kib_per_socket']:.1f} KiB/socket, longest silence "
                f"{big['hold']['max_silence_max_s']:.1f} s",
                "met" if ok else "NOT met",
                c.ratio(big["kib_per_socket"], rbig["kib_per_socket"]) if rbig else "–",
            ]
        )
    lines += [
        "### Targets",
        "",
        c.table(["target", "measured", "verdict", "ratio to reference"], verdict),
        "",
    ]
    problems = [ln for v in (out.get("ours_log_problems") or {}).values() for ln in v]
    problems += out.get("big_log_problems") or []
    if problems:
        lines += [
            f"Server log warnings/errors (last {min(len(problems), 8)}):",
            "",
            "```",
            *problems[-8:],
            "```",
            "",
        ]
    if args.variant:
        lines[0] += f" — VARIANT {args.variant} (bench/tools/serve_variant.py), not the shipped server"
    body = "\n".join(lines)
    print()
    print(body)
    data = {k: (v.__dict__ if isinstance(v, c.PhaseResult) else v) for k, v in out.items()}
    for v in data.values():
        if isinstance(v, dict):
            v.get("extra", {}).pop("resources", None)
    out["variant"] = args.variant
    data["variant"] = args.variant
    suffix = ("-quick" if quick else "") + (f"-{args.variant.replace(',', '+')}" if args.variant else "")
    suffix += f"-without-{args.skip.replace(',', '+')}" if args.skip else ""
    suffix += "-custom" if args.set else ""
    path = c.save_results(
        "fanout_cluster" + suffix,
        data,
        experiment=bool(args.variant or args.set or getattr(args, "skip", "")),
    )
    print(f"\nraw results: {path}")
    if not quick and not args.no_doc and not args.variant and not args.skip and not args.set:
        c.write_doc_section("fanout_cluster", body)
        print(f"rewrote the fanout_cluster section of {c.DOCS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a scaled-down smoke run (< 60 s)")
    parser.add_argument("--socket-procs", type=int, default=1, help="socket load-generator processes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter (JSON value), e.g. --set burst_rate=200; implies --no-doc",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to leave out: saturation, big (10,000 sockets), starlette; implies --no-doc",
    )
    parser.add_argument(
        "--source",
        choices=["head", "worktree"],
        default="head",
        help="run the last commit (default; exported to a temporary folder) or the working tree as it is",
    )
    parser.add_argument(
        "--variant",
        default="",
        help="run the servers through bench/tools/serve_variant.py with these candidate changes "
        "(comma-separated: reorder-window, gc-log, gc-freeze); implies --no-doc",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the servers, per phase; collapsed stacks in bench/results/profiles/",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="wait up to this many seconds for the machine to go quiet first "
        "(default: 0 with --quick, else 600)",
    )
    args = parser.parse_args()
    c.raise_nofile()
    if args.quick:
        c.PACE.update(rss_s=1.0, settle_s=0.3)
    bench = Bench(args)
    try:
        bench.run()
    finally:
        for s in list(bench.services):
            s.stop()
        bench.sockets.stop()
        bench.writer.stop()
    report(bench.out, args)
    if not args.keep:
        shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
