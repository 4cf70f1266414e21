"""Tumor boundary refinement (``lvt segment --refine-tumors``) against none, on held-out phantoms and ircadb01_17.

The setting is chosen on tuning phantoms (best mean tumor Dice over a small grid) and reported on other,
test phantoms; every seed is >= 90000 (the bundled model trained on phantom seeds 1000-1047). ircadb01_17
is evaluation only: it runs once with the setting chosen on the phantoms, never with the grid.
lvt.segment.refine.TumorRefinement's defaults are set to the chosen setting by hand.
The network runs once per case; post-processing then runs on the same probabilities with each setting,
on the CT's own grid as ``lvt segment`` does. Phantoms are rendered at the model's 2 mm (a finer grid
costs too much CPU on a shared machine); ircadb01_17 is at its own 0.74 x 0.74 x 1.6 mm.

Run from the repository root (28 minutes on a 2-core machine shared with a training job):
    nice -n 15 python Testing/Benchmarks/tumor_refinement/run.py [--model M.json] [--device cpu] [--tune-only]
Writes RESULTS.md and results.json beside this script; RESULTS.md's hand-written "## Reading" section is kept.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lvt.evaluate.files import EvaluationCase, load_truth, read_truth_spec
from lvt.evaluate.scoring import evaluate_case
from lvt.grid import bounding_box_in, crop, resample_channels_like, resample_to_spacing
from lvt.image import AIR_HU, Image
from lvt.io import read_image
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.model_file import bundled_model_path
from lvt.segment.pipeline import REGION_MARGIN_MM
from lvt.segment.postprocess import PostprocessConfig, liver_region, postprocess
from lvt.segment.predict import Predictor
from lvt.segment.refine import TumorRefinement

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
REAL_CASE = HERE.parent / "real_case" / "ircadb01_17_truth.yaml"
REAL_CT = REPO.parent / "shared" / "data" / "ircadb01_17" / "ircadb01_17_ct.nii.gz"
NATIVE_MM = (2.0, 2.0, 2.0)
TUNE_SEEDS = tuple(range(90000, 90003))
TEST_SEEDS = tuple(range(90010, 90015))
GRID = [TumorRefinement(iterations=i, smoothing=s, tumor_weight=w)
        for i, s, w in itertools.product((5, 10), (0, 1), (1.0, 0.5))]
METRICS = ("dice", "nsd", "precision", "recall", "relative_volume_error", "lesion_sensitivity", "lesion_precision")
ANNOTATED = (False, False, True)
READING = "## Reading"  # refinement moves tumor voxels only within the whole liver


def _setting_name(setting: TumorRefinement | None) -> str:
    if setting is None:
        return "none"
    return f"iterations {setting.iterations}, smoothing {setting.smoothing}, tumor weight {setting.tumor_weight}"


def score_settings(ct: Image, truth: np.ndarray, predictor: Predictor,
                   settings: list[TumorRefinement | None]) -> dict[str, dict]:
    """Tumor metrics of each setting on one case, from one network run; seconds of post-processing each.

    The probabilities go back to the CT grid around the liver once, as ``lvt segment`` does
    (lvt.segment.pipeline), and each setting post-processes that same region.
    """
    manifest = predictor.manifest
    model_image = resample_to_spacing(ct, manifest.spacing_mm, interpolation="linear", default_value=AIR_HU)
    probabilities, _ = predictor.predict_probabilities(model_image.array)
    box = bounding_box_in(ct, model_image, liver_region(probabilities, manifest.target), REGION_MARGIN_MM)
    ct_region = crop(ct, box)
    local = resample_channels_like(probabilities, model_image, ct_region)
    scores = {}
    for setting in settings:
        started = time.perf_counter()
        labels = np.zeros(ct.array.shape, dtype=np.uint8)
        labels[box] = postprocess(local, ct_region, PostprocessConfig(tumor_refinement=setting), manifest.target).labels
        seconds = time.perf_counter() - started
        tumor = evaluate_case(ct.with_array(labels), truth, ANNOTATED)["tumor"]
        scores[_setting_name(setting)] = {**{m: tumor[m] for m in METRICS}, "postprocess_s": round(seconds, 2)}
    return scores


def phantom_scores(seeds: tuple[int, ...], predictor: Predictor, settings: list[TumorRefinement | None]) -> dict:
    results = {}
    for seed in seeds:
        phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=NATIVE_MM, n_tumors=(1, 4)))
        results[str(seed)] = score_settings(phantom.image, phantom.truth, predictor, settings)
        print(seed, {k: round(v["dice"], 3) for k, v in results[str(seed)].items()}, flush=True)
    return results


def mean_of(results: dict, setting: str, metric: str) -> float | None:
    values = [case[setting][metric] for case in results.values() if case[setting][metric] is not None]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def real_case_scores(predictor: Predictor, chosen: TumorRefinement) -> dict | None:
    """ircadb01_17 with and without the chosen refinement (evaluation only)."""
    if not REAL_CT.exists():
        return None
    truth_source = read_truth_spec(REAL_CASE)["ircadb01_17"]
    _, truth, _ = load_truth(EvaluationCase("ircadb01_17", REAL_CT, truth_source))
    return {"ircadb01_17": score_settings(read_image(REAL_CT), truth, predictor, [None, chosen])}


def table(results: dict, settings: list[str]) -> str:
    header = "| setting | " + " | ".join(METRICS) + " | post-processing s |\n|---|" + "---|" * (len(METRICS) + 1)
    rows = []
    for setting in settings:
        cells = [mean_of(results, setting, m) for m in (*METRICS, "postprocess_s")]
        rows.append(f"| {setting} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join([header, *rows])


def per_case(results: dict, a: str, b: str) -> str:
    lines = ["| case | tumor Dice none | tumor Dice refined | lesion sens. none | lesion sens. refined |",
             "|---|---|---|---|---|"]
    for name, case in results.items():
        lines.append(f"| {name} | {case[a]['dice']:.3f} | {case[b]['dice']:.3f} | "
                     f"{case[a]['lesion_sensitivity']} | {case[b]['lesion_sensitivity']} |")
    return "\n".join(lines)


def choose(tune: dict) -> TumorRefinement:
    """The setting with the best mean tumor Dice on the tuning phantoms (the earlier in the grid on a tie)."""
    return max(GRID, key=lambda s: (round(mean_of(tune, _setting_name(s), "dice") or 0.0, 3), -GRID.index(s)))


def write_results(record: dict) -> None:
    chosen = record["chosen"]
    text = ["# Tumor boundary refinement (`lvt segment --refine-tumors`)\n",
            f"- model: {record['model']}; device: {record['device']}; date: {record['date']}; "
            f"commit: {record['commit']}",
            f"- command: `{record['command']}`; {record['seconds']:.0f} s in all",
            f"- phantoms at {NATIVE_MM} mm, tuning seeds {list(TUNE_SEEDS)}, test seeds {list(TEST_SEEDS)}\n",
            "Tumor metrics, mean over cases (lesion metrics: cases with a lesion; NSD tolerance 3 mm).\n",
            "## Tuning phantoms: the grid of settings\n",
            table(record["tune"], ["none", *[_setting_name(s) for s in GRID]]),
            f"\nBest on tuning: **{chosen}** (used below; TumorRefinement's defaults are set to it).\n",
            "## Test phantoms: none vs the chosen setting\n", table(record["test"], ["none", chosen]), "",
            per_case(record["test"], "none", chosen)]
    if record["real"]:
        text += ["\n## ircadb01_17 (evaluation only, the chosen setting)\n", table(record["real"], ["none", chosen]),
                 "", per_case(record["real"], "none", chosen)]
    results = HERE / "RESULTS.md"
    old = results.read_text(encoding="utf-8") if results.exists() else ""
    reading = old[old.index(READING):] if READING in old else ""  # the hand-written reading survives a rerun
    results.write_text("\n".join(text) + "\n\n" + reading, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tune-only", action="store_true", help="print the tuning table and stop (writes nothing)")
    args = parser.parse_args()
    started = time.perf_counter()
    predictor = Predictor.from_file(args.model, args.device)
    tune = phantom_scores(TUNE_SEEDS, predictor, [None, *GRID])
    if args.tune_only:
        print(table(tune, ["none", *[_setting_name(s) for s in GRID]]), f"\nbest: {_setting_name(choose(tune))}")
        return
    chosen = choose(tune)
    test = phantom_scores(TEST_SEEDS, predictor, [None, chosen])
    real = real_case_scores(predictor, chosen)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    manifest = predictor.manifest
    record = {"date": datetime.date.today().isoformat(), "commit": commit, "command": " ".join(["python", *sys.argv]),
              "model": f"{manifest.name} {manifest.version}", "device": args.device, "tune": tune, "test": test,
              "real": real, "chosen": _setting_name(chosen), "seconds": time.perf_counter() - started}
    (HERE / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_results(record)
    print((HERE / "RESULTS.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
