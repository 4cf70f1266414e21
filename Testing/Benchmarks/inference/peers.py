"""LVT's sliding window against MONAI's and nnU-Net v2's on CPU, and ``lvt segment`` end to end as a ratio.

Part 1, the peers: one network and one input (the case on the model grid as ``lvt segment`` resamples
it, padded with air to sizes where MONAI's, nnU-Net's and LVT's window rules place the same windows; the
window lists, taken from each library's own code, are compared). Contenders: ``monai``
(sliding_window_inference, Gaussian), ``nnunet`` (nnUNetPredictor.predict_sliding_window_return_logits
fed our network, no mirroring), ``lvt-full`` (LVT on the same windows: no body crop, no air skipping, no
liver box; the compared row) and ``lvt-default`` (as ``lvt segment`` runs: body crop, air skipping, liver
box; a separate row). Each runs under both heaps: "retained" (``lvt.heap.retained_heap``, LVT's
CPU setting, given to the peers around their call) and "glibc" (the default for all, LVT's own switched
off). Every run is a fresh child process; rounds alternate the contenders, each round starting one later.
Reported: median and min of the rounds, user and system CPU seconds, minor faults, peak RSS, forward
passes, load averages, and label voxels that differ from MONAI's and lvt-full's.

Part 2: ``lvt segment`` on one case (child process, wall time with start-up) alternated with one forward
pass of the model's patch (levers.py's worker: fresh process, a warm-up pass, the mean of --passes timed
passes, retained heap); the ratio end to end / forward pass changes little with the load. What each table
means: docs/performance.md.

Run from the repository root at a quiet moment (writes results/peers_cpu.md and .json):
    python Testing/Benchmarks/inference/peers.py
Tiny check (random weights, a 4-window phantom, one round, results in scratch):
    python Testing/Benchmarks/inference/peers.py --model random --cases phantom-small --e2e-case phantom-small \
        --rounds 1 --e2e-rounds 1 --out /tmp/lvt-benchmark/peers_tiny
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import benchlib
from segment_benchmark import run_segment

CONTENDERS = ("monai", "nnunet", "lvt-full", "lvt-default")
PEERS = ("monai", "nnunet")
PEER_MODULES = {"monai": ("monai.inferers",), "nnunet": ("nnunetv2.inference.predict_from_raw_data",)}
HEAPS = ("retained", "glibc")
REFERENCES = ("monai", "lvt-full")  # labels of every other contender are compared with these
OVERLAP = 0.5
LEVERS = Path(__file__).with_name("levers.py")
RESULTS = Path(__file__).resolve().parent / "results" / "peers_cpu"


# ------------------------------------------------------------------------------------ input and windows


def shared_grid_shape(shape: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    """Per axis the least size, not below the image's, where all three window rules place the same windows."""
    from lvt.segment.predict import compute_window_starts

    return tuple(p if s <= p else p + (len(compute_window_starts(s, p, OVERLAP)) - 1) * (p // 2)
                 for s, p in zip(shape, patch, strict=True))


def model_grid_input(case: benchlib.Case, manifest) -> np.ndarray:
    """The case on the model grid (as the pipeline resamples it), padded with air to the shared window grid."""
    from lvt.grid import resample_to_spacing
    from lvt.image import AIR_HU
    from lvt.io import read_image

    hu = resample_to_spacing(read_image(case.ct), manifest.spacing_mm, default_value=AIR_HU).array
    target = shared_grid_shape(hu.shape, tuple(manifest.patch_size_zyx))
    return np.pad(hu, [(0, t - s) for s, t in zip(hu.shape, target, strict=True)], constant_values=AIR_HU)


def window_lists(shape: tuple[int, ...], patch: tuple[int, ...]) -> dict[str, list[tuple[int, ...]]]:
    """The window starts that each library's own code places for a full sliding window over ``shape``."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from lvt.segment.predict import compute_window_starts

    interval = _get_scan_interval(shape, patch, len(shape), [OVERLAP] * len(shape))
    monai = [tuple(int(s.start) for s in box) for box in dense_patch_slices(shape, patch, interval)]
    nnunet = itertools.product(*compute_steps_for_sliding_window(shape, patch, OVERLAP))
    lvt = itertools.product(*(compute_window_starts(s, p, OVERLAP) for s, p in zip(shape, patch, strict=True)))
    return {"monai": sorted(monai), "nnunet": sorted(tuple(map(int, w)) for w in nnunet), "lvt-full": sorted(lvt)}


# ------------------------------------------------------------------------------------------- the worker


def peer_logits(contender: str, windowed, network, manifest):
    """(C, Z, Y, X) logits of a peer's sliding window over a (Z, Y, X) windowed image."""
    from types import SimpleNamespace

    import torch

    patch = tuple(manifest.patch_size_zyx)
    if contender == "monai":
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(windowed[None, None], patch, 1, network, overlap=OVERLAP, mode="gaussian")[0]
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=OVERLAP, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    # What manual_initialization would set from nnU-Net plans; the sliding window reads only these.
    predictor.network, predictor.allowed_mirroring_axes = network, None
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=manifest.network.out_channels)
    return predictor.predict_sliding_window_return_logits(windowed[None]).float()


