"""LVT's sliding window against MONAI's on CPU: wall time, peak memory, agreement, FLOP/s.

Both engines get the same network weights and the same input: the case read and resampled to the
model spacing exactly as ``lvt segment`` does, HU-windowed by the model's window. MONAI runs
``sliding_window_inference(mode="gaussian", overlap=0.5, roi_size=patch, sw_batch_size=B)``.

Engines:
    monai          MONAI, every window of the image.
    lvt-same-grid  LVT on the same window grid as MONAI; windows of pure air skipped (counted).
    lvt            LVT as ``lvt segment`` runs it: windows over the body's box, air windows skipped.

MONAI steps windows by int(0.5 * patch) and pushes the last one flush with the end; LVT spreads them
evenly (nnU-Net's rule). So that both place windows at the same voxels, the input is padded with air
at the far end of each axis to the next size patch + k * patch / 2 (this never adds a window).

Each run is a fresh child process (its own peak RSS); the time is that of the engine call alone.
Run (from the repo root): python Testing/Benchmarks/inference/monai_comparison.py --model random
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

ENGINES = ("monai", "lvt-same-grid", "lvt")
RESULTS = Path(__file__).resolve().parent / "results" / "monai_comparison_cpu"


def model_grid_input(case: benchlib.Case, model: Path) -> np.ndarray:
    """The case on the model grid (as the pipeline resamples it), padded so both window rules agree."""
    from lvt.grid import resample_to_spacing
    from lvt.image import AIR_HU
    from lvt.io import read_image
    from lvt.segment.model_file import read_manifest

    manifest, _ = read_manifest(model)
    hu = resample_to_spacing(read_image(case.ct), manifest.spacing_mm, default_value=AIR_HU).array
    return pad_to_shared_grid(hu, manifest.patch_size_zyx, AIR_HU)


def pad_to_shared_grid(hu: np.ndarray, patch: tuple[int, ...], fill: float) -> np.ndarray:
    """Pad each axis longer than the patch to patch + k * (patch // 2), where both window rules coincide."""
    from lvt.segment.predict import compute_window_starts

    target = []
    for size, p in zip(hu.shape, patch, strict=True):
        n = len(compute_window_starts(size, p, 0.5))
        target.append(size if size <= p else p + (n - 1) * (p // 2))
    return np.pad(hu, [(0, t - s) for s, t in zip(hu.shape, target, strict=True)], constant_values=fill)


# ------------------------------------------------------------------------------------------- the worker


def run_engine(engine: str, hu: np.ndarray, model: Path, batch: int) -> tuple[np.ndarray, int, int]:
    """Probabilities (3, Z, Y, X) float32, windows computed, windows in the full grid."""
    import torch

    from lvt.segment.predict import Predictor, SlidingWindowConfig, count_windows

    config = SlidingWindowConfig(windows_per_batch=batch, crop_to_body=engine == "lvt")
    predictor = Predictor.from_file(model, "cpu", config)
    patch = tuple(predictor.manifest.patch_size_zyx)
    if engine != "monai":
        probabilities, stats = predictor.predict_probabilities(hu)
        return probabilities, stats.windows_computed, stats.windows_total
    from monai.inferers import sliding_window_inference

    from lvt.segment.window import apply_window

    with torch.inference_mode():
        windowed = apply_window(torch.from_numpy(hu)[None, None], predictor.manifest.window)
        logits = sliding_window_inference(windowed, patch, batch, predictor.network, overlap=0.5, mode="gaussian")
        probabilities = torch.sigmoid_(logits)[0].numpy()
    windows = count_windows(hu.shape, patch, 0.5)
    return probabilities, windows, windows


def worker(args: argparse.Namespace) -> None:
    """One timed engine call in this (fresh) process; prints one JSON line."""
    import torch

    from lvt.segment.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    hu = np.load(args.worker_input)
    Predictor.from_file(args.model, "cpu")  # import and load once so the timed call pays neither
    baseline_mb = benchlib.rss_mb_now()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    probabilities, computed, total = run_engine(args.worker, hu, args.model, args.windows_per_batch)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = benchlib.peak_rss_mb_so_far()
    if args.worker_save:
        np.save(args.worker_save, probabilities)
    cpu_seconds = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(json.dumps({"engine": args.worker, "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "system_seconds": after.ru_stime - before.ru_stime, "windows_computed": computed,
                      "windows_total": total, "baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_mb,
                      "threads": torch.get_num_threads()}))


# ----------------------------------------------------------------------------------------- comparison


def flops_per_window(model: Path) -> float:
    """Network FLOPs of one window (multiply-add = 2), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lvt.segment.model_file import load_model

    network, manifest = load_model(model)
    network.deep_supervision = False
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 1, *manifest.patch_size_zyx))
    return float(counter.get_total_flops())


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Probability differences and label identity between two (3, Z, Y, X) results."""
    from lvt.labels import exclusive_labels

    difference = np.abs(ours - theirs)
    labels_ours, labels_theirs = exclusive_labels(ours > 0.5), exclusive_labels(theirs > 0.5)
    return {"max_abs_probability_difference": float(difference.max()),
            "fraction_within_1e-3": float((difference <= 1e-3).mean()),
            "label_voxels_different": int((labels_ours != labels_theirs).sum()),
            "label_voxels": int(labels_ours.size)}


def measure_case(case: benchlib.Case, args: argparse.Namespace, scratch: Path) -> dict:
    hu = model_grid_input(case, args.model)
    input_path = scratch / "input.npy"
    np.save(input_path, hu)
    runs: dict[str, list[dict]] = {engine: [] for engine in args.engines}
    for repeat in range(args.repeats):
        for engine in args.engines:  # interleaved, so a burst of load from others hits all engines alike
            command = [sys.executable, __file__, "--worker", engine, "--worker-input", str(input_path),
                       "--model", str(args.model), "--windows-per-batch", str(args.windows_per_batch)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            if repeat == 0:
                command += ["--worker-save", str(scratch / f"{engine}.npy")]
            child = benchlib.run_child(command)
            record = benchlib.last_json_line(child)
            record["child_peak_rss_mb"] = child.peak_rss_mb
            runs[engine].append(record)
            print(f"  {case.name} {engine} run {repeat + 1}: {record['seconds']:.1f} s, "
                  f"peak {child.peak_rss_mb:.0f} MB", flush=True)
    result = {"case": case.name, "model_grid_shape_zyx": list(hu.shape), "runs": runs, "agreement": {}}
    if "monai" in runs:
        theirs = np.load(scratch / "monai.npy")
        for engine in (e for e in args.engines if e != "monai"):
            result["agreement"][engine] = agreement(np.load(scratch / f"{engine}.npy"), theirs)
    return result


def summarize(result: dict, flops: float, ceiling_gflops: float, peak_gflops: float) -> list[str]:
    runs = result["runs"]
    best = {engine: min(runs[engine], key=lambda r: r["seconds"]) for engine in runs}
    lines = [f"### {result['case']} (model grid {' x '.join(map(str, result['model_grid_shape_zyx']))})", "",
             "| engine | windows computed / grid | time, min of runs (s) | all runs (s) | CPU s (of which system), "
             "fastest run | peak RSS (MB) | RSS added by the call (MB) | GFLOP/s | % of est. peak | % of GEMM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for engine, record in best.items():
        gflops = flops * record["windows_computed"] / record["seconds"] / 1e9
        added = max(r["child_peak_rss_mb"] - r["baseline_rss_mb"] for r in runs[engine])
        all_runs = ", ".join(f"{r['seconds']:.1f}" for r in runs[engine])
        lines.append(f"| {engine} | {record['windows_computed']} / {record['windows_total']} | "
                     f"{record['seconds']:.1f} | {all_runs} | {record['cpu_seconds']:.1f} "
                     f"({record['system_seconds']:.1f}) | "
                     f"{max(r['child_peak_rss_mb'] for r in runs[engine]):.0f} | {added:.0f} | {gflops:.1f} | "
                     f"{100 * gflops / peak_gflops:.0f} | {100 * gflops / ceiling_gflops:.0f} |")
    lines.append("")
    if "monai" in best:
        monai_peak = max(r["child_peak_rss_mb"] for r in runs["monai"])
        for engine, numbers in result["agreement"].items():
            ratio = best["monai"]["seconds"] / best[engine]["seconds"]
            memory = monai_peak / max(r["child_peak_rss_mb"] for r in runs[engine])
            lines.append(f"- **{engine} vs MONAI**: {ratio:.2f}x faster, peak RSS ratio (MONAI / LVT) "
                         f"{memory:.2f}; max |Δp| {numbers['max_abs_probability_difference']:.2e}, "
                         f"{100 * numbers['fraction_within_1e-3']:.3f} % of voxels within 1e-3, "
                         f"{numbers['label_voxels_different']} of {numbers['label_voxels']} label voxels differ.")
    return [*lines, ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="manifest path, or 'random' (default: the bundled model)")
    parser.add_argument("--cases", nargs="+", default=["ircadb", "phantom600"], help="ircadb, phantom600, phantom119")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows-per-batch", type=int, default=1, help="MONAI's sw_batch_size and LVT's batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.json and .md)")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-save", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    record = benchlib.provenance(sys.argv)
    model, random_weights = benchlib.resolve_model(args.model)
    args.model = model
    flops = flops_per_window(model)
    ceiling = benchlib.measured_matmul_gflops()
    record.update(model=str(model), random_weights=random_weights, flops_per_window=flops,
                  matmul_gflops=ceiling, windows_per_batch=args.windows_per_batch, cases=[])
    peak = record["machine"]["fp32_peak_gflops_estimate"]
    lines = ["# Sliding window: LVT against MONAI on CPU", "", benchlib.machine_markdown(record),
             f"- Model: `{model}`" + (f" ({benchlib.RANDOM_MODEL_NOTE})" if random_weights else ""),
             f"- Network: {flops / 1e9:.1f} GFLOP per window (FlopCounterMode, multiply-add = 2); "
             f"FP32 peak estimate {peak} GFLOP/s ({record['machine']['peak_formula']}); "
             f"measured 4096^3 GEMM {ceiling:.0f} GFLOP/s", f"- Windows per batch: {args.windows_per_batch}", ""]
    with tempfile.TemporaryDirectory(dir=benchlib.SCRATCH.parent) as scratch:
        for case in benchlib.cases(args.cases):
            result = measure_case(case, args, Path(scratch))
            record["cases"].append(result)
            lines += summarize(result, flops, ceiling, peak)
    benchlib.write_results(args.out, record, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
