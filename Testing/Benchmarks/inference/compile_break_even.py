"""When does torch.compile pay? Its one-off cost per process against what it saves per case.

Each measurement runs in a fresh child process; its CPU seconds are those of the child and of every
process it started (inductor compiles kernels in worker processes), from the parent's rusage.
1. cold compile: an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR``), the first compiled call, as
   the first process on a machine pays it;
2. warm compile: the same cache again, as every later process on that machine; the CPU seconds of a
   compile are those of its child minus those of a child that does the same without compiling;
3. per window: eager and compiled windows of the model's patch in one process (cache warm), rounds
   alternated (eager first in even rounds, compiled first in odd ones), median and min of wall and
   CPU seconds per window, both under the retained heap that the sliding window uses on the CPU;
4. forward passes per case: ircadb01_17 segmented once (eager) with the default options (the liver box).
The compile cost is the first call minus one compiled window. Break-even cases per process =
compile cost / (saving per window x forward passes per case); ``--compile auto`` takes the cold one
(lvt.segment.compiled.BREAK_EVEN_CASES).

Run when the machine is otherwise idle: ``python Testing/Benchmarks/inference/compile_break_even.py``;
``--tiny`` (a small random network at 32^3, a coarse phantom for the count) is for developing the script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

RESULTS = Path(__file__).resolve().parent / "compile_break_even"
TINY_PATCH = (32, 32, 32)


# --------------------------------------------------------------------------------------- child phases


def _network_and_inputs(model: Path, threads: int | None) -> tuple:
    """The model's first network in eval mode and one windowed random-HU window of its patch."""
    import torch

    from lvt.segment.model_file import load_model
    from lvt.segment.window import apply_window

    if threads:
        torch.set_num_threads(threads)
    network, manifest = load_model(model)
    network.eval()
    network.deep_supervision = False
    hu = torch.empty(1, 1, *manifest.patch_size_zyx).normal_(40.0, 150.0, generator=torch.Generator().manual_seed(0))
    return network, apply_window(hu, manifest.window)


