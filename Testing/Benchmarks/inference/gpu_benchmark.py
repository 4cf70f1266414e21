"""LVT inference on one CUDA GPU: sliding window and ``segment_image``, time and peak memory (issue 6).

Self-contained: needs torch with CUDA, numpy, scipy, SimpleITK and safetensors (lvt's own
dependencies); imports ``lvt`` from this checkout, so no install is needed. MONAI is compared only
when it happens to be importable. Run from anywhere; results go to $OUT/gpu_benchmark.json when $OUT
is set, else to --out:

    python Testing/Benchmarks/inference/gpu_benchmark.py [--model Resources/Models/lvt_default.json]

Measures, with fp16 autocast (lvt's CUDA default):
1. the sliding window alone on phantoms rendered directly at the model spacing with the field of view
   of a 512x512x119 (0.74 mm, 1.6 mm slices) and of a 512x512x600 (0.75 mm, 1 mm) CT, for 1, 2, 4
   and 8 windows per pass, channels-last 3D, cudnn.benchmark, and torch.compile; each the min of
   3 timed runs after a warm-up run; peak GPU memory by torch.cuda.max_memory_allocated;
2. ``lvt.segment.pipeline.segment_image`` end to end (read from NIfTI, resample, inference, back to the CT
   grid + clean-up) on the full-resolution 512x512x119 and 512x512x600 phantoms, stage by stage;
3. network FLOPs per window (FlopCounterMode) and the achieved fraction of the GPU's dense fp16 peak.
Without --model the weights are a seeded random initialisation of the bundled architecture: speed
does not depend on the weights, except the back-to-CT-grid stage (noise spreads the liver box).
The whole run is kept under about 4 minutes: torch.compile is skipped when the budget is spent.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "LVTSegmentation"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Dense (no sparsity) fp16/bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets.
FP16_DENSE_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                          "L40S": 362.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0}
CASES = {  # name: (field of view mm (x, y, z), full-resolution spacing mm (x, y, z))
    "512x512x119": ((380.4, 380.4, 190.4), (0.743, 0.743, 1.6)),
    "512x512x600": ((384.0, 384.0, 600.0), (0.75, 0.75, 1.0)),
}
COMPILE_BUDGET_S = 100.0


def fp16_peak_tflops(name: str) -> float | None:
    for key, value in FP16_DENSE_PEAK_TFLOPS.items():  # ordered: specific names first
        if key in name:
            return value
    return None


def load_predictor(model: str | None, **config: object):
    """A Predictor on CUDA: the given model file, or the bundled architecture with seeded random weights."""
    from lvt.segment.model_file import ModelManifest
    from lvt.segment.network import NetworkConfig, build_network
    from lvt.segment.predict import Predictor, SlidingWindowConfig
    from lvt.segment.window import Window

    sliding = SlidingWindowConfig(**config)
    if model:
        return Predictor.from_file(model, "cuda", sliding)
    torch.manual_seed(0)
    network_config = NetworkConfig()
    manifest = ModelManifest(name="lvt_random_seed0", version="0.0.0", spacing_mm=(2.0, 2.0, 2.0),
                             patch_size_zyx=(96, 96, 96), window=Window(), network=network_config)
    return Predictor(build_network(network_config), manifest, torch.device("cuda"), sliding)


def phantom(case: str, spacing_mm: tuple[float, float, float]):
    from lvt.phantom import PhantomConfig, make_phantom

    field_of_view, _ = CASES[case]
    return make_phantom(PhantomConfig(seed=7, spacing_mm=spacing_mm, field_of_view_mm=field_of_view)).image


def timed_gpu(action, repeats: int = 3) -> tuple[float, list[float], float, object]:
    """Warm up once, then min wall seconds of ``repeats`` synchronised runs; peak GPU MiB; last result."""
    result = action()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds), seconds, torch.cuda.max_memory_allocated() / 2**20, result


def flops_per_window(predictor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        predictor.network(torch.zeros(1, 1, *predictor.manifest.patch_size_zyx, device="cuda"))
    return float(counter.get_total_flops())


def sliding_window_rows(args: argparse.Namespace, flops: float, peak: float | None, deadline: float) -> list[dict]:
    """Part 1: the sliding window alone, several settings, both phantom sizes."""
    rows = []
    settings = [({"windows_per_batch": b}, f"{b} windows/pass") for b in (1, 2, 4, 8)]
    settings += [({"windows_per_batch": 4, "use_channels_last": True}, "4 windows/pass, channels_last_3d"),
                 ({"windows_per_batch": 4, "cudnn_benchmark": True}, "4 windows/pass, cudnn.benchmark")]
    images = {case: phantom(case, (2.0, 2.0, 2.0)).array for case in CASES}
    for config, label in settings:
        benchmark = bool(config.pop("cudnn_benchmark", False))
        torch.backends.cudnn.benchmark = benchmark
        predictor = load_predictor(args.model, **config)
        for case, hu in images.items():
            rows.append(sliding_row(predictor, hu, case, label, flops, peak))
        torch.backends.cudnn.benchmark = False
        del predictor
        torch.cuda.empty_cache()
    if time.perf_counter() + COMPILE_BUDGET_S < deadline and not args.no_compile:
        predictor = load_predictor(args.model, windows_per_batch=4, use_compile=True)
        start = time.perf_counter()
        predictor.predict_probabilities(next(iter(images.values())))  # compiles
        compile_s = time.perf_counter() - start
        for case, hu in images.items():
            rows.append({**sliding_row(predictor, hu, case, "4 windows/pass, torch.compile", flops, peak),
                         "first_call_with_compile_s": round(compile_s, 1)})
    else:
        print("torch.compile skipped (time budget or --no-compile)", flush=True)
    return rows


def sliding_row(predictor, hu: np.ndarray, case: str, label: str, flops: float, peak: float | None) -> dict:
    best, every, memory, (_, stats) = timed_gpu(lambda: predictor.predict_probabilities(hu))
    tflops = flops * stats.windows_computed / best / 1e12
    row = {"part": "sliding window", "case": case, "setting": label, "model_grid_zyx": list(hu.shape),
           "seconds": round(best, 3), "all_seconds": [round(s, 3) for s in every], "peak_gpu_mib": round(memory),
           "windows_computed": stats.windows_computed, "windows_total": stats.windows_total,
           "windows_skipped_air": stats.windows_skipped_air, "achieved_tflops": round(tflops, 1),
           "fraction_of_fp16_peak": round(tflops / peak, 3) if peak else None}
    print(f"  {case} {label}: {best:.3f} s, {memory:.0f} MiB, {stats.windows_computed}/{stats.windows_total} "
          f"windows, {tflops:.1f} TFLOP/s", flush=True)
    return row


def monai_rows(args: argparse.Namespace) -> list[dict]:
    """MONAI's Gaussian sliding window on the same input and weights, when MONAI is importable."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return []
    from lvt.segment.window import apply_window

    rows = []
    predictor = load_predictor(args.model, windows_per_batch=4)
    for case in CASES:
        hu = phantom(case, (2.0, 2.0, 2.0)).array

        def run(hu: np.ndarray = hu) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                windowed = apply_window(torch.from_numpy(hu).cuda()[None, None], predictor.manifest.window)
                logits = sliding_window_inference(windowed, tuple(predictor.manifest.patch_size_zyx), 4,
                                                  predictor.network, overlap=0.5, mode="gaussian")
                return torch.sigmoid(logits.float())[0].cpu()

        best, every, memory, _ = timed_gpu(run)
        rows.append({"part": "MONAI sliding window", "case": case, "setting": "4 windows/pass, fp16 (time only)",
                     "seconds": round(best, 3), "all_seconds": [round(s, 3) for s in every],
                     "peak_gpu_mib": round(memory)})
        print(f"  MONAI {case}: {best:.3f} s, {memory:.0f} MiB", flush=True)
    return rows