def run_contender(contender: str, hu: np.ndarray, network, manifest) -> np.ndarray:
    """(C, Z, Y, X) float32 probabilities of one contender: the timed call."""
    import torch

    from lvt.segment.network import probabilities_from_logits
    from lvt.segment.predict import Predictor, SlidingWindowConfig
    from lvt.segment.window import apply_window

    if contender.startswith("lvt"):
        config = (SlidingWindowConfig(windows_per_batch=1, liver_box=True) if contender == "lvt-default" else
                  SlidingWindowConfig(windows_per_batch=1, crop_to_body=False, skip_air_windows=False))
        return Predictor(network, manifest, torch.device("cpu"), config).predict_probabilities(hu)[0]
    with torch.inference_mode():
        logits = peer_logits(contender, apply_window(torch.from_numpy(hu), manifest.window), network, manifest)
        return probabilities_from_logits(logits[None], manifest.network.head)[0].numpy()


def heap_setting(heap: str, contender: str) -> contextlib.AbstractContextManager:
    """The allocator around one timed call.

    LVT's predictor turns the retained heap on itself, so under glibc's default the name it calls is
    replaced by a no-op; the peers get the retained heap from outside.
    """
    import lvt.segment.predict as predict
    from lvt.heap import retained_heap

    if heap == "glibc":
        predict.retained_heap = lambda enabled=True: contextlib.nullcontext()
        return contextlib.nullcontext()
    return retained_heap(contender in PEERS)


