"""``lvt segment`` from two checkouts of the core, alternated: wall and CPU seconds, peak RSS, report stages.

    git worktree add --detach /tmp/lvt-before <commit>
    python Testing/Benchmarks/inference/two_trees.py --before /tmp/lvt-before --cases ircadb phantom600 big1024

Each run is a fresh ``python -m lvt segment CT --device cpu`` child with ``PYTHONPATH`` set to one
checkout's ``LVTSegmentation`` (same interpreter, packages and bundled model); the order alternates
every round. Cases are benchlib's (ircadb01_17 and the 512 x 512 x 600 phantom) plus ``big1024``,
memory/run_memory.py's 1024 x 1024 x 400 CT, read from scratch when it is there. Reported per case and
checkout: every round, the median and min of the wall seconds, the peak RSS over the rounds, CPU
seconds (user + system: system is where page faults show) and report.json's stage timings.
Results: results/two_trees_<label>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import benchlib

HERE = Path(__file__).resolve().parent
BIG1024_CT = benchlib.SCRATCH / "big1024_400_seed7_ct.nii.gz"


SMALL_CASES = ("ircadb", "phantom119")


def case_path(name: str) -> tuple[str, Path]:
    """A case's title and CT file; big1024 only when memory/run_memory.py has written it."""
    if name != "big1024":
        case = benchlib.cases([name])[0]
        return case.name, case.ct
    if not BIG1024_CT.is_file():
        sys.exit(f"{BIG1024_CT} missing: run Testing/Benchmarks/memory/run_memory.py --cases big1024 first")
    return "synthetic (1024x1024x400)", BIG1024_CT


def one_run(checkout: Path, ct: Path) -> dict:
    out = benchlib.SCRATCH / f"two_trees_{checkout.name}"
    shutil.rmtree(out, ignore_errors=True)
    before = os.times()
    run = benchlib.run_child([sys.executable, "-m", "lvt", "segment", str(ct), "-o", str(out), "--progress", "none",
                              "--device", "cpu"], {"PYTHONPATH": str(checkout / "LVTSegmentation")})
    after = os.times()
    if run.returncode != 0:
        raise RuntimeError(f"lvt segment failed in {checkout}:\n{run.stderr[-3000:]}")
    timings = json.loads((out / "report.json").read_text())["inference"]["timings_s"]
    shutil.rmtree(out)
    return {"wall_s": round(run.wall_s, 2), "peak_rss_mb": round(run.peak_rss_mb),
            "user_s": round(after.children_user - before.children_user, 2),
            "system_s": round(after.children_system - before.children_system, 2),
            "stages_s": timings, "load_after": round(os.getloadavg()[0], 2)}


def markdown(record: dict) -> str:
    lines = [f"# `lvt segment` from two checkouts ({record['label']})", "", benchlib.machine_markdown(record),
             f"- Before: `{record['before']}` ({record['before_commit']}); after: this checkout.",
             f"- Load average at the end: {record['load_average_at_end']}", "",
             "| case | checkout | wall s median (min) | after / before | peak RSS MB | user s | system s | "
             "read / resample / inference / postprocess s (last round) |", "|---|---|---|---|---|---|---|---|"]
    for case, result in record["cases"].items():
        medians = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in result.items()}
        for name, runs in result.items():
            stages = runs[-1]["stages_s"]
            ratio = f"{medians[name] / medians['before']:.2f}" if name == "after" else ""
            lines.append(
                f"| {case} | {name} | {medians[name]:.2f} ({min(r['wall_s'] for r in runs):.2f}) | {ratio} | "
                f"{max(r['peak_rss_mb'] for r in runs)} | {statistics.median(r['user_s'] for r in runs):.1f} | "
                f"{statistics.median(r['system_s'] for r in runs):.1f} | "
                + " / ".join(f"{stages.get(s, 0):.2f}" for s in ("read", "resample", "inference", "postprocess"))
                + " |")
    lines += ["", "Every round (wall s, before / after; the order alternated):", ""]
    for case, result in record["cases"].items():
        rounds = zip(*(result[name] for name in ("before", "after")), strict=True)
        lines.append(f"- {case}: " + "; ".join(f"{b['wall_s']} / {a['wall_s']}" for b, a in rounds))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--cases", nargs="+", default=["ircadb"], help="ircadb, phantom600, phantom119, big1024")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per case (the large cases: see --large-rounds)")
    parser.add_argument("--large-rounds", type=int, default=1, help="rounds for phantom600 and big1024")
    parser.add_argument("--label", default="latest")
    args = parser.parse_args()
    record = {**benchlib.provenance(sys.argv), "label": args.label, "before": str(args.before),
              "before_commit": benchlib.git_commit(args.before), "cases": {}}
    checkouts = {"before": args.before.resolve(), "after": benchlib.REPO}
    for name in args.cases:
        case, ct = case_path(name)
        rounds = args.rounds if name in SMALL_CASES else args.large_rounds
        result: dict[str, list[dict]] = {"before": [], "after": []}
        for index in range(rounds):
            for checkout in (("before", "after") if index % 2 == 0 else ("after", "before")):
                result[checkout].append(one_run(checkouts[checkout], ct))
                print(case, checkout, result[checkout][-1], flush=True)
        record["cases"][case] = result
    record["load_average_at_end"] = os.getloadavg()
    benchlib.write_results(HERE / "results" / f"two_trees_{args.label}", record, markdown(record))


if __name__ == "__main__":
    main()