def segment_rows(args: argparse.Namespace, scratch: Path) -> list[dict]:
    """Part 2: read + segment_image on full-resolution phantoms, stage by stage (min of 3 by total)."""
    from lvt.io import read_image, write_image
    from lvt.segment.pipeline import segment_image

    predictor = load_predictor(args.model)
    rows = []
    for case, (_, spacing) in CASES.items():
        image = phantom(case, spacing)
        path = scratch / f"{case}.nii.gz"
        write_image(image.with_array(np.round(image.array).astype(np.int16)), path)
        del image
        runs = []
        for _ in range(3):
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            ct = read_image(path)
            read_s = time.perf_counter() - start
            result = segment_image(ct, predictor)
            torch.cuda.synchronize()
            total = time.perf_counter() - start
            runs.append({"total_s": round(total, 3), "stages_s": {"read": round(read_s, 3), **result.timings_s},
                         "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                         "windows_computed": result.window_stats.windows_computed,
                         "windows_total": result.window_stats.windows_total})
        best = min(runs, key=lambda r: r["total_s"])
        rows.append({"part": "segment_image", "case": case, "setting": "lvt defaults (4 windows/pass, fp16)",
                     "seconds": best["total_s"], "all_seconds": [r["total_s"] for r in runs], **best})
        print(f"  segment_image {case}: {best['total_s']:.2f} s {best['stages_s']}", flush=True)
    return rows


