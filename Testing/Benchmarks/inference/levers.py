"""One lever at a time: what each CPU setting does to the network time per window, and old vs new engine.

Part 1 (per window): the network alone on a 96^3 window, each setting in a fresh child process,
one warm-up pass then ``--passes`` timed passes; wall, user and system CPU seconds and minor page
faults per window. Settings: the baseline (1 window per pass, contiguous NCDHW, torch's threads,
inference_mode, glibc's default malloc), then each lever alone.

Part 2 (whole sliding window): the engine as committed at ``--old-commit`` against the working tree
(with 1 and 2 windows per pass), on the real case resampled to the model grid; time, peak RSS, windows.

Settings are interleaved across repeats so that load from other users hits them alike; the min of
the repeats is reported. Run: python Testing/Benchmarks/inference/levers.py --model random
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

RESULTS = Path(__file__).resolve().parent / "results" / "levers_cpu"
SETTINGS = {
    "baseline": {},
    "retained heap (mallopt)": {"retained_heap": True},
    "2 windows per pass": {"batch": 2},
    "4 windows per pass": {"batch": 4},
    "channels_last_3d": {"channels_last": True},
    "1 thread": {"threads": 1},
    "no_grad instead of inference_mode": {"no_grad": True},
    "retained heap + 2 windows per pass": {"retained_heap": True, "batch": 2},
    "retained heap + 4 windows per pass": {"retained_heap": True, "batch": 4},
    "retained heap + 2 windows per pass + 1 thread": {"retained_heap": True, "batch": 2, "threads": 1},
}
COMPILE_SETTING = {"torch.compile (inductor) + retained heap": {"compile": True, "retained_heap": True}}


def forward_worker(setting: dict, model: Path, passes: int) -> dict:
    """Time ``passes`` forward passes of one setting after a warm-up pass (a fresh process per call)."""
    import torch

    from lvt.heap import retained_heap
    from lvt.segment.model_file import load_model

    if setting.get("threads"):
        torch.set_num_threads(setting["threads"])
    network, manifest = load_model(model)
    batch = setting.get("batch", 1)
    inputs = torch.rand(batch, 1, *manifest.patch_size_zyx)
    if setting.get("channels_last"):
        network = network.to(memory_format=torch.channels_last_3d)
        inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
    run = torch.compile(network, dynamic=False) if setting.get("compile") else network
    mode = torch.no_grad() if setting.get("no_grad") else torch.inference_mode()
    with mode, retained_heap(setting.get("retained_heap", False)):
        start = time.perf_counter()
        run(inputs)
        warmup = time.perf_counter() - start
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(passes):
            run(inputs)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    windows = passes * batch
    return {"wall_s_per_window": wall / windows, "user_s_per_window": (after.ru_utime - before.ru_utime) / windows,
            "sys_s_per_window": (after.ru_stime - before.ru_stime) / windows,
            "minor_faults_per_window": (after.ru_minflt - before.ru_minflt) / windows,
            "warmup_s": warmup, "threads": torch.get_num_threads(), "peak_rss_mb": benchlib.peak_rss_mb_so_far()}


def old_engine_module(commit: str):
    """lvt/inference.py as committed at ``commit``, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:LVTSegmentation/lvt/inference.py"], cwd=benchlib.REPO,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "lvt_inference_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("lvt_inference_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def engine_worker(which: str, model: Path, input_path: Path, commit: str) -> dict:
    """One whole sliding window with the old engine or the new one ("new:B", B windows per pass)."""
    import lvt.segment.predict as new

    if which == "old":
        predictor = old_engine_module(commit).Predictor.from_file(model, "cpu")
    else:
        batch = int(which.split(":")[1])
        predictor = new.Predictor.from_file(model, "cpu", new.SlidingWindowConfig(windows_per_batch=batch))
    hu = np.load(input_path)
    baseline = benchlib.rss_mb_now()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    _, stats = predictor.predict_probabilities(hu)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
            "sys_s": after.ru_stime - before.ru_stime, "windows_computed": stats.windows_computed,
            "windows_total": stats.windows_total,
            "windows_skipped_air": stats.windows_skipped_air, "forward_passes": stats.forward_passes,
            "baseline_rss_mb": baseline, "peak_rss_mb": benchlib.peak_rss_mb_so_far()}


