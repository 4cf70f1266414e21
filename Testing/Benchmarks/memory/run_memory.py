"""Memory and time of the tail of ``lvt segment``: everything after inference (issue 15, item 2).

The tail is the same for ``lvt segment`` and ``lvt measure``: from the label map on the CT grid to
the complete output folder (labels, segmentation, surfaces, measurements, planning, report and its
views). It needs no model, so it is run here from a label map and a CT:

- each stage of the tail in its own child process: read the inputs (and what the stage needs, e.g.
  the measurements for the planning stage), reset the peak RSS (``/proc/self/clear_refs``), run the
  stage, and report its seconds, the RSS before it and the peak during it;
- ``lvt measure LABELS --ct CT`` end to end in a child process (peak RSS from GNU time).

``--code`` runs another checkout's core (e.g. the committed version from ``git worktree add
/tmp/lvt-before HEAD``), so before and after are measured on the same machine, inputs and load.

Cases (written to a scratch folder under /tmp, never into the repository):
  ircadb      the real 512 x 512 x 119 CT and its expert labels (../shared/data, evaluation only);
  phantom600  a 512 x 512 x 600 phantom, 0.75 mm in-plane, 1 mm slices;
  big1024     1024 x 1024 x 400: a 512 x 512 x 400 phantom with every voxel split in two along i and j
              (0.375 mm in-plane), labels and CT alike.

Run from the repository root, with nice (the machine is shared):
  nice -n 15 python Testing/Benchmarks/memory/run_memory.py --label after --cases ircadb phantom600 big1024
  nice -n 15 python Testing/Benchmarks/memory/run_memory.py --label before --code /tmp/lvt-before/LVTSegmentation
Results: results_<label>.json and .md beside this file; RESULTS.md compares them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "inference"))
import benchlib  # noqa: E402

if TYPE_CHECKING:
    from lvt.image import Image

STAGES = ("measure", "surfaces", "planning", "views", "view3d", "tail")


# ------------------------------------------------------------------------------------------------- cases


def big_case(slices: int = 400, seed: int = 7) -> benchlib.Case:
    """1024 x 1024 x ``slices``: a 512 x 512 phantom at 0.75 mm with each voxel split in two along i and j."""
    ct = benchlib.SCRATCH / f"big1024_{slices}_seed{seed}_ct.nii.gz"
    labels = benchlib.SCRATCH / f"big1024_{slices}_seed{seed}_labels.nii.gz"
    if not (ct.is_file() and labels.is_file()):
        import numpy as np

        from lvt.image import Image
        from lvt.io import write_image
        from lvt.phantom import PhantomConfig, make_phantom

        phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=(0.75, 0.75, 1.0),
                                             field_of_view_mm=(384.0, 384.0, float(slices))))
        grid = phantom.image
        # Voxel centres of the fine grid sit a quarter of a coarse voxel off the coarse ones.
        origin = grid.ijk_to_lps(np.array([-0.25, -0.25, 0.0]))[0]

        def split(array: np.ndarray) -> Image:
            return Image(array.repeat(2, axis=1).repeat(2, axis=2), (0.375, 0.375, 1.0), tuple(origin),
                         grid.direction)

        write_image(split(phantom.labels), labels)
        hu = np.clip(np.round(grid.array), -1024, 3071).astype(np.int16)
        del phantom
        write_image(split(hu), ct)
    return benchlib.Case(f"synthetic (1024x1024x{slices})", ct, labels)


CASES = {"ircadb": benchlib.ircadb_case, "phantom600": lambda: benchlib.phantom_case(600), "big1024": big_case}


# ----------------------------------------------------------------------------------------------- worker


def _reset_peak() -> float:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5); return the RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return benchlib.rss_mb_now()


def stage_worker(stage: str, labels_path: Path, ct_path: Path) -> dict:
    """Read the inputs and what ``stage`` needs, then time it and measure its peak RSS."""
    from lvt.io import read_image, read_segmentation

    labels, ct = read_segmentation(labels_path), read_image(ct_path)
    folder = Path(tempfile.mkdtemp(dir=benchlib.SCRATCH, prefix=f"{stage}_"))
    action = _stage_action(stage, labels, ct, folder)
    before = _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    action()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = benchlib.peak_rss_mb_so_far()
    shutil.rmtree(folder)
    return {"stage": stage, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "rss_before_mb": round(before),
            "peak_mb": round(peak)}


def _stage_action(stage: str, labels: Image, ct: Image, folder: Path) -> Callable[[], object]:
    """The call to time, with its inputs prepared (and not counted)."""
    from lvt.measure.report import build_report
    from lvt.measure.surfaces import extract_surfaces
    from lvt.measure.volumes_and_lesions import measure_labels

    if stage == "measure":
        return lambda: measure_labels(labels)
    if stage == "surfaces":
        return lambda: extract_surfaces(labels)
    if stage == "tail":
        from lvt.segment.outputs import write_outputs

        return lambda: write_outputs(folder, labels, ct, input_path=Path("ct"), model=None, inference=None,
                                     dropped=[], min_volume_ml=0.0, write_surfaces=True, warnings=[],
                                     progress=None, cancel=None)
    measurements = measure_labels(labels)
    if stage == "planning":
        from lvt.measure.planning import planning_summary

        return lambda: planning_summary(labels, measurements.lesions)
    if stage == "views":
        from lvt.measure.views import report_views

        document = build_report(input_path="ct", ct_or_labels_grid=labels, measurements=measurements, model=None,
                                inference=None)
        return lambda: report_views(document, ct, labels, folder)
    if stage == "view3d":
        from lvt.measure.surface_view import render_surfaces_png

        surfaces = extract_surfaces(labels)
        return lambda: render_surfaces_png(surfaces, folder / "surfaces_3d.png")
    raise ValueError(f"unknown stage {stage!r}")


# ----------------------------------------------------------------------------------------------- driver


def run_case(case: benchlib.Case, code: Path | None, repeats: int) -> dict:
    """Every stage in its own child (the fastest of ``repeats``), then ``lvt measure`` end to end."""
    env = {"PYTHONPATH": str(code)} if code else {}
    stages = {}
    for stage in STAGES:
        runs = []
        for _ in range(repeats):
            command = [sys.executable, __file__, "--worker", stage, "--labels", str(case.reference_labels),
                       "--ct", str(case.ct)]
            runs.append(benchlib.last_json_line(benchlib.run_child(command, env)))
        stages[stage] = {**min(runs, key=lambda r: r["seconds"]), "peak_mb": max(r["peak_mb"] for r in runs)}
        print(f"  {case.name} {stage}: {stages[stage]}", flush=True)
    ends = [_measure_end_to_end(case, env) for _ in range(repeats)]
    end = {**min(ends, key=lambda r: r["wall_s"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in ends)}
    print(f"  {case.name} lvt measure: { {k: v for k, v in end.items() if k != 'report'} }", flush=True)
    return {"case": case.name, "stages": stages, "lvt_measure": end}


def _measure_end_to_end(case: benchlib.Case, env: dict) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from segment_benchmark import lvt_command, stage_seconds

    with tempfile.TemporaryDirectory(dir=benchlib.SCRATCH) as scratch:
        out = Path(scratch) / "out"
        cpu_start = _children_cpu_s()
        run = benchlib.run_child(lvt_command("measure", str(case.reference_labels), "--ct", str(case.ct), "-o",
                                             str(out), threads=None), env)
        cpu = _children_cpu_s() - cpu_start
        if run.returncode != 0:
            raise RuntimeError(f"lvt measure failed ({run.returncode}):\n{run.stderr[-3000:]}")
        report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(run.wall_s, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(run.peak_rss_mb),
            "stages_s": stage_seconds(run), "report": report}


def _children_cpu_s() -> float:
    """User + system seconds of this process's finished children (CPU time does not wait for a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def markdown(record: dict) -> str:
    lines = [f"# Tail of `lvt segment` / `lvt measure` ({record['label']})", "", benchlib.machine_markdown(record),
             f"- Core: `{record['code']}`", f"- Load average after the runs: {record['load_after']}", ""]
    for case in record["cases"]:
        end = case["lvt_measure"]
        lines += [f"### {case['case']}", "", "| stage | wall s | CPU s | RSS before (MB) | peak (MB) | added (MB) |",
                  "|---|---|---|---|---|---|"]
        for stage, r in case["stages"].items():
            lines.append(f"| {stage} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['rss_before_mb']} | {r['peak_mb']} | "
                         f"{r['peak_mb'] - r['rss_before_mb']} |")
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in end["stages_s"].items())
        lines += ["", f"- `lvt measure` end to end: {end['wall_s']:.1f} s wall, {end['cpu_s']:.1f} s CPU, peak RSS "
                  f"{end['peak_rss_mb']} MB (wall s per stage: {stages})", ""]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="after", help="results_<label>.json/.md")
    parser.add_argument("--code", type=Path, default=None, help="the LVTSegmentation folder whose lvt to run")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ct", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    benchlib.SCRATCH.mkdir(parents=True, exist_ok=True)
    if args.worker:
        print(json.dumps(stage_worker(args.worker, args.labels, args.ct)))
        return
    record = {**benchlib.provenance(sys.argv), "label": args.label, "code": str(args.code or "this checkout")}
    record["cases"] = [run_case(CASES[name](), args.code, args.repeats) for name in args.cases]
    record["load_after"] = os.getloadavg()
    benchlib.write_results(HERE / f"results_{args.label}", record, markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
