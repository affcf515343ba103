"""Run every benchmark and write docs/benchmarks.md (`make bench`).

.venv/bin/python -m bench.report [--only agent,loader] [--from-json DIR]

--only runs the named benchmarks again and reuses docs/bench-NAME.json for the rest;
--from-json renders from NAME.json files in DIR without running anything; with --only, the
named ones come from DIR (a run made by hand, e.g. the last of three) and are saved as
docs/bench-NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import (
    judge_bench,
    peers_bench,
    rollout_bench,
    shared_bench,
    signing_bench,
    stores_bench,
    ui_bench,
)
from bench.common import mark

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {
    "agent": "bench.agent_bench",
    "loader": "bench.loader_bench",
    "gate": "bench.gate_bench",
    "shared": "bench.shared_bench",
    "peers": "bench.peers_bench",
    "fleet": "bench.fleet_bench",
    "restart": "bench.restart_bench",
    "stores": "bench.stores_bench",
    "signing": "bench.signing_bench",
    "rollout": "bench.rollout_bench",
    "judge": "bench.judge_bench",
    "ui": "bench.ui_bench",
}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    weed = subprocess.run(
        ["weed", "version"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
    )
    versions = ", ".join(f"{p} {version(p)}" for p in ("onnxruntime", "boto3", "aiohttp", "numpy"))
    return (
        f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB, "
        f"Python {platform.python_version()}, {versions}, "
        f"SeaweedFS {weed.stdout.split()[2] if weed.stdout else '?'}"
    )


def run(name: str, out: Path) -> Any:
    subprocess.run([sys.executable, "-m", BENCHES[name], "--json", str(out)], cwd=ROOT, check=True)
    return json.loads(out.read_text())


FLEET_NOTES = [
    "With /refresh pushed the time is the promote command (its process start, imports, the S3",
    "client and its 13 requests: 0.35-0.38 s alone on this machine on 2026-12-05, 0.41-0.49 s",
    "beside 50 polling agents), then 50 agent processes each doing a sync pass (pointer,",
    "rollout, metadata, signature, a 64 KB download or the local copy, verify, swap, and the",
    "fleet report after it) at the same moment on 2 cores: 11.5 ms of CPU each, plus SeaweedFS",
    "answering 250 requests and the benchmark watching 50 links. One agent with a core to",
    "itself links 16 ms after the /refresh (p50 of 20), so on a real fleet the figure is the",
    "command plus ~20 ms.",
    "Since #17: the command took 1.12 s alone (every module of modelswap compiled again at each",
    "start, a second boto3 session for the writing client, pyOpenSSL imported by botocore, the",
    "UI's server imported by every command); and a /refresh that arrived within a second of an",
    "agent's periodic poll waited out --refresh-min-interval, which now spaces refresh-woken",
    "passes only. Three runs on 2026-12-04: with /refresh max 1.49, 1.34, 1.29 s (p50 1.15,",
    "1.13, 1.11 s; it was 1.46 s, p50 1.25 s), missed. Three runs on 2026-12-05 (ed0eb45): max",
    "0.831, 0.866, 0.813 s (p50 0.607, 0.615, 0.608 s; the command 0.41-0.45 s), met; polling",
    "at 2 s max 2.52, 2.48, 2.57 s (was 2.94 s), met; the table is a fourth run. The code of",
    "2026-12-04 (b4fe088), run again on 2026-12-05, gave max 0.935 s: most of the change",
    "between the two days is this shared machine, so the margin under 1 s (0.13-0.19 s) is",
    "real today and was not there the day before.",
]


def render_fleet(fleet: dict[str, Any], restart: dict[str, Any]) -> list[str]:
    lines = [
        "## Propagation to a fleet (`python -m bench.fleet_bench`)",
        "",
        "Time from the real `modelswap promote` command starting to each agent process having",
        "swapped its link; four promotes, every agent counted.",
        "",
        "| case | p50 | p90 | p99 | max | samples |",
        "|---|---|---|---|---|---|",
    ]
    for key, q in fleet.items():
        if key.startswith("promote_to_"):
            lines.append(
                f"| {key.removeprefix('promote_to_').replace('_', ' ')} | {q['p50_s']} s | {q['p90_s']} s | {q['p99_s']} s | {q['max_s']} s | {q['n']} |"
            )
    plain = next(v for k, v in fleet.items() if k.startswith("promote_to_") and "refresh" not in k)
    pushed = next(v for k, v in fleet.items() if k.endswith("with_refresh"))
    command = pushed.get("promote_command_s", "?")
    lines += [
        "",
        f"Targets: every agent within interval + jitter + download + 200 ms (2 s + 0.2 s + ~0 + 0.2 s = 2.4 s, plus the "
        f"promote command's own {plain.get('promote_command_s', '~0.5')} s): max {plain['max_s']} s, {mark(plain['max_s'] <= 2.9)}; with /refresh "
        f"pushed, under 1 s: max {pushed['max_s']} s, {mark(pushed['max_s'] < 1.0)}.",
        "",
        *FLEET_NOTES,
        f"In this run the promote command itself took {command} s (median, start to exit, with the",
        "50 agents polling beside it).",
        "",
    ]
    agent, loader = fleet["idle_agent_10s_interval"], fleet["idle_loader"]
    lines += [
        "## Idle cost (`python -m bench.fleet_bench`)",
        "",
        "| process | CPU | RSS | requests per hour | traffic per hour |",
        "|---|---|---|---|---|",
        f"| agent, 10 s interval | {agent['cpu_percent_of_core']}% of a core | {agent['rss_mb']} MB | {agent['requests_per_hour']} | {agent['kb_per_hour']} KB |",
        f"| loader, 10 MB model, nothing served | {loader['cpu_percent_of_core']}% of a core | {loader['rss_mb_10mb_model']} MB (model included) | 0 | 0 |",
        "",
        "## Hot swap against restart (`python -m bench.restart_bench`)",
        "",
        "The example server at 100 requests/s switches from v1 to v2 (10 MB models).",
        "",
        "| switch | failed requests (3 s after) | longest time without an answer | p99 steady | p99 in the 3 s after |",
        "|---|---|---|---|---|",
    ]
    for mode, r in restart.items():
        lines.append(
            f"| {mode} | {r['failed_requests']} of {r['requests_in_3s_after']} | {r['longest_gap_without_an_answer_ms']} ms | {r['p99_ms_steady']} ms | {r['p99_ms_3s_after_switch']} ms |"
        )
    hot = restart["hot swap"]
    lines += [
        "",
        f"Target: hot swap drops nothing ({mark(hot['failed_requests'] == 0)}) and has no gap "
        f"(longest wait {hot['longest_gap_without_an_answer_ms']} ms, at 100 requests/s one request is 10 ms apart).",
        "",
    ]
    return lines


def render(agent: dict[str, Any], loader: list[dict[str, Any]], gate: dict[str, Any]) -> str:
    poll, idle, dl = agent["unchanged_poll"], agent["idle_1s_interval"], agent["download_verify"]
    one = agent["promote_to_swap_1_agents_1s_interval"]
    fleet_key = next(
        k
        for k in agent
        if k.startswith("promote_to_swap_") and k != "promote_to_swap_1_agents_1s_interval"
    )
    fleet = agent[fleet_key]
    n = fleet_key.split("_")[3]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}.",
        "Everything talks to 127.0.0.1 only; the S3 store is a SeaweedFS started by the benchmark.",
        "Absolute times drift on a shared machine: compare ratios taken in the same run.",
        "",
        "## Agent (`python -m bench.agent_bench`)",
        "",
        "| what | measured | target | |",
        "|---|---|---|---|",
        f"| requests per unchanged poll (on the wire, via a counting proxy) | {poll['requests_per_poll']} | 1 | {mark(poll['requests_per_poll'] <= 1.0)} |",
        f"| bytes per unchanged poll, sent / received | {poll['bytes_sent_per_poll']} / {poll['bytes_received_per_poll']} (a 304, no body) | no body | {mark(poll['bytes_received_per_poll'] < 400)} |",
        f"| idle CPU at a 1 s interval | {idle['cpu_percent_of_core']}% of a core | < 1% | {mark(idle['cpu_percent_of_core'] < 1)} |",
        f"| idle RSS | {idle['rss_mb']} MB | < 80 MB | {mark(idle['rss_mb'] < 80)} |",
        f"| promote -> link swapped, 1 agent, 1 s interval | p50 {one['p50_s']} s, max {one['max_s']} s | interval + jitter + download | {mark(one['max_s'] < 1.1 + 0.5)} |",
        f"| promote -> link swapped, {n} agents (processes), 1 s interval | p50 {fleet['p50_s']} s, p90 {fleet['p90_s']} s, max {fleet['max_s']} s | interval + jitter + download | {mark(fleet['max_s'] < 1.1 + 0.5)} |",
        f"| fetch + verify + swap of a {dl['size_mb']} MB version | {dl['agent_fetch_verify_swap_MBps']} MB/s | >= 90% of plain boto3 | {mark(dl['agent_vs_boto3_download'] >= 0.9)} |",
        f"| boto3 `download_file` of the same object (no verify) | {dl['boto3_download_file_MBps']} MB/s | | ratio {dl['agent_vs_boto3_download']} |",
        f"| boto3 `download_file` then sha256 | {dl['boto3_download_file_then_sha256_MBps']} MB/s | | |",
        "",
        "The agent fetches large files with parallel ranged GETs (8 MB parts, 4 threads, a window of",
        "6 parts, so at most 48 MB in flight), writes each part at its offset and hashes strictly in",
        "order as parts land, so",
        "verification costs no second read. It does not fsync: that cost a third of a 200 MB fetch",
        "here, and the start-up check (which re-hashes every local copy) covers a power loss.",
        "",
        "## Loader (`python -m bench.loader_bench`)",
        "",
        "Each size runs in its own process; one client thread sends requests at half of the",
        "measured single-thread capacity while the link is swapped 10 times. Creating the same",
        "100 MB session varies 350-520 ms between repeats, so every swap is paired with a bare",
        "create+run of the same file just before it, in the same conditions, both starting from a",
        "trimmed heap as the loader's builds do (an untrimmed heap makes the next build 2.5x",
        "faster at 10 MB). Under traffic the bare build runs on the benchmark's main thread and",
        "came out slower than the loader's own build at 100 MB; we do not know why yet.",
        "",
        "| model | bare create + first run: idle / under the same traffic | swap -> first request on new version: idle / under traffic p50 (max) | detection overhead: idle / under traffic | failed requests | p99 steady / during swaps / after | RSS after 1 load / after 10 swaps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in loader:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['model_mb']} MB | {r['bare_create_and_first_run_ms']} / {r['bare_create_and_first_run_under_traffic_ms']} ms | "
            f"{r['swap_without_traffic_ms_p50']} / {r['swap_to_first_new_request_ms_p50']} ({r['swap_to_first_new_request_ms_max']}) ms | "
            f"{r['detection_overhead_without_traffic_ms']:+} / {r['detection_overhead_under_traffic_ms']:+} ms | {r['failed_requests']} of {r['requests']} | "
            f"{lat['steady_p99']} / {lat['during_swaps_p99']} / {lat['after_p99']} ms | "
            f"{r['rss_mb_after_first_load']} / {r['rss_mb_after_10_swaps']} MB ({r['rss_growth']:+.1%}) |"
        )
    lines += [
        "",
        "Targets: zero failed requests ("
        + mark(all(r["failed_requests"] == 0 for r in loader))
        + "); RSS after 10 swaps within 15% of after 1 ("
        + mark(all(r["rss_growth"] <= 0.15 for r in loader))
        + "); p99 during swaps within 2x of steady p99 ("
        + mark(
            all(
                r["latency_ms"]["during_swaps_p99"] <= 2 * r["latency_ms"]["steady_p99"]
                for r in loader
            )
        )
        + "); detection adds under 50 ms to bare session creation, each measured in the same "
        "conditions: without traffic ("
        + mark(all(r["detection_overhead_without_traffic_ms"] < 50 for r in loader))
        + "), under half-load traffic ("
        + mark(all(r["detection_overhead_under_traffic_ms"] < 50 for r in loader))
        + "). Against the idle bare cost, a swap under traffic takes "
        + ", ".join(
            f"{r['swap_under_traffic_vs_bare_idle_ms']:+.1f} ms at {r['model_mb']} MB"
            for r in loader
        )
        + " longer: that is the build sharing 2 cores with the requests, not detection.",
        "",
        "The change itself is noticed within 1-2 ms (inotify on the link's folder). Sessions the",
        "loader creates have onnxruntime's thread spinning off (unless you pass session_options):",
        "a spinning intra-op pool kept both cores busy between requests, so the build starved and",
        "requests waited behind it (10 MB, same benchmark: p99 during swaps 8x steady with spinning,",
        "1.4-1.8x without, steady p50 unchanged). After each swap the old model's memory is",
        "returned to the OS (malloc_trim), so the next build faults its pages in again: the price",
        "of the flat RSS. Requests never fail and never see a mixed version.",
        "",
        "The p99 target sits on the line on this 2-core machine: three runs for issue #17 gave",
        "1.95x, 1.81x, 2.39x at 100 MB and 1.31x, 1.36x, 2.48x at 10 MB (met in two of three at",
        "each size; three earlier runs: 2.18x, 1.96x, 2.58x and 1.52x, 1.61x, 2.37x); p99 steady is",
        "the 4th-slowest of ~330 requests at 100 MB, so it moves too. Swap to the first request",
        "answered by the new version, against a bare build under the same traffic, in the same",
        "three runs: -69, -53, -85 ms at 100 MB and -11, -4, -14 ms at 10 MB (target: within",
        "+50 ms; met in all). Where the slowest 2% of requests",
        "during swaps fall (probe, 100 MB, two runs): 8-13 overlap the build, which takes one of the",
        "two cores a request's intra-op threads use (p50 during swaps 8-9 ms against 5-5.6 steady);",
        "3-7 overlap the old session's teardown, which holds the GIL for 7-15 ms inside",
        "onnxruntime's binding, where no Python thread can run. Building at nice 19 brings p50",
        "during swaps back to steady, but a thread's nice is inherited by the threads it creates",
        "(onnxruntime creates the new session's pool in its constructor) and an unprivileged",
        "process cannot lower it again, so either the new version's serving threads stay niced for",
        "good, or each build needs a fresh thread, and glibc gives each one its own malloc arena:",
        "RSS +40-93% after 10 swaps at 10 MB, against the 15% target. Neither was adopted. A",
        "shorter build does not help: from shared mode's prepared copy (prepacked, memory-mapped)",
        "a build took 233-387 ms and a teardown 0.5-9.5 ms, and p99 during builds was still 2.31x",
        "(2.35x from the plain file, same probe). At half load of a 2-core capacity, losing one",
        "core for any time puts the requests at full load for that time.",
        "",
        "## Gate (`python -m bench.gate_bench`)",
        "",
        "`modelswap gate` of v2 against v1 (both downloaded, verified and evaluated) on digits-like",
        "eval sets; peak RSS is the child's own VmHWM.",
        "",
        "| eval set | size | wall time (process start to exit) | peak RSS |",
        "|---|---|---|---|",
    ]
    for key, r in gate.items():
        lines.append(
            f"| {key.replace('_', ' ')} | {r['eval_set_mb']} MB | {r['seconds']} s | {r['peak_rss_mb']} MB |"
        )
    lines += [
        "",
        "Flat peak RSS across sizes is the constant-memory property: rows are read from the",
        ".npz in batches of 4,096 and metrics are accumulated as sums.",
        "",
    ]
    return "\n".join(lines)


def _written_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Written by"))


def _history(out: Path, rerun: list[str]) -> str:
    """The header after an --only run: when each section was measured, not just today (the
    other sections come from their saved results, measured earlier)."""
    try:
        before = _written_line(out.read_text()).rstrip(".")
    except (OSError, StopIteration):
        before = "Written by `make bench`"
    names = ", ".join(rerun)
    flag = f"with `--only {','.join(rerun)}`"
    entry = f"{names} on {datetime.now(UTC):%Y-%m-%d} {flag}"
    # an earlier --only run of the same sections no longer says when they were measured
    kept = [
        part
        for part in before.split("; ")
        if not (part.startswith(f"{names} on ") and part.endswith(flag))
    ]
    return "; ".join([*kept, entry]) + "."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-json", help="folder with agent.json, loader.json, gate.json to reuse")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument(
        "--only",
        help="comma-separated benchmarks to run again (e.g. agent,loader); the others are read "
        "from their last docs/bench-NAME.json",
    )
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(BENCHES)
    if only - set(BENCHES):
        ap.error(f"--only takes names from {', '.join(BENCHES)}")
    results = {}
    for name in BENCHES:
        saved = ROOT / "docs" / f"bench-{name}.json"
        given = Path(args.from_json) / f"{name}.json" if args.from_json else None
        if args.only and name not in only and saved.exists():
            results[name] = json.loads(saved.read_text())
        elif given is not None:
            if given.exists():  # --only NAME --from-json DIR: a run made by hand becomes NAME's
                results[name] = json.loads(given.read_text())
                if args.only:
                    saved.write_text(given.read_text())
        else:
            (ROOT / "docs").mkdir(exist_ok=True)
            results[name] = run(name, saved)
    text = render(results["agent"], results["loader"], results["gate"])
    if args.only:
        text = text.replace(_written_line(text), _history(Path(args.out), sorted(only)), 1)
    text += "\n" + "\n".join(shared_bench.render(results["shared"]))
    if "peers" in results:
        text += "\n" + "\n".join(peers_bench.render(results["peers"]))
    if "fleet" in results and "restart" in results:
        text += "\n" + "\n".join(render_fleet(results["fleet"], results["restart"]))
    if "stores" in results:
        text += "\n" + "\n".join(stores_bench.render(results["stores"]))
    if "signing" in results:
        text += "\n" + "\n".join(signing_bench.render(results["signing"]))
    if "rollout" in results:
        text += "\n" + "\n".join(rollout_bench.render(results["rollout"]))
    if "judge" in results:
        text += "\n" + "\n".join(judge_bench.render(results["judge"]))
    if "ui" in results:
        text += "\n" + "\n".join(ui_bench.render(results["ui"]))
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
