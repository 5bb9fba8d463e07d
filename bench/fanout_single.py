"""Fanout on one process (issue 2): one `whiteboard serve` (SQLite, in-process broker).

40 wards × 25 beds; half the beds occupied (admitted through the API at set-up). 1,000
sockets (clinical view, bearer token) spread evenly over the 40 wards, one parsing probe per
ward. Then 20 changes/s for 30 s through the HTTP API, round-robin over the wards: an empty
bed's state toggled available↔reserved (PATCH /api/v1/beds/{code}) or an occupied bed's stay
PATCHed (news2), always with If-Match. Measured:

- latency from the *scheduled* send time of each API call to the arrival of its `change`
  frame on every socket of the ward (p50/p99/max), and from the server's own time stamp in
  the frame to its arrival on the probes (≈ commit-to-socket);
- frames delivered vs expected, lost updates, seq gaps, sockets closed;
- server RSS (VmRSS) with 0 sockets and with 1,000 idle sockets: KiB per socket;
- the same for a bare reference server (`bench/reference/server.py`, the `websockets`
  library's broadcast) in the same run, with frames of the same mean size, as the ratio.

Run: .venv/bin/python bench/fanout_single.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c

FULL = {
    "wards": 40,
    "beds": 25,
    "sockets": 1000,
    "rate": 20.0,
    "duration": 30.0,
    "idle": 5.0,
    "rounds": 3,
    "writer_tokens": 4,
}
QUICK = {
    "wards": 8,
    "beds": 25,
    "sockets": 200,
    "rate": 20.0,
    "duration": 6.0,
    "idle": 1.0,
    "rounds": 1,
    "writer_tokens": 1,
}
TARGET_P99_MS = 25.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a scaled-down smoke run (< 60 s)")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare reference server")
    parser.add_argument("--socket-procs", type=int, default=1, help="socket load-generator processes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter (JSON value), e.g. --set burst_rate=200; implies --no-doc",
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
        "--wait-quiet",
        type=float,
        default=None,
        help="wait up to this many seconds for the machine to go quiet first "
        "(default: 0 with --quick, else 600)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the server; collapsed stacks in bench/results/profiles/",
    )
    args = parser.parse_args()
    p = c.apply_overrides(dict(QUICK if args.quick else FULL), args.set)
    c.raise_nofile()
    if args.quick:
        c.PACE.update(rss_s=1.0, settle_s=0.3)
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 600)
    quiet = c.wait_quiet(wait) if wait > 0 else {"waited_s": 0, "busy_pct": None, "quiet": None}
    started = time.monotonic()
    machine = c.machine()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-single-"))
    print(f"# fanout_single ({'quick' if args.quick else 'full'}) in {tmp}", flush=True)
    db = tmp / "whiteboard.db"
    source = c.source_tree(args.source, tmp / "src")
    env = c.base_env(
        {
            "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
            **source["env"],
        }
    )
    wards = c.write_layout(tmp / "layout.json", p["wards"], p["beds"])
    ward_list = list(wards)
    c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
    token = c.make_token(env, tmp, "bench", "nurse")
    writer_tokens = [c.make_token(env, tmp, f"writer{i}", "nurse") for i in range(p["writer_tokens"])]

    server = c.Service.whiteboard("serve", env, tmp, args.variant)
    ref: c.Service | None = None
    sockets = c.Sockets(args.socket_procs)
    writer = c.Worker(c.writer_worker, "writer")
    out: dict[str, Any] = {"params": p, "machine": machine, "quiet": quiet, "source": source}
    profiles = out.setdefault("profiles", {})
    try:
        server.start()
        resources, admitted = c.admit_and_list([("127.0.0.1", server.port)], token, wards)
        out["setup"] = admitted
        print(f"admitted {admitted['admitted']} patients in {admitted['seconds']} s", flush=True)
        pids = {"whiteboard": lambda: [server.pid]}
        if not args.no_reference:
            ref = c.Service.reference(
                "reference-websockets", "websockets", tmp, admitted["frame_bytes_estimate"]
            )
            ref.start()
            pids["reference"] = lambda: [ref.pid]  # type: ignore[union-attr]
        meter = c.CpuMeter(
            {
                **pids,
                "load generator (sockets)": sockets.pids,
                "load generator (writer)": lambda: [writer.pid],
            }
        )

        # --- idle memory: each server's RSS before and after its own sockets ------------------
        # The reference's sockets use ward names of their own ("R-W01"), so the two sets never mix.
        ref_wards = ["R-" + w for w in ward_list]
        with c.profiled(args.profile, "single-connect", [server], profiles):
            out["ours_idle"] = idle_memory(sockets, server, "whiteboard", token, ward_list, p, meter)
        print(
            f"whiteboard: {out['ours_idle']['sockets']} sockets, {out['ours_idle']['kib_per_socket']} KiB each"
        )
        if ref:
            out["ref_idle"] = idle_memory(sockets, ref, "reference", "", ref_wards, p, meter)
            print(
                f"reference: {out['ref_idle']['sockets']} sockets, {out['ref_idle']['kib_per_socket']} KiB each"
            )

        # --- steady changes, alternating with the reference, round by round --------------------
        seqs = c.sqlite_seqs(db)
        ours_rounds, ref_rounds = [], []
        for i in range(p["rounds"]):
            msg = {
                "cmd": "write",
                "mode": "api",
                "targets": [{"host": "127.0.0.1", "port": server.port}],
                "token": token,
                "tokens": writer_tokens,
                "resources": resources,
                "rate": p["rate"],
                "duration": p["duration"],
            }
            with c.profiled(args.profile and i == 0, "single-steady", [server], profiles):
                r = c.run_phase(f"steady {i + 1}", sockets, writer, msg, lambda _r: seqs(), meter)
            resources = r.extra.pop("resources")
            ours_rounds.append(r)
            print(c.table(c.PHASE_HEADERS, [c.phase_row(f"whiteboard, round {i + 1}", r)]), flush=True)
            if ref:
                msg = {
                    "cmd": "write",
                    "mode": "reference",
                    "targets": [{"host": "127.0.0.1", "port": ref.port}],
                    "wards": ref_wards,
                    "rate": p["rate"],
                    "duration": p["duration"],
                }
                r = c.run_phase(f"reference {i + 1}", sockets, writer, msg, lambda r: r["ref_seq"], meter)
                ref_rounds.append(r)
                print(c.table(c.PHASE_HEADERS, [c.phase_row(f"reference, round {i + 1}", r)]), flush=True)
        out["ours_rounds"], out["ref_rounds"] = ours_rounds, ref_rounds
        out["ours_steady"] = c.combine(ours_rounds, "steady")
        if ref_rounds:
            out["ref_steady"] = c.combine(ref_rounds, "reference")
        out["ours_metrics"] = c.scrape_metrics(server)
        sockets.close()
        out["server_log_problems"] = server.log_problems()[-20:]
        out["server_tracebacks"] = server.log_tracebacks()
    finally:
        server.stop()
        if ref:
            ref.stop()

    sockets.stop()
    writer.stop()
    out["seconds"] = round(time.monotonic() - started, 1)
    report(out, args)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def idle_memory(
    sockets: c.Sockets,
    server: c.Service,
    name: str,
    token: str,
    wards: list[str],
    p: dict[str, Any],
    meter: c.CpuMeter,
) -> dict[str, Any]:
    """RSS of `server` with 0 sockets (after a warm-up) and with p["sockets"] idle ones, left open."""
    c.warm_up(sockets, [server], token, wards)
    rss0 = c.steady_rss([server.pid])[server.pid]
    meter.start()
    opened = sockets.open(c.socket_specs([server], wards, p["sockets"]), token)
    connect = meter.stop()
    connect_ms = connect.get(name, 0.0) / 100 * meter.wall * 1000 / max(opened["opened"], 1)
    meter.start()
    time.sleep(p["idle"])
    idle_cpu = meter.stop()
    rss1 = c.steady_rss([server.pid])[server.pid]
    return {
        "rss0_kib": rss0,
        "rss1_kib": rss1,
        "sockets": opened["opened"],
        "open": opened,
        "kib_per_socket": round((rss1 - rss0) / max(opened["opened"], 1), 1),
        "idle_cpu": idle_cpu,
        "connect_cpu_ms_per_socket": round(connect_ms, 2),
    }


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    quick = args.quick
    p, m = out["params"], out["machine"]
    ours: c.PhaseResult = out["ours_steady"]
    ref: c.PhaseResult | None = out.get("ref_steady")
    oi, ri = out["ours_idle"], out.get("ref_idle")
    n = p["rounds"]
    rows = [c.phase_row(f"**whiteboard** (median of {n})", ours)]
    if ref:
        rows.append(c.phase_row(f"**reference** (median of {n})", ref))
    for i, r in enumerate(out["ours_rounds"]):
        rows.append(c.phase_row(f"whiteboard, round {i + 1}", r))
        if out["ref_rounds"]:
            rows.append(c.phase_row(f"reference, round {i + 1}", out["ref_rounds"][i]))
    quiet = out.get("quiet") or {}
    lines = [
        f"## Fanout, one process (issue 2){' — QUICK smoke run, not the real figures' if quick else ''}",
        "",
        f"Run {m['date']} on {m['nproc']} × {m['cpu']} ({m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}), commit {(out.get('source') or {}).get('commit', '?')} "
        f"({(out.get('source') or {}).get('mode', '?')}), in {out['seconds']:.0f} s. "
        f"Load average {m['loadavg_at_start']:.2f} at "
        f"start; the machine was {quiet.get('busy_pct') or 'not checked, '} % busy (all cores) before the run "
        f"(waited {quiet.get('waited_s', 0)} s for quiet) — other tenants share it, see the CPU line.",
        "",
        "Parameters: one `whiteboard serve` (SQLite, in-process broker, default settings); "
        f"{p['wards']} wards × {p['beds']} beds, every second bed occupied "
        f"({out['setup']['admitted']} admissions through the API, {out['setup']['per_s']}/s); "
        f"{p['sockets']:,} sockets, clinical view, bearer token, {p['sockets'] // p['wards']} per ward "
        f"(one parsing probe per ward); {p['rate']:g} changes/s for {p['duration']:g} s through the API "
        "(PATCH bed state / PATCH stay news2 with If-Match, round-robin over wards), open-loop schedule; "
        f"{n} rounds, each followed by the same load on the reference (`bench/reference/server.py`, "
        "`websockets.broadcast`, no database) holding the same number of sockets, with frames of the "
        "same size. Latency = the API call's *scheduled* send → its `change` frame on every socket of "
        "the ward; stamp→socket = the frame's `at` (the server's clock as the command starts) → its "
        "arrival on the probes (wall clock, ms resolution). Mean change frame: "
        f"{ours.extra['mean_change_frame_bytes']:.0f} B.",
        "",
        c.table(c.PHASE_HEADERS, rows),
        "",
    ]

    def mem_row(label: str, i: dict[str, Any]) -> list[Any]:
        return [
            label,
            i["sockets"],
            i["rss0_kib"] / 1024,
            i["rss1_kib"] / 1024,
            i["kib_per_socket"],
            i["open"]["seconds"],
            i["connect_cpu_ms_per_socket"],
        ]

    mem_rows = [mem_row("whiteboard", oi)] + ([mem_row("reference", ri)] if ri else [])
    headers = ["server", "idle sockets", "RSS 0 sockets (MiB)", "RSS with sockets (MiB)", "KiB per socket"]
    lines += [
        c.table([*headers, "seconds to open them", "server CPU ms per connect"], mem_rows),
        "",
    ]
    verdict = [
        [
            "API-call-to-socket p99 ≤ 25 ms",
            f"{ours.latency_ms['p99']:.1f} ms (rounds: {', '.join(f'{x:.0f}' for x in ours.extra['p99_each_round'])})",
            "met" if ours.latency_ms["p99"] <= TARGET_P99_MS else "NOT met",
            c.ratio(ours.latency_ms["p99"], ref.latency_ms["p99"]) if ref else "–",
        ],
        [
            "lost updates = 0, no gaps",
            f"lost {ours.lost_frames}, gaps {ours.gaps}, dupes {ours.dupes}",
            "met" if ours.lost_frames == 0 and not ours.gaps and not ours.dupes else "NOT met",
            "–",
        ],
        [
            "RSS per idle socket ≤ 20 KiB",
            f"{oi['kib_per_socket']:.1f} KiB",
            "met" if oi["kib_per_socket"] <= 20 else "NOT met",
            c.ratio(oi["kib_per_socket"], ri["kib_per_socket"]) if ri else "–",
        ],
    ]
    lines += [c.table(["target", "measured", "verdict", "ratio to reference"], verdict), ""]
    per_write = c.median(
        [c.cpu_seconds(r, "whiteboard") / max(r.writes_ok, 1) * 1000 for r in out["ours_rounds"]]
    )
    ref_per_write = c.median(
        [c.cpu_seconds(r, "reference") / max(r.writes_ok, 1) * 1000 for r in out["ref_rounds"]] or [math.nan]
    )
    lines += [
        f"Server CPU time per change, with its fanout to the ward's {p['sockets'] // p['wards']} sockets "
        f"(median of the rounds): whiteboard {per_write:.2f} ms, reference {ref_per_write:.2f} ms.",
        "",
        c.heartbeat_note(ours),
        "",
        "CPU, median over the rounds (% of one core): whiteboard rounds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in ours.cpu.items())
        + (("; reference rounds: " + ", ".join(f"{k} {v:.0f}" for k, v in ref.cpu.items())) if ref else "")
        + ".",
        "",
        f"Sockets opened in {oi['open']['seconds']} s (upgrade request → snapshot frame p50 "
        f"{oi['open']['handshake_p50_ms']} ms, p99 {oi['open']['handshake_p99_ms']} ms, 64 in flight); "
        f"failures: {oi['open']['failures'] or 'none'}. API calls (scheduled → response) p50 "
        f"{ours.api_ms['p50']} ms, p99 {ours.api_ms['p99']} ms. Every socket had caught up "
        f"{ours.catch_up_s:.2f} s after the last call; longest silence on any socket "
        f"{ours.extra['max_frame_gap_s']:.1f} s.",
    ]
    problems = out.get("server_log_problems") or []
    if problems:
        lines += [
            "",
            f"Server log warnings/errors ({len(problems)} shown):",
            "",
            "```",
            *problems[-5:],
            "```",
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
    suffix += "-custom" if args.set else ""
    path = c.save_results(
        "fanout_single" + suffix, data, experiment=bool(args.variant or args.set or getattr(args, "skip", ""))
    )
    print(f"\nraw results: {path}")
    if not quick and not args.no_doc and not args.variant and not args.set:
        c.write_doc_section("fanout_single", body)
        print(f"rewrote the fanout_single section of {c.DOCS}")


if __name__ == "__main__":
    main()
