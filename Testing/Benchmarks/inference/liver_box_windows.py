"""The liver-box sliding window against the full one: windows, seconds and labels, on real CTs and phantoms.

    nice -n 15 python Testing/Benchmarks/inference/liver_box_windows.py [--cases NAME ...] [--repeats 2]

For ircadb01_17, the six unlabeled TCIA CTs in ../shared/data/tcia_unlabeled and three phantoms, the
bundled model segments each CT twice per repeat, once with the full sliding window (``lvt segment
--full-window``) and once over the liver box (the default), in alternating order; the seconds are
the median over the repeats of ``segment_image`` (resampling, inference, post-processing) and of its
inference stage. The labels of the two runs (on the CT's grid) are compared: voxels that differ
inside the full run's whole liver, and the Dice of each class (whole liver, vessel, tumor) between the
runs. For scale, the same comparison between the full sliding window and the full sliding window
without the body crop (windows over the whole image, as before the crop became the default): how much
the labels already depend on where the windows fall. Nothing is tuned here: the liver box's constants
were fixed before this run (lvt/segment/localize.py).
Writes liver_box_windows.json and liver_box_windows.md beside this script, the JSON after every case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchlib import IRCADB_CT, SHARED_DATA, ircadb_case, machine_markdown, provenance, write_results

from lvt.evaluate.metrics import dice_score
from lvt.image import Image
from lvt.labels import CLASS_KEYS, masks_from_labels
from lvt.segment.pipeline import SegmentationResult, segment_image
from lvt.segment.predict import Predictor, SlidingWindowConfig

RESULTS = Path(__file__).with_name("liver_box_windows")
PHANTOMS = {"phantom seed 7, 360x300x250 mm": (7, (360.0, 300.0, 250.0)),
            "phantom seed 8, 380x320x400 mm": (8, (380.0, 320.0, 400.0)),
            "phantom seed 9, 400x320x500 mm": (9, (400.0, 320.0, 500.0))}


def case_readers() -> dict[str, Callable[[], tuple[Image, np.ndarray | None]]]:
    """Every case by name: how to get its CT and its true labels when known (ircadb01_17's experts', a phantom's).

    Real files are read; phantoms are rendered on the model's 2 mm grid.
    """
    from lvt.io import read_image, read_label_image
    from lvt.phantom import PhantomConfig, make_phantom

    def ircadb() -> tuple[Image, np.ndarray]:
        case = ircadb_case()
        return read_image(case.ct), read_label_image(case.reference_labels).array

    def phantom(seed: int, fov: tuple[float, float, float]) -> tuple[Image, np.ndarray]:
        rendered = make_phantom(PhantomConfig(seed=seed, field_of_view_mm=fov))
        return rendered.image, rendered.labels

    readers: dict[str, Callable[[], tuple[Image, np.ndarray | None]]] = {}
    if IRCADB_CT.is_file():
        readers["ircadb01_17"] = ircadb
    for path in sorted((SHARED_DATA / "tcia_unlabeled").glob("*_ct.nii.gz")):
        readers[path.name.removesuffix("_ct.nii.gz")] = lambda p=path: (read_image(p), None)
    for name, (seed, fov) in PHANTOMS.items():
        readers[name] = lambda s=seed, f=fov: phantom(s, f)
    return readers


def truth_dice(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each class (whole liver, vessel, tumor) against the true labels."""
    masks, true_masks = masks_from_labels(labels), masks_from_labels(truth)
    return {key: dice_score(masks[c], true_masks[c]) for c, key in enumerate(CLASS_KEYS)}


def compare(full: np.ndarray, box: np.ndarray) -> dict:
    """Where the liver-box labels differ from the full run's, inside its whole liver and anywhere; Dice per class."""
    liver = full > 0
    differ = full != box
    full_masks, box_masks = masks_from_labels(full), masks_from_labels(box)
    return {"liver_voxels_full": int(liver.sum()), "differ_in_liver": int((differ & liver).sum()),
            "differ_in_liver_fraction": float((differ & liver).sum() / max(1, liver.sum())),
            "differ_anywhere": int(differ.sum()),
            "dice": {key: dice_score(box_masks[c], full_masks[c]) for c, key in enumerate(CLASS_KEYS)}}


def run_case(ct: Image, truth: np.ndarray | None, predictors: dict[str, Predictor], uncropped: Predictor,
             repeats: int) -> dict:
    """Both modes ``repeats`` times, alternated; the labels of each mode's first run; the uncropped run once."""
    seconds: dict[str, list[float]] = {mode: [] for mode in predictors}
    inference: dict[str, list[float]] = {mode: [] for mode in predictors}
    first: dict[str, SegmentationResult] = {}
    for repeat in range(repeats):
        for mode in list(predictors)[:: 1 if repeat % 2 == 0 else -1]:
            started = time.perf_counter()
            result = segment_image(ct, predictors[mode])
            seconds[mode].append(time.perf_counter() - started)
            inference[mode].append(result.timings_s["inference"])
            if mode in first:
                assert np.array_equal(first[mode].labels.array, result.labels.array), "a run did not repeat itself"
            first.setdefault(mode, result)
    return {"size_ijk": list(ct.size_ijk), "spacing_mm": [round(s, 3) for s in ct.spacing_mm],
            **{mode: {"seconds": seconds[mode], "seconds_median": statistics.median(seconds[mode]),
                      "inference_seconds_median": statistics.median(inference[mode]),
                      "windows": first[mode].window_stats.counts()} for mode in predictors},
            "labels": compare(first["full"].labels.array, first["liver box"].labels.array),
            "labels_without_body_crop": compare(first["full"].labels.array, segment_image(ct, uncropped).labels.array),
            "dice_to_truth": None if truth is None else {mode: truth_dice(first[mode].labels.array, truth)
                                                         for mode in predictors}}


def markdown(record: dict) -> str:
    """The results table with the machine header and what the numbers say."""
    lines = ["# Liver-box sliding window against the full one", "", machine_markdown(record),
             f"- Load: {record['load_note']}; load average at the end {record['load_average_at_end']}", "",
             f"Seconds: median of {record['repeats']} runs of `segment_image` each (resample, inference, "
             "post-processing; inference alone in brackets), the two modes alternated. Windows of the liver box: "
             "windows over the box + windows of the first pass at 4 mm. Differ: voxels of the full run's whole "
             "liver whose label differs in the liver-box run. Dice between the two runs' labels. Body crop off: "
             "the voxels that differ between the full sliding window with and without the body crop.", "",
             "| case | windows full | windows liver box | s full | s liver box | differ in liver | "
             "Dice liver / vessel / tumor | body crop off: differ in liver | liver box used |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, case in record["cases"].items():
        full, box, labels = case["full"], case["liver box"], case["labels"]
        windows = box["windows"]
        dice = " / ".join(f"{labels['dice'][k]:.4f}" for k in CLASS_KEYS)
        seconds = " | ".join(f"{m['seconds_median']:.1f} ({m['inference_seconds_median']:.1f})" for m in (full, box))
        lines.append(f"| {name} | {full['windows']['windows_computed']} | {windows['windows_computed']} + "
                     f"{windows['windows_localize']} | {seconds} | "
                     f"{labels['differ_in_liver']} of {labels['liver_voxels_full']} "
                     f"({100 * labels['differ_in_liver_fraction']:.2f} %) | {dice} | "
                     f"{100 * case['labels_without_body_crop']['differ_in_liver_fraction']:.2f} % | "
                     f"{windows['sliding_window']} |")
    cases = record["cases"].values()
    total_full = sum(c["full"]["seconds_median"] for c in cases)
    total_box = sum(c["liver box"]["seconds_median"] for c in cases)
    windows_full = sum(c["full"]["windows"]["windows_computed"] for c in cases)
    windows_box = sum(c["liver box"]["windows"]["windows_computed"] + c["liver box"]["windows"]["windows_localize"]
                      for c in cases)
    lines += ["", f"Total: {windows_full} windows full, {windows_box} liver box (first passes included); "
                  f"{total_full:.0f} s full, {total_box:.0f} s liver box "
                  f"({100 * (1 - total_box / max(total_full, 1e-9)):.0f} % less).", "",
              "Against the true labels (ircadb01_17: the experts'; phantoms: exact), Dice of each class:", "",
              "| case | full: liver / vessel / tumor | liver box: liver / vessel / tumor |", "|---|---|---|"]
    for name, case in record["cases"].items():
        if case.get("dice_to_truth"):
            row = [" / ".join(f"{case['dice_to_truth'][mode][k]:.4f}" for k in CLASS_KEYS) for mode in ("full",
                                                                                                      "liver box")]
            lines.append(f"| {name} | {row[0]} | {row[1]} |")
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.json and .md)")
    parser.add_argument("--load-note", default="other jobs may have shared the 2 cores (see the load averages)",
                        help="what else ran on the machine, for the results file")
    args = parser.parse_args(argv)
    from lvt.segment.model_file import bundled_model_path

    readers = case_readers()
    names = args.cases or list(readers)
    predictors = {mode: Predictor.from_file(bundled_model_path(), "cpu", SlidingWindowConfig(liver_box=box))
                  for mode, box in (("full", False), ("liver box", True))}
    uncropped = Predictor.from_file(bundled_model_path(), "cpu", SlidingWindowConfig(crop_to_body=False))
    record = {**provenance([sys.executable, *sys.argv]), "repeats": args.repeats, "load_note": args.load_note,
              "cases": {}}
    for name in names:
        print(f"{name} ...", flush=True)
        record["cases"][name] = run_case(*readers[name](), predictors, uncropped, args.repeats)
        record["cases"][name]["load_average_after"] = record["load_average_at_end"] = os.getloadavg()
        print(next(line for line in markdown(record).splitlines() if line.startswith(f"| {name} |")), flush=True)
        write_results(args.out, record, markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