def run_worker(args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--model", str(args.model), "--passes", str(args.passes), *extra]
    child = benchlib.run_child(command)
    record = benchlib.last_json_line(child)
    record["child_peak_rss_mb"] = child.peak_rss_mb
    return record


def measure_settings(args: argparse.Namespace, settings: dict) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        for name, setting in settings.items():
            record = run_worker(args, "--worker-forward", json.dumps(setting))
            results[name].append(record)
            print(f"  [{repeat + 1}] {name}: {record['wall_s_per_window']:.2f} s/window "
                  f"(user {record['user_s_per_window']:.2f}, sys {record['sys_s_per_window']:.2f})", flush=True)
    return results


def measure_engines(args: argparse.Namespace, scratch: Path) -> dict[str, list[dict]]:
    from lvt.grid import resample_to_spacing
    from lvt.io import read_image
    from lvt.segment.model_file import read_manifest

    manifest, _ = read_manifest(args.model)
    hu = resample_to_spacing(read_image(benchlib.ircadb_case().ct), manifest.spacing_mm).array
    input_path = scratch / "ircadb_model_grid.npy"
    np.save(input_path, hu)
    results: dict[str, list[dict]] = {name: [] for name in ["old", *(f"new:{b}" for b in args.engine_batches)]}
    for repeat in range(args.repeats):
        for which in results:
            record = run_worker(args, "--worker-engine", which, "--worker-input", str(input_path),
                                "--old-commit", args.old_commit)
            results[which].append(record)
            print(f"  [{repeat + 1}] {which} engine: {record['seconds']:.1f} s, "
                  f"peak {record['child_peak_rss_mb']:.0f} MB", flush=True)
    return results


def markdown(record: dict) -> str:
    lines = ["# CPU levers, one at a time", "", benchlib.machine_markdown(record),
             f"- Model: `{record['model']}`" + (f" ({benchlib.RANDOM_MODEL_NOTE})" if record["random_weights"] else ""),
             "", "## Network time per 96^3 window (min over repeats)", "",
             "| setting | wall s/window | all repeats | user s | sys s | minor faults | peak RSS (MB) | warm-up s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in record["settings"].items():
        best = min(runs, key=lambda r: r["wall_s_per_window"])
        every = ", ".join(f"{r['wall_s_per_window']:.2f}" for r in runs)
        lines.append(f"| {name} | {best['wall_s_per_window']:.2f} | {every} | {best['user_s_per_window']:.2f} | "
                     f"{best['sys_s_per_window']:.2f} | {best['minor_faults_per_window']:.0f} | "
                     f"{max(r['child_peak_rss_mb'] for r in runs):.0f} | {best['warmup_s']:.1f} |")
    if record.get("engines"):
        lines += ["", f"## Whole sliding window on ircadb01_17, engine at {record['old_commit'][:10]} vs now", "",
                  "| engine | time min (s) | all (s) | CPU s (system), fastest | windows computed / total | "
                  "peak RSS (MB) |", "|---|---|---|---|---|---|"]
        for which, runs in record["engines"].items():
            best = min(runs, key=lambda r: r["seconds"])
            every = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            lines.append(f"| {which} | {best['seconds']:.1f} | {every} | {best['cpu_s']:.1f} ({best['sys_s']:.1f}) | "
                         f"{best['windows_computed']} / {best['windows_total']} | "
                         f"{max(r['child_peak_rss_mb'] for r in runs):.0f} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="manifest path, or 'random' (default: the bundled model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="timed forward passes per child")
    parser.add_argument("--settings", nargs="*", default=None,
                        help="names of settings to run (default: all; none when given empty)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    parser.add_argument("--engines", action="store_true", help="also run part 2 (old vs new engine)")
    parser.add_argument("--old-commit", default="HEAD", help="commit whose lvt/inference.py is 'old'")
    parser.add_argument("--engine-batches", type=int, nargs="+", default=[1, 2], help="new engine: windows per pass")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker-forward", help=argparse.SUPPRESS)
    parser.add_argument("--worker-engine", help=argparse.SUPPRESS)
    parser.add_argument("--worker-input", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker_forward:
        print(json.dumps(forward_worker(json.loads(args.worker_forward), Path(args.model), args.passes)))
        return
    if args.worker_engine:
        print(json.dumps(engine_worker(args.worker_engine, Path(args.model), args.worker_input, args.old_commit)))
        return
    record = benchlib.provenance(sys.argv)
    args.model, random_weights = benchlib.resolve_model(args.model)
    old_commit = subprocess.run(["git", "rev-parse", args.old_commit], cwd=benchlib.REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    settings = {**SETTINGS, **(COMPILE_SETTING if args.compile else {})}
    if args.settings is not None:
        settings = {name: settings[name] for name in args.settings}
    record.update(model=str(args.model), random_weights=random_weights, old_commit=old_commit,
                  settings=measure_settings(args, settings))
    benchlib.write_results(args.out, record, markdown(record))  # kept should part 2 fail
    if args.engines:
        with tempfile.TemporaryDirectory() as scratch:
            record["engines"] = measure_engines(args, Path(scratch))
    text = markdown(record)
    benchlib.write_results(args.out, record, text)
    print(text)


if __name__ == "__main__":
    main()