def git_commit() -> str:
    """HEAD of this checkout, or $LVT_COMMIT where the copy has no git metadata."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        found = None
    commit = found.stdout.strip() if found is not None and found.returncode == 0 else ""
    return commit or os.environ.get("LVT_COMMIT", "unknown (set LVT_COMMIT)")


def table(rows: list[dict]) -> str:
    lines = [f"{'part':<22} {'case':<12} {'setting':<36} {'s':>7} {'GPU MiB':>8} {'windows':>9} {'TFLOP/s':>8}"]
    for row in rows:
        windows = f"{row.get('windows_computed', '')}/{row.get('windows_total', '')}" if "windows_total" in row else ""
        lines.append(f"{row['part']:<22} {row['case']:<12} {row['setting']:<36} {row['seconds']:>7.3f} "
                     f"{row.get('peak_gpu_mib', ''):>8} {windows:>9} {row.get('achieved_tflops', ''):>8}")
        if "stages_s" in row:
            lines.append(f"{'':<22} stages: {row['stages_s']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model manifest (default: seeded random weights)")
    parser.add_argument("--out", type=Path, default=Path("gpu_benchmark.json"), help="used when $OUT is not set")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--budget-s", type=float, default=220.0, help="stop optional parts after this")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    started = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    peak = fp16_peak_tflops(name)
    flops = flops_per_window(load_predictor(args.model))
    print(f"{name}: {flops / 1e9:.1f} GFLOP per window, fp16 dense peak {peak} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        # segment_image needs SimpleITK (reading, resampling); a GPU node may lack it: then part 2 is skipped
        has_simpleitk = importlib.util.find_spec("SimpleITK") is not None
        rows = segment_rows(args, Path(scratch)) if has_simpleitk else []
        rows += monai_rows(args)
        rows += sliding_window_rows(args, flops, peak, started + args.budget_s)
    record = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "commit": git_commit(),
              "gpu": name, "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
              "cpu_cores": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(),
              "model": args.model or "seeded random weights (bundled architecture)",
              "flops_per_window": flops, "fp16_dense_peak_tflops": peak, "rows": rows,
              "total_run_s": round(time.perf_counter() - started, 1)}
    out = Path(os.environ["OUT"]) / "gpu_benchmark.json" if os.environ.get("OUT") else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(rows))
    print(f"total {record['total_run_s']} s; results in {out}")


if __name__ == "__main__":
    main()
