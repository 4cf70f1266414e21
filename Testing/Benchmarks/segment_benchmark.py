"""End-to-end ``lvt segment`` on CPU: seconds per stage and peak memory (issues 2 and 6).

Cases: the real 512 x 512 x 119 CT ../shared/data/ircadb01_17 and a 512 x 512 x 600 phantom
(0.75 mm in-plane, 1 mm slices, written to a scratch folder under /tmp, never into the repository).

With a trained model (the bundled one by default, or --model PATH) every run is the real command,
``python -m lvt segment CT -o OUT --device cpu --progress json``, in a child process: stage times
come from the arrival time of its JSON progress lines, peak memory from the child's own ``ru_maxrss``.

With ``--model random`` (the bundled architecture with seeded random weights, for use before the
trained model exists) the labels are noise, which makes measurements, surfaces and the report
meaningless and very slow. Then a run is split in two child processes whose sum estimates ``lvt
segment``: (1) read, model load, resample, sliding window and back-resampling + clean-up, by the
same ``lvt.segment.pipeline`` functions the command calls, and (2) ``lvt measure`` of the case's reference
labels with the CT, which runs the same measure, surfaces and report stages on a realistic
segmentation. The back-resampling stage is then pessimistic: noise spreads the liver box over the body.

Timings are the min of --repeats runs (the machine is shared). Results: segment_benchmark_results.md/.json.
Run from the repository root: python Testing/Benchmarks/segment_benchmark.py [--model random]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "inference"))
import benchlib

RESULTS = Path(__file__).resolve().parent / "segment_benchmark_results"
STARTUP = "startup"


def stage_seconds(run: benchlib.ChildRun) -> dict[str, float]:
    """Seconds per stage from the JSON progress lines: a stage lasts from its first event to the next stage's.

    "startup" is interpreter start, imports and argument parsing (up to the first event).
    """
    events = [(t, json.loads(line)) for t, line in run.lines if line.startswith("{")]
    marks: list[tuple[str, float]] = []
    for arrival, event in events:
        name = event.get("stage") if event["event"] == "progress" else event["event"]
        if not marks or marks[-1][0] != name:
            marks.append((name, arrival))
    seconds = {STARTUP: marks[0][1]} if marks else {}
    for (name, begin), (_, end) in zip(marks, [*marks[1:], ("end", run.wall_s)], strict=True):
        if name != "done":
            seconds[name] = round(seconds.get(name, 0.0) + end - begin, 2)
    return seconds


def lvt_command(*args: str, threads: int | None) -> list[str]:
    return [sys.executable, "-m", "lvt", *args, "--progress", "json", "--overwrite",
            *(["--threads", str(threads)] if threads else [])]


def run_segment(case: benchlib.Case, model: Path, out: Path, threads: int | None) -> dict:
    run = benchlib.run_child(lvt_command("segment", str(case.ct), "-o", str(out), "--model", str(model),
                                         "--device", "cpu", threads=threads))
    if run.returncode != 0:
        raise RuntimeError(f"lvt segment failed ({run.returncode}):\n{run.stderr[-3000:]}")
    inference = json.loads((out / "report.json").read_text())["inference"]
    return {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb, "stages_s": stage_seconds(run),
            "windows": {k: inference[k] for k in ("windows_total", "windows_computed", "windows_skipped_air")}}


def run_measure(case: benchlib.Case, out: Path, threads: int | None) -> dict:
    run = benchlib.run_child(lvt_command("measure", str(case.reference_labels), "--ct", str(case.ct), "-o", str(out),
                                         threads=threads))
    if run.returncode != 0:
        raise RuntimeError(f"lvt measure failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb, "stages_s": stage_seconds(run)}


def run_segment_stages(case: benchlib.Case, model: Path, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--worker-segment", str(case.ct), "--model", str(model)]
    run = benchlib.run_child(command + (["--threads", str(threads)] if threads else []))
    record = benchlib.last_json_line(run)
    return {**record, "wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb}


def segment_worker(ct_path: Path, model: Path, threads: int | None) -> dict:
    """Read, load the model, segment_image (resample, inference, back to the CT grid + clean-up)."""
    started = time.perf_counter()
    import torch

    from lvt.io import read_image
    from lvt.segment.pipeline import SegmentOptions, load_predictor, segment_image

    if threads:
        torch.set_num_threads(threads)
    imported = time.perf_counter()
    ct = read_image(ct_path)
    predictor, _ = load_predictor(SegmentOptions(model_path=model, device="cpu"))
    loaded = time.perf_counter()
    result = segment_image(ct, predictor)
    stats = result.window_stats
    return {"stages_s": {"imports": round(imported - started, 2), "read": round(loaded - imported, 2),
                         **result.timings_s},
            "windows": {"windows_total": stats.windows_total, "windows_computed": stats.windows_computed,
                        "windows_skipped_air": stats.windows_skipped_air}}


def measure_case(case: benchlib.Case, model: Path, random_weights: bool, args: argparse.Namespace,
                 scratch: Path) -> dict:
    runs: dict[str, list[dict]] = {"measure_reference": []}
    runs["segment_split" if random_weights else "segment"] = []
    for repeat in range(args.repeats):
        if random_weights:
            runs["segment_split"].append(run_segment_stages(case, model, args.threads))
        else:
            runs["segment"].append(run_segment(case, model, scratch / "segment", args.threads))
        runs["measure_reference"].append(run_measure(case, scratch / "measure", args.threads))
        for name, records in runs.items():
            print(f"  {case.name} [{repeat + 1}] {name}: {records[-1]['wall_s']:.1f} s, "
                  f"peak {records[-1]['peak_rss_mb']:.0f} MB {records[-1]['stages_s']}", flush=True)
    return {"case": case.name, "runs": runs}


def best(records: list[dict]) -> dict:
    return min(records, key=lambda r: r["wall_s"])


def case_markdown(result: dict) -> list[str]:
    lines = [f"### {result['case']}", "",
             "| run | wall s (min) | all runs (s) | peak RSS (MB, max) | stages (s), fastest run |",
             "|---|---|---|---|---|"]
    for name, records in result["runs"].items():
        fastest = best(records)
        stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in fastest["stages_s"].items())
        every = ", ".join(f"{r['wall_s']:.1f}" for r in records)
        lines.append(f"| {name} | {fastest['wall_s']:.1f} | {every} | {max(r['peak_rss_mb'] for r in records):.0f} | "
                     f"{stages} |")
    runs = result["runs"]
    main = best(runs.get("segment") or runs["segment_split"])
    lines.append("")
    lines.append(f"- Windows: {main['windows']['windows_computed']} computed of {main['windows']['windows_total']}"
                 f" ({main['windows']['windows_skipped_air']} skipped as air).")
    if "segment_split" in runs:
        downstream = {k: v for k, v in best(runs["measure_reference"])["stages_s"].items()
                      if k in ("measure", "surfaces", "report")}
        total = best(runs["segment_split"])["wall_s"] + sum(downstream.values())
        peak = max(max(r["peak_rss_mb"] for r in records) for records in runs.values())
        lines.append(f"- Estimated `lvt segment` end to end: {total:.1f} s (segment stages {main['wall_s']:.1f} s + "
                     f"measure/surfaces/report of the reference labels {sum(downstream.values()):.1f} s); "
                     f"peak RSS {peak:.0f} MB (the larger of the two processes).")
    return [*lines, ""]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="manifest path, or 'random' (default: the bundled model)")
    parser.add_argument("--cases", nargs="+", default=["ircadb", "phantom600"], help="ircadb, phantom600, phantom119")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="--threads for lvt (default: lvt's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.json and .md)")
    parser.add_argument("--worker-segment", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker_segment:
        print(json.dumps(segment_worker(args.worker_segment, Path(args.model), args.threads)))
        return
    record = benchlib.provenance(sys.argv)
    model, random_weights = benchlib.resolve_model(args.model)
    record.update(model=str(model), random_weights=random_weights, cases=[])
    lines = ["# `lvt segment` end to end on CPU", "", benchlib.machine_markdown(record),
             f"- Model: `{model}`" + (f" ({benchlib.RANDOM_MODEL_NOTE})" if random_weights else ""),
             "- Targets (issue 6): 512x512x119 under 60 s and 3 GB peak on 2 CPU cores; 512x512x600 under 4 GB.", ""]
    with tempfile.TemporaryDirectory(dir=benchlib.SCRATCH.parent) as scratch:
        for case in benchlib.cases(args.cases):
            result = measure_case(case, model, random_weights, args, Path(scratch))
            record["cases"].append(result)
            lines += case_markdown(result)
    benchlib.write_results(args.out, record, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