def worker(args: argparse.Namespace) -> dict:
    """One timed contender call in this (fresh) process, after the imports and the model load."""
    import torch

    from lvt.segment.model_file import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    for module in ("lvt.segment.predict", *PEER_MODULES.get(args.worker, ())):  # imports are not timed
        importlib.import_module(module)
    network, manifest = load_model(args.model)
    network.deep_supervision = False
    calls = [0]
    network.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    hu = np.load(args.worker_input)
    baseline_mb = benchlib.rss_mb_now()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with heap_setting(args.worker_heap, args.worker):
        probabilities = run_contender(args.worker, hu, network, manifest)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    if args.worker_save:
        np.save(args.worker_save, probabilities)
    return {"contender": args.worker, "heap": args.worker_heap, "seconds": seconds,
            "user_s": after.ru_utime - before.ru_utime, "system_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "forward_passes": calls[0],
            "baseline_rss_mb": baseline_mb, "peak_rss_mb": benchlib.peak_rss_mb_so_far(),
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------ part 1, the peers


def timed_child(command: list[str]) -> dict:
    """A child's JSON record with its peak RSS, wall time and the load averages before and after it."""
    load_before = os.getloadavg()
    child = benchlib.run_child(command)
    record = benchlib.last_json_line(child)
    return {**record, "child_peak_rss_mb": child.peak_rss_mb, "child_wall_s": child.wall_s,
            "load_before": load_before, "load_after": os.getloadavg()}


def measure_peers(case: benchlib.Case, args: argparse.Namespace, manifest, scratch: Path) -> dict:
    """Alternated rounds of every contender under both heaps on one case, then the label comparison."""
    hu = model_grid_input(case, manifest)
    np.save(scratch / "input.npy", hu)
    windows = window_lists(hu.shape, tuple(manifest.patch_size_zyx))
    order = [(contender, heap) for heap in HEAPS for contender in args.contenders]
    runs: dict[str, dict[str, list[dict]]] = {heap: {c: [] for c in args.contenders} for heap in HEAPS}
    for round_index in range(args.rounds):
        for step in range(len(order)):
            contender, heap = order[(step + round_index) % len(order)]
            command = [sys.executable, __file__, "--model", str(args.model), "--worker", contender,
                       "--worker-heap", heap, "--worker-input", str(scratch / "input.npy"),
                       *(["--threads", str(args.threads)] if args.threads else [])]
            if round_index == 0 and heap == HEAPS[0]:
                command += ["--worker-save", str(scratch / f"{contender}.npy")]
            record = timed_child(command)
            runs[heap][contender].append(record)
            print(f"  {case.name} round {round_index + 1} {contender} ({heap} heap): {record['seconds']:.1f} s, "
                  f"sys {record['system_s']:.1f} s, peak {record['child_peak_rss_mb']:.0f} MB, "
                  f"load {record['load_before'][0]:.1f}", flush=True)
    return {"case": case.name, "model_grid_shape_zyx": list(hu.shape), "windows": len(windows["lvt-full"]),
            "window_lists_equal": all(w == windows["lvt-full"] for w in windows.values()),
            "window_lists": {k: [list(w) for w in v] for k, v in windows.items()}, "runs": runs,
            "agreement": agreement(scratch, args.contenders, manifest.target)}


def agreement(scratch: Path, contenders: list[str], target: str) -> dict:
    """Label voxels that differ and the largest probability difference, every contender against each reference."""
    from lvt.labels import exclusive_labels
    from lvt.segment.postprocess import decode_masks

    result = {}
    for reference in (r for r in REFERENCES if r in contenders):
        theirs = np.load(scratch / f"{reference}.npy")
        labels = exclusive_labels(decode_masks(theirs, target))
        for other in (c for c in contenders if c != reference and f"{reference} vs {c}" not in result):
            ours = np.load(scratch / f"{other}.npy")
            result[f"{other} vs {reference}"] = {
                "label_voxels_different": int((exclusive_labels(decode_masks(ours, target)) != labels).sum()),
                "label_voxels": int(labels.size), "max_abs_probability_difference": float(np.abs(ours - theirs).max())}
    return result


def summary(runs: list[dict]) -> dict:
    """Median and min over the rounds of one contender under one heap."""
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {"seconds_median": median("seconds"), "seconds_min": min(r["seconds"] for r in runs),
            "user_s_median": median("user_s"), "system_s_median": median("system_s"),
            "minor_faults_median": median("minor_faults"), "forward_passes": runs[0]["forward_passes"],
            "peak_rss_mb_max": max(r["child_peak_rss_mb"] for r in runs),
            "rss_added_mb_max": max(r["child_peak_rss_mb"] - r["baseline_rss_mb"] for r in runs)}


# --------------------------------------------------------------------------------- part 2, end to end


def measure_end_to_end(case: benchlib.Case, args: argparse.Namespace, scratch: Path) -> dict:
    """``lvt segment`` alternated with one forward pass, round by round, and their ratios."""
    forward_command = [sys.executable, str(LEVERS), "--model", str(args.model), "--passes", str(args.passes),
                       "--worker-forward", json.dumps({"retained_heap": True, "threads": args.threads})]
    rounds = []
    for round_index in range(args.e2e_rounds):
        load_before = os.getloadavg()
        segment = run_segment(case, args.model, scratch / "segment", args.threads)
        report = json.loads((scratch / "segment" / "report.json").read_text())
        forward = timed_child(forward_command)
        inference_s = report["inference"]["timings_s"]["inference"]
        rounds.append({"segment": {**segment, "timings_s": report["inference"]["timings_s"]}, "forward": forward,
                       "load_before": load_before, "load_after": os.getloadavg(),
                       "end_to_end_per_forward_pass": segment["wall_s"] / forward["wall_s_per_window"],
                       "end_to_end_per_inference": segment["wall_s"] / inference_s})
        print(f"  end to end round {round_index + 1}: {segment['wall_s']:.1f} s (inference {inference_s:.1f} s), "
              f"forward pass {forward['wall_s_per_window']:.2f} s, ratio "
              f"{rounds[-1]['end_to_end_per_forward_pass']:.1f}", flush=True)
    ratios = [r["end_to_end_per_forward_pass"] for r in rounds]
    return {"case": case.name, "rounds": rounds, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "inference_ratio_median": statistics.median(r["end_to_end_per_inference"] for r in rounds)}


# ---------------------------------------------------------------------------------------------- report


HEAP_TITLES = {"retained": "retained (LVT's setting), given to every contender",
               "glibc": "glibc's default, for every contender (LVT's own retained heap off)"}


def peers_markdown(result: dict, flops: float) -> list[str]:
    """One case: its window grid, a table per heap, the heap effect and the label comparison."""
    shape = " x ".join(map(str, result["model_grid_shape_zyx"]))
    lines = [f"## {result['case']}: model grid {shape}, {result['windows']} windows in the full sliding window", "",
             f"- Window lists of MONAI, nnU-Net v2 and lvt-full (each library's own code): "
             f"{'equal' if result['window_lists_equal'] else '**NOT equal**'}.",
             f"- Load average (1 min) before each run: lowest {runs_load(result['runs'], min)}, highest "
             f"{runs_load(result['runs'], max)}.", ""]
    for heap in HEAPS:
        lines += heap_table(result["runs"][heap], heap, flops)
    lines += ["### Heap effect: median wall time under glibc's default / under the retained heap", "",
              *(f"- {c}: {summary(result['runs']['glibc'][c])['seconds_median'] / summary(runs)['seconds_median']:.2f}"
                for c, runs in result["runs"]["retained"].items()), "",
              "### Labels on the model grid (first round, retained heap; decoded as trained, exclusive)", "",
              *(f"- {pair}: {a['label_voxels_different']} of {a['label_voxels']} voxels differ; max |Δp| "
                f"{a['max_abs_probability_difference']:.2e}" for pair, a in result["agreement"].items()), ""]
    return lines


def heap_table(runs: dict[str, list[dict]], heap: str, flops: float) -> list[str]:
    """Every contender under one heap: median and min of the rounds, CPU seconds, memory, ratio to lvt-full."""
    stats = {contender: summary(rounds) for contender, rounds in runs.items()}
    full = stats.get("lvt-full")
    lines = [f"### Heap: {HEAP_TITLES[heap]}", "",
             "| contender | forward passes | wall s, median | wall s, min | all rounds (s) | user CPU s | system CPU s "
             "| minor faults | peak RSS MB | RSS added MB | median / lvt-full's | GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for contender, s in stats.items():
        every = ", ".join(f"{r['seconds']:.1f}" for r in runs[contender])
        relative = f"{s['seconds_median'] / full['seconds_median']:.2f}" if full else "–"
        lines.append(f"| {contender} | {s['forward_passes']} | {s['seconds_median']:.1f} | {s['seconds_min']:.1f} "
                     f"| {every} | {s['user_s_median']:.1f} | {s['system_s_median']:.1f} "
                     f"| {s['minor_faults_median']:.0f} | {s['peak_rss_mb_max']:.0f} | {s['rss_added_mb_max']:.0f} "
                     f"| {relative} | {flops * s['forward_passes'] / s['seconds_median'] / 1e9:.1f} |")
    return [*lines, ""]


def runs_load(runs: dict, pick) -> str:
    return f"{pick(r['load_before'][0] for per_heap in runs.values() for rs in per_heap.values() for r in rs):.2f}"


def end_to_end_markdown(result: dict, patch: list[int]) -> list[str]:
    lines = [f"## End to end: `lvt segment` on {result['case']} / one {'x'.join(map(str, patch))} forward pass", "",
             f"- Ratio end to end / forward pass: median **{result['ratio_median']:.1f}**, min "
             f"{result['ratio_min']:.1f} (issue 15: about 28 before, target under 12); end to end / inference "
             f"stage: median {result['inference_ratio_median']:.2f}.", "",
             "| round | end to end s | stages s (report.json) | peak RSS MB | forward pass s (user, sys) | "
             "end to end / forward pass | end to end / inference | load before, after |",
             "|---|---|---|---|---|---|---|---|"]
    for index, r in enumerate(result["rounds"], 1):
        segment, forward = r["segment"], r["forward"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in segment["timings_s"].items())
        lines.append(f"| {index} | {segment['wall_s']:.1f} | {stages} | {segment['peak_rss_mb']:.0f} | "
                     f"{forward['wall_s_per_window']:.2f} ({forward['user_s_per_window']:.2f}, "
                     f"{forward['sys_s_per_window']:.2f}) | {r['end_to_end_per_forward_pass']:.1f} | "
                     f"{r['end_to_end_per_inference']:.2f} | {r['load_before'][0]:.1f}, {r['load_after'][0]:.1f} |")
    return [*lines, ""]


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="manifest path, or 'random' (default: the bundled model)")
    parser.add_argument("--cases", nargs="*", default=["ircadb", "phantom600"],
                        help="part 1 cases: ircadb, phantom600, phantom119, phantom-small (none: skip part 1)")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e-case", default="ircadb", help="part 2 case, or 'none' to skip part 2")
    parser.add_argument("--e2e-rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=3, help="timed forward passes per part 2 forward child")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.json and .md)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-heap", choices=HEAPS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-save", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def header(record: dict, flops: float) -> list[str]:
    machine = record["machine"]
    return ["# Sliding window against MONAI and nnU-Net v2, and end to end, on CPU", "",
            benchlib.machine_markdown(record).rstrip("\n"),
            f"- Load average at the end: {record['load_average_at_end']}",
            f"- Model: `{record['model']}`" + (f" ({benchlib.RANDOM_MODEL_NOTE})" if record["random_weights"] else ""),
            f"- Network: {flops / 1e9:.1f} GFLOP per window (FlopCounterMode, multiply-add = 2); FP32 peak estimate "
            f"{machine['fp32_peak_gflops_estimate']} GFLOP/s ({machine['peak_formula']})",
            f"- MONAI {record['versions']['monai']}, nnU-Net v2 {record['versions']['nnunetv2']}; 1 window per "
            f"forward pass everywhere; {record['rounds']} alternated rounds, each run a fresh process"
            if record["peers"] else "- Part 1 (the peers) not run: end to end only", ""]


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from importlib.metadata import version

    from lvt.segment.model_file import read_manifest

    record = benchlib.provenance(sys.argv)
    record["machine"]["shared_machine"] = "possibly (2 shared cores): see the load averages; median and min of rounds"
    args.model, random_weights = benchlib.resolve_model(args.model)
    manifest, _ = read_manifest(args.model)
    flops = benchlib.flops_per_window(args.model)
    record.update(model=str(args.model), random_weights=random_weights, flops_per_window=flops, rounds=args.rounds,
                  versions={p: version(p) for p in ("monai", "nnunetv2", "torch")}, peers=[], end_to_end=None)
    body: list[str] = []
    with tempfile.TemporaryDirectory(dir=benchlib.SCRATCH.parent) as scratch:
        for case in benchlib.cases(args.cases):
            record["peers"].append(measure_peers(case, args, manifest, Path(scratch)))
            body += peers_markdown(record["peers"][-1], flops)
        if args.e2e_case != "none":
            record["end_to_end"] = measure_end_to_end(benchlib.cases([args.e2e_case])[0], args, Path(scratch))
            body += end_to_end_markdown(record["end_to_end"], list(manifest.patch_size_zyx))
    record["load_average_at_end"] = os.getloadavg()
    text = "\n".join([*header(record, flops), *body])
    benchlib.write_results(args.out, record, text)
    print(text)


if __name__ == "__main__":
    main()