def first_call_phase(model: Path, threads: int | None, compile_network: bool) -> dict:
    """The first call of the compiled (or eager) network, then one more window."""
    import torch

    from lvt.heap import retained_heap
    from lvt.segment.compiled import CompiledNetwork

    network, inputs = _network_and_inputs(model, threads)
    compiled = CompiledNetwork(network, batch=1) if compile_network else network
    with torch.inference_mode(), retained_heap(True):
        start = time.perf_counter()
        compiled(inputs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        compiled(inputs)
        second = time.perf_counter() - start
    return {"first_call_s": first, "second_call_s": second, "compiled": getattr(compiled, "compiled", False),
            "threads": torch.get_num_threads()}


def windows_phase(model: Path, threads: int | None, rounds: int, windows: int) -> dict:
    """Eager and compiled windows, rounds alternated: per-window wall and CPU seconds of each round."""
    import torch

    from lvt.heap import retained_heap
    from lvt.segment.compiled import CompiledNetwork

    network, inputs = _network_and_inputs(model, threads)
    runners = {"eager": network, "compiled": CompiledNetwork(network, batch=1)}
    timings: dict[str, dict[str, list[float]]] = {name: {"wall_s": [], "cpu_s": []} for name in runners}
    with torch.inference_mode(), retained_heap(True):
        for run in runners.values():
            run(inputs)  # warm-up; the compiled one compiles here (warm cache)
        for round_index in range(rounds):
            order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(windows):
                    runners[name](inputs)
                timings[name]["wall_s"].append((time.perf_counter() - wall) / windows)
                timings[name]["cpu_s"].append((time.process_time() - cpu) / windows)
    return {"per_window": timings, "compiled": runners["compiled"].compiled, "threads": torch.get_num_threads()}


def count_phase(model: Path, tiny: bool) -> dict:
    """Forward passes of one case with the default options (eager): ircadb01_17, or a coarse phantom."""
    from lvt.grid import resample_to_spacing
    from lvt.image import AIR_HU
    from lvt.segment.pipeline import SegmentOptions, load_predictor

    predictor, _ = load_predictor(SegmentOptions(model_path=model, device="cpu"))
    if tiny:
        from lvt.phantom import PhantomConfig, make_phantom

        ct, name = make_phantom(PhantomConfig(seed=3, spacing_mm=(6.0, 6.0, 6.0))).image, "phantom seed 3 at 6 mm"
    else:
        from lvt.io import read_image

        ct, name = read_image(benchlib.IRCADB_CT), "ircadb01_17"
    grid = resample_to_spacing(ct, predictor.manifest.spacing_mm, interpolation="linear", default_value=AIR_HU)
    _, stats = predictor.predict_probabilities(grid.array)
    return {"case": name, "forward_passes": stats.forward_passes, "inference_s": stats.seconds, **stats.counts()}


# ----------------------------------------------------------------------------------------- the parent


def tiny_model(folder: Path = benchlib.SCRATCH / "tiny_model") -> Path:
    """A small random network at 32^3 and 6 mm, for developing this script in seconds rather than minutes."""
    import torch

    from lvt.segment.model_file import ModelManifest, save_model
    from lvt.segment.network import NetworkConfig, build_network
    from lvt.segment.window import Window

    path = folder / "lvt_tiny_random.json"
    if not path.is_file():
        torch.manual_seed(0)
        config = NetworkConfig(features_per_stage=(4, 8, 16), deep_supervision_levels=2)
        save_model(build_network(config), ModelManifest(name="lvt_tiny_random", version="0.0.0",
                                                        spacing_mm=(6.0, 6.0, 6.0), patch_size_zyx=TINY_PATCH,
                                                        window=Window(), network=config), path)
    return path


def training_running() -> bool:
    """Whether a model training (``lvt train``) runs on this machine now."""
    return subprocess.run(["pgrep", "-f", "lvt train"], capture_output=True, check=False).returncode == 0


def run_phase(args: argparse.Namespace, phase: str, cache: Path) -> dict:
    """One phase in a fresh child with ``cache`` as inductor's cache: its JSON, wall, CPU s and peak RSS."""
    command = [sys.executable, __file__, "--phase", phase, "--model", str(args.model), "--rounds", str(args.rounds),
               "--windows", str(args.windows), *(["--threads", str(args.threads)] if args.threads else []),
               *(["--tiny"] if args.tiny else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = benchlib.run_child(command, env={"TORCHINDUCTOR_CACHE_DIR": str(cache)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        sys.exit(f"phase {phase} failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"{phase}: {child.wall_s:.1f} s wall, {cpu:.1f} s CPU, load {os.getloadavg()[0]:.2f}", flush=True)
    return {**benchlib.last_json_line(child), "child_wall_s": child.wall_s, "child_cpu_s": cpu,
            "child_peak_rss_mb": child.peak_rss_mb, "load_average_after": os.getloadavg()}


def summarize(record: dict) -> dict:
    """Medians and minima per window, compile costs, and the break-even case counts."""
    per_window = record["windows"]["per_window"]
    stats = {name: {key: {"median": statistics.median(values), "min": min(values)} for key, values in runs.items()}
             for name, runs in per_window.items()}
    compiled_window = stats["compiled"]["wall_s"]["median"]
    saving = stats["eager"]["wall_s"]["median"] - compiled_window
    cpu_saving = stats["eager"]["cpu_s"]["median"] - stats["compiled"]["cpu_s"]["median"]
    passes = record["count"]["forward_passes"]
    summary: dict = {"per_window": stats, "saving_per_window_s": saving, "speed-up": stats["eager"]["wall_s"]["median"]
                     / compiled_window, "saving_per_case_s": saving * passes, "forward_passes_per_case": passes}
    for which in ("cold", "warm"):
        cost = record[which]["first_call_s"] - compiled_window
        cpu_cost = record[which]["child_cpu_s"] - record["uncompiled"]["child_cpu_s"]
        summary.update({f"{which}_compile_s": cost, f"{which}_compile_cpu_s": cpu_cost,
                        f"{which}_break_even_cases": _cases(cost, saving * passes),
                        f"{which}_break_even_cases_cpu": _cases(cpu_cost, cpu_saving * passes)})
    return summary


def _cases(cost: float, saving_per_case: float) -> int | None:
    """Cases after which the saving has paid the cost; None when there is no saving."""
    return math.ceil(cost / saving_per_case) if saving_per_case > 0 else None


def markdown(record: dict) -> str:
    s = record["summary"]
    per = s["per_window"]

    def seconds(value: float | None) -> str:
        return "never (no saving)" if value is None else f"{value}"

    lines = [
        "# torch.compile: break-even cases per process", "", benchlib.machine_markdown(record),
        f"- Model: `{record['model']}`; window {record['patch']}; {record['windows']['threads']} torch threads; "
        f"{record['rounds']} rounds of {record['windows_per_round']} windows per setting, alternated",
        f"- Load: {record['load_note']}; load averages at start {record['machine']['load_average_at_start']}, "
        f"at the end {record['load_average_at_end']}; a model training (`lvt train`) running at the start: "
        f"{record['training_at_start']}, at the end: {record['training_at_end']}",
        "", "| | wall s / window, median (min) | CPU s / window, median (min) |", "|---|---|---|",
        *[f"| {name} | {per[name]['wall_s']['median']:.3f} ({per[name]['wall_s']['min']:.3f}) | "
          f"{per[name]['cpu_s']['median']:.3f} ({per[name]['cpu_s']['min']:.3f}) |" for name in ("eager", "compiled")],
        "", f"Compiled / eager speed-up per window: {s['speed-up']:.2f}x; saving {s['saving_per_window_s']:.3f} s "
        f"per window, {s['saving_per_case_s']:.2f} s per case ({s['forward_passes_per_case']} forward passes of "
        f"{record['count']['case']} with the default options, eager inference {record['count']['inference_s']:.1f} s).",
        "", "| compile | first call minus one window, s | CPU s of compiling | break-even cases per process, "
        "by wall s | by CPU s |", "|---|---|---|---|---|",
        *[f"| {which} ({'empty inductor cache: the first process on a machine' if which == 'cold' else 'cache warm'})"
          f" | {s[f'{which}_compile_s']:.1f} | {s[f'{which}_compile_cpu_s']:.1f} | "
          f"{seconds(s[f'{which}_break_even_cases'])} | {seconds(s[f'{which}_break_even_cases_cpu'])} |"
          for which in ("cold", "warm")],
        "", "`--compile auto` (lvt.segment.compiled.BREAK_EVEN_CASES) takes a cold break-even: a cohort worker "
        "does not know whether the machine has compiled before.", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="manifest, 'random' (seeded bundled architecture); default: "
                                                      "the bundled model")
    parser.add_argument("--tiny", action="store_true", help="develop: a small random network, a coarse phantom")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds of eager and compiled windows")
    parser.add_argument("--windows", type=int, default=3, help="windows per setting and round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    parser.add_argument("--phase", choices=("first-call", "first-call-eager", "windows", "count"), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase is not None:
        model = Path(args.model)
        result = {"first-call": lambda: first_call_phase(model, args.threads, True),
                  "first-call-eager": lambda: first_call_phase(model, args.threads, False),
                  "windows": lambda: windows_phase(model, args.threads, args.rounds, args.windows),
                  "count": lambda: count_phase(model, args.tiny)}[args.phase]()
        print(json.dumps(result), flush=True)
        return
    args.model = tiny_model() if args.tiny else benchlib.resolve_model(args.model)[0]
    record = {**benchlib.provenance(sys.argv), "training_at_start": training_running()}
    with tempfile.TemporaryDirectory(prefix="lvt-inductor-") as cache:
        for which, phase in (("cold", "first-call"), ("warm", "first-call"), ("uncompiled", "first-call-eager"),
                             ("windows", "windows"), ("count", "count")):
            record[which] = run_phase(args, phase, Path(cache))
    from lvt.segment.model_file import read_manifest

    record.update(model=str(args.model), patch=list(read_manifest(args.model)[0].patch_size_zyx), rounds=args.rounds,
                  windows_per_round=args.windows, load_note=args.load_note or "none given",
                  load_average_at_end=os.getloadavg(),
                  training_at_end=training_running())
    if not (record["cold"]["compiled"] and record["warm"]["compiled"] and record["windows"]["compiled"]):
        sys.exit("torch.compile failed in a phase (the network ran eager): no break-even to measure here")
    record["summary"] = summarize(record)
    path = benchlib.SCRATCH / "compile_break_even_tiny" if args.tiny else RESULTS  # the tiny run is no result
    benchlib.write_results(path, record, markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
