"""Decide whether a candidate model ships: it must beat the baseline on the validation set and on ircadb01_17.

    python Testing/Benchmarks/model_comparison/compare_models.py --baseline Resources/Models/lvt_default.json \
        --candidate /work/runs/lvt_default_2/best.json --config LVTTraining/configs/lvt_default_2.yaml [--device cpu]

Case by case the two models run back to back, in alternating order (the machine is noisy): the config's validation
cases by the training code's cache and scores (``lvt.train.validation``: Dice and lesions); ircadb01_17 by
Testing/Benchmarks/real_case's ``evaluate``; ``lvt segment`` on the TCIA CTs (HCC_009's two phases among them).
Writes RESULTS.md and results.json beside this script and two pictures into Resources/Models, or all into --output.
``--quick`` (a smoke test, --output needed): validation phantoms and the HCC_009 pair only, no ircadb01_17, no
verdict. Evaluation only: nothing here trains. Either model may be an ensemble (``lvt train --ensemble``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.atomic import atomic_path, write_text_atomically
from lvt.errors import InputError, LVTError
from lvt.image import AIR_HU, Image
from lvt.io.read import read_image, read_label_image
from lvt.labels import CLASS_KEYS
from lvt.measure import views
from lvt.segment.model_file import ModelManifest, read_manifest
from lvt.segment.predict import Predictor
from lvt.train.config import TrainingConfig, load_training_config
from lvt.train.data.prepare import prepare_cases
from lvt.train.validation import VALIDATION_WINDOWS, score_case, summarize

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TCIA = REPO.parent / "shared" / "data" / "tcia_unlabeled"
HCC_PAIR = ("HCC_009_103", "HCC_009_004")
MAX_PICTURE_BYTES = 1_500_000
IRCADB_TARGETS: dict[str, tuple[str, Callable[[float], bool] | None]] = {
    "dice_liver": (">= 0.93", lambda v: v >= 0.93), "dice_vessel": (">= 0.55", lambda v: v >= 0.55),
    "dice_tumor": (">= 0.55", lambda v: v >= 0.55), "liver_volume_error_pct": ("within ±5 %", lambda v: abs(v) <= 5.0),
    "mean_dice": ("candidate > baseline", None), "lesions_found": ("", None),
    "lesions_missed": ("0 (both found)", lambda v: v == 0), "false_positive_lesions": ("0", lambda v: v == 0),
    "seconds_end_to_end": ("< 60 s on 2 CPU cores", lambda v: v < 60.0), "peak_host_memory_mb": ("", None)}
RULE = ("the candidate beats the baseline in mean validation Dice and in ircadb01_17 mean Dice (liver, vessels, "
        "tumors) and finds at least as many ircadb01_17 lesions, and regresses on none of the checks a user sees: "
        "ircadb01_17 liver volume error and false-positive lesions no worse than the baseline's (or within the "
        "targets: 5 %, 0), and the HCC_009 inter-phase liver volume difference no worse (or within 8 %)")
sys.path.insert(0, str(HERE.parent / "real_case"))
real_case = importlib.import_module("evaluate_real_case")  # by name, so a spawned child can import it too


@dataclass(frozen=True)
class Model:
    """One side of the comparison: its role, manifest path and manifest."""

    role: str
    path: Path
    manifest: ModelManifest

    def size_mb(self) -> float:
        """Manifest plus weights, as shipped."""
        files = [self.path, *(self.path.parent / member.file for member in self.manifest.members)]
        return sum(f.stat().st_size for f in files) / 1e6


def open_model(role: str, path: Path) -> Model:
    manifest, manifest_path = read_manifest(path)
    return Model(role, manifest_path.resolve(), manifest)


def in_turn(models: tuple[Model, Model], index: int) -> tuple[Model, Model]:
    """Baseline first on even cases, candidate first on odd ones, so a change in machine load hits both alike."""
    return models if index % 2 == 0 else (models[1], models[0])


def check_spacing(config: TrainingConfig, manifest: ModelManifest) -> None:
    """The validation cache lies on the config's grid: a model trained on another grid cannot be scored on it."""
    if tuple(manifest.spacing_mm) != tuple(config.spacing_mm):
        raise InputError(config.source or "config", f"spacing {config.spacing_mm} is not the model's "
                                                    f"{manifest.spacing_mm}: its validation cache does not fit")


def validation_scores(models: tuple[Model, Model], config: TrainingConfig, device: str, quick: bool) -> dict:
    """Per model over the config's validation cases (phantoms only when quick): Dice per class, their mean and the
    pooled lesion counts (:mod:`lvt.train.validation`), each model with its own manifest's patch, window and target,
    an ensemble with all its members."""
    for model in models:
        check_spacing(config, model.manifest)
    entries = tuple(e for e in config.validation if not quick or e.spec.kind == "phantom")
    cases, _ = prepare_cases(entries, config, skip_bad_cases=False)
    predictors = {m.role: Predictor.from_file(m.path, device, VALIDATION_WINDOWS) for m in models}
    scored: dict[str, list] = {m.role: [] for m in models}
    for index, case in enumerate(cases):
        for model in in_turn(models, index):
            scored[model.role].append(score_case(predictors[model.role], case, config.spacing_mm))
    grid = " x ".join(f"{s:g}" for s in config.spacing_mm) + " mm"
    return {"cases": [case.name for case in cases], "grid": grid,
            **{role: summarize(per_case) for role, per_case in scored.items()}}


def ircadb_scores(per_case_csv: str) -> dict:
    """The numbers the targets need, from the per_case.csv that evaluate_folder writes."""
    rows = {row["class"]: row for row in csv.DictReader(io.StringIO(per_case_csv))}
    scores = {f"{metric}_{key}": float(rows[key][metric]) for key in CLASS_KEYS for metric in ("dice", "nsd")}
    tumor = rows["tumor"]
    return {**scores, "mean_dice": float(np.mean([scores[f"dice_{key}"] for key in CLASS_KEYS])),
            "liver_volume_error_pct": 100.0 * float(rows["liver"]["relative_volume_error"]),
            "lesions_found": int(tumor["detected_lesions"]),
            "lesions_missed": int(tumor["true_lesions"]) - int(tumor["detected_lesions"]),
            "false_positive_lesions": int(tumor["predicted_lesions"]) - int(tumor["correct_predicted_lesions"])}


def ircadb(models: tuple[Model, Model], device: str, work: Path) -> dict:
    """Each model on ircadb01_17, each `evaluate` in its own spawned process so its peak memory is its own."""
    result = {}
    for model in in_turn(models, 1):  # the candidate first: its time is measured on a cold file cache
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            raw = pool.submit(real_case.evaluate, model.path, device, False, work / model.role).result()
        result[model.role] = {**ircadb_scores(raw["per_case_csv"]), "seconds_end_to_end": raw["seconds_end_to_end"],
                              "peak_host_memory_mb": raw["peak_host_memory_mb"], "stage_seconds": raw["stage_seconds"]}
    return result


def segment_all(models: tuple[Model, Model], cts: list[Path], device: str, work: Path) -> dict[str, dict]:
    """`lvt segment` every CT with both models (child processes); {role: {case: its numbers and folder}}."""
    result: dict[str, dict] = {model.role: {} for model in models}
    for index, ct in enumerate(cts):
        name = ct.name.removesuffix("_ct.nii.gz")
        for model in in_turn(models, index):
            folder = work / model.role / name
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lvt", "segment", str(ct), "-o", str(folder), "--model",
                            str(model.path), "--device", device, "--progress", "none", "--no-surfaces"], check=True)
            seconds = round(time.perf_counter() - started, 1)
            result[model.role][name] = {"folder": str(folder), "ct": str(ct), "seconds": seconds,
                                        **report_numbers(json.loads((folder / "report.json").read_text()))}
    return result


def report_numbers(report: dict) -> dict:
    """Liver and tumor volumes, and the largest lesion (size, and the centre of its long axis as the report views)."""
    largest = report["lesions"][0] if report["lesions"] else {}
    ends = largest.get("long_axis_endpoints_lps_mm")
    return {"liver_ml": report["liver"]["whole_volume_ml"], "tumor_ml": report["tumors"]["total_volume_ml"],
            "lesions": len(report["lesions"]), "largest_lesion_ml": largest.get("volume_ml"),
            "largest_lesion_mm": largest.get("longest_axial_diameter_mm"),
            "largest_lesion_centre_lps": None if ends is None else np.mean(ends, axis=0).tolist()}


def hcc_pair(cases: dict[str, dict]) -> dict:
    """Inter-phase numbers of HCC_009: liver volume difference (% of the pair's mean) and the largest lesions."""
    first, second = (cases[name] for name in HCC_PAIR)
    liver = (first["liver_ml"], second["liver_ml"])
    centres = [case["largest_lesion_centre_lps"] for case in (first, second)]
    distance = float(np.linalg.norm(np.subtract(*centres))) if all(centres) else None
    return {"liver_ml": liver, "liver_difference_pct": 100.0 * abs(liver[0] - liver[1]) / np.mean(liver),
            "tumor_ml": (first["tumor_ml"], second["tumor_ml"]),
            "largest_lesion_mm": (first["largest_lesion_mm"], second["largest_lesion_mm"]),
            "largest_lesion_ml": (first["largest_lesion_ml"], second["largest_lesion_ml"]),
            "largest_lesions_apart_mm": distance}


def _panel(axes: Axes, ct: Image, labels: Image, plane: views.ViewPlane, point: np.ndarray, title: str) -> None:
    view = views.view_through(ct, plane, point)
    low, high = views.SOFT_TISSUE_WINDOW_HU
    axes.imshow(views.sample_view(ct, view, order=1, outside=AIR_HU), cmap="gray", vmin=low, vmax=high)
    axes.imshow(views.label_overlay_rgba(views.sample_view(labels, view, order=0, outside=0)), interpolation="nearest")
    axes.set_title(title, fontsize=6.5, color="white")
    axes.set_axis_off()


def picture(models: tuple[Model, Model], segmented: dict[str, dict], cases: list[str], path: Path) -> int:
    """One row per CT: per model (candidate first) an axial slice through its largest tumor and a coronal one
    through its liver centre; written under MAX_PICTURE_BYTES where a lower resolution allows. Returns bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 2.7 * len(cases)), facecolor="black")
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(cases), 4, squeeze=False)
    for row, name in enumerate(cases):
        ct = read_image(segmented[models[0].role][name]["ct"])
        for column, model in enumerate(sorted(models, key=lambda m: m.role != "candidate")):
            _draw_case(grid[row][2 * column : 2 * column + 2], ct, segmented[model.role][name],
                       f"{name} · {model.role} {model.manifest.version}")
    figure.tight_layout(pad=0.4)
    for dpi in (110, 90, 72, 56):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, facecolor="black")
        if buffer.tell() <= MAX_PICTURE_BYTES:
            break
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return buffer.tell()


def _draw_case(axes: Sequence[Axes], ct: Image, case: dict, who: str) -> None:
    """Axial through the largest tumor (the liver centre when there is none), coronal through the liver centre."""
    labels = read_label_image(Path(case["folder"]) / "labels.nii.gz")
    centre, _ = views.liver_centre_lps(labels)
    largest = f", largest {case['largest_lesion_mm']:.0f} mm" if case["lesions"] else ""
    _panel(axes[0], ct, labels, views.AXIAL, np.asarray(case["largest_lesion_centre_lps"] or centre),
           f"{who} · axial\n{case['lesions']} tumor(s){largest}")
    _panel(axes[1], ct, labels, views.CORONAL, centre,
           f"{who} · coronal\nliver {case['liver_ml']:.0f} mL, tumors {case['tumor_ml']:.0f} mL")


@dataclass(frozen=True)
class Line:
    """One row of the table: a metric of both models, the target and how a value meets it."""

    metric: str
    baseline: float | None
    candidate: float | None
    target: str = ""
    meets: Callable[[float], bool] | None = None

    def cell(self, value: float | None) -> str:
        if value is None:
            return "–"
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text if self.meets is None else f"{text} {'✓' if self.meets(value) else '✗'}"


def _validation_lines(validation: dict) -> list[Line]:
    base, cand = validation["baseline"], validation["candidate"]
    lines = [Line(f"validation Dice {key}", base["dice"][key], cand["dice"][key]) for key in base["dice"]]
    lines.append(Line("validation mean Dice", base["mean_dice"], cand["mean_dice"], "candidate > baseline"))
    if "lesions" not in base:
        return lines
    return [*lines, *(Line(f"validation lesions {key}", base["lesions"][key], cand["lesions"][key])
                      for key in ("true", "detected", "false", "sensitivity", "precision", "f1"))]


def _ircadb_lines(irc: dict) -> list[Line]:
    keys = dict.fromkeys([f"{m}_{k}" for k in CLASS_KEYS for m in ("dice", "nsd")] + list(IRCADB_TARGETS))
    return [Line(f"ircadb01_17 {key}", irc["baseline"][key], irc["candidate"][key], *IRCADB_TARGETS.get(key, ("",)))
            for key in keys]


def _hcc_lines(hcc: dict) -> list[Line]:
    base, cand = hcc["baseline"], hcc["candidate"]
    lines = [Line("HCC_009 liver volume difference between phases %", base["liver_difference_pct"],
                  cand["liver_difference_pct"], "<= 8 %", lambda v: v <= 8.0)]
    lines += [Line(f"{phase} {key}", base[key][index], cand[key][index]) for index, phase in enumerate(HCC_PAIR)
              for key in ("tumor_ml", "largest_lesion_ml", "largest_lesion_mm")]
    return [*lines, Line("HCC_009 largest lesions of the two phases apart (mm)", base["largest_lesions_apart_mm"],
                         cand["largest_lesions_apart_mm"], "the large HCC in both: see the picture")]


def table_lines(results: dict) -> list[Line]:
    """The table of issue 10's targets; each value is marked against its target where it has one."""
    irc = _ircadb_lines(results["ircadb01_17"]) if "ircadb01_17" in results else []
    size = results["model_size_mb"]
    return [*_validation_lines(results["validation"]), *irc, *_hcc_lines(results["hcc_009"]),
            Line("model file size MB", size["baseline"], size["candidate"], "< 50 MB", lambda v: v < 50.0)]


def verdict(results: dict) -> bool | None:
    """The shipping rule (RULE); None when ircadb01_17 was not run."""
    irc, val = results.get("ircadb01_17"), results["validation"]
    if irc is None:
        return None
    base, cand = irc["baseline"], irc["candidate"]
    phases = results.get("hcc_009") or {}

    def no_worse(candidate: float, baseline: float, target: float) -> bool:
        return candidate <= max(baseline, target)

    better = (val["candidate"]["mean_dice"] > val["baseline"]["mean_dice"] and cand["mean_dice"] > base["mean_dice"]
              and cand["lesions_found"] >= base["lesions_found"])
    safe = (no_worse(abs(cand["liver_volume_error_pct"]), abs(base["liver_volume_error_pct"]), 5.0)
            and no_worse(cand["false_positive_lesions"], base["false_positive_lesions"], 0)
            and (not phases or no_worse(phases["candidate"]["liver_difference_pct"],
                                        phases["baseline"]["liver_difference_pct"], 8.0)))
    return better and safe


def write_results(results: dict, folder: Path) -> None:
    """results.json and RESULTS.md: provenance, the table, the verdict and what was not measured."""
    lines = table_lines(results)
    ships = {True: "yes", False: "no", None: "not decided (--quick: ircadb01_17 not run)"}[results["ships"]]
    models = "; ".join(f"{role} {m['name']} {m['version']} ({m['path']})" for role, m in results["models"].items())
    table = "\n".join(f"| {line.metric} | {line.cell(line.baseline)} | {line.cell(line.candidate)} | {line.target} |"
                      for line in lines)
    write_text_atomically(folder / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    write_text_atomically(folder / "RESULTS.md", (
        f"# Model comparison: {results['models']['baseline']['version']} vs "
        f"{results['models']['candidate']['version']}\n\n"
        f"- models: {models}\n- date: {results['date']}; commit: {results['commit']}\n"
        f"- machine: {results['machine']}; device: {results['device']}; load average (1, 5, 15 min) at start "
        f"{results['load_average'][0]}, at end {results['load_average'][1]}\n- command: `{results['command']}`\n"
        f"- validation cases ({len(results['validation']['cases'])}): {', '.join(results['validation']['cases'])}; "
        f"each model with its own manifest's patch size and window; Dice on the {results['validation']['grid']} "
        "training grid\n\n"
        f"| metric | baseline | candidate | target |\n|---|---|---|---|\n{table}\n\n"
        f"**ships: {ships}** (rule: {RULE})\n\n"
        "✓/✗: the value meets issue 10's target or not. Validation lesions: pooled over the tumor-annotated "
        "validation cases, counted on the cleaned-up labels a user sees (more than 10 % overlap on both sides). "
        "HCC_009 has no labels: whether the large left-lobe HCC is the largest lesion in both phases is read from "
        f"the picture.\n\n![HCC_009 phases]({os.path.relpath(results['pictures']['hcc_009']['path'], folder)})\n\n"
        f"![TCIA montage]({os.path.relpath(results['pictures']['tcia']['path'], folder)})\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True, help="the candidate's training config (validation)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke test: validation phantoms and HCC_009 only")
    parser.add_argument("--output", type=Path, default=None, help="folder for all outputs (default: see above)")
    args = parser.parse_args()
    if args.quick and args.output is None:
        parser.error("--quick needs --output: a smoke test must not replace the real results")
    try:
        run(args)
    except (LVTError, FileNotFoundError) as error:  # bad input: exit 2, as lvt does
        parser.exit(2, f"compare_models: error: {error}\n")
    except subprocess.CalledProcessError as error:
        parser.exit(1, f"compare_models: error: {' '.join(error.cmd[:5])} ... exited {error.returncode}\n")


def check_inputs(config: TrainingConfig, cts: list[Path], quick: bool) -> None:
    """Every real file the comparison reads, before anything runs (a missing ../shared is one clear line)."""
    roots = [e.spec.root for e in config.validation if e.spec.root is not None and not quick]
    needed = [*([] if quick else [real_case.CT]), *roots, *cts, *(TCIA / f"{n}_ct.nii.gz" for n in HCC_PAIR)]
    if missing := list(dict.fromkeys(str(path) for path in needed if not path.exists())):
        raise FileNotFoundError(f"not found: {', '.join(missing)} (the real CTs live in ../shared/data beside the "
                                "repository)")


def run(args: argparse.Namespace) -> None:
    """Check the inputs, measure both models, write the pictures and the results."""
    config = load_training_config(args.config)
    cts = [TCIA / f"{name}_ct.nii.gz" for name in HCC_PAIR] if args.quick else sorted(TCIA.glob("*_ct.nii.gz"))
    check_inputs(config, cts, args.quick)
    models = (open_model("baseline", args.baseline), open_model("candidate", args.candidate))
    load_start = os.getloadavg()
    results: dict = {"validation": validation_scores(models, config, args.device, args.quick)}
    with tempfile.TemporaryDirectory(prefix="lvt-compare-") as work:
        if not args.quick:
            results["ircadb01_17"] = ircadb(models, args.device, Path(work) / "ircadb")
        segmented = segment_all(models, cts, args.device, Path(work) / "tcia")
        results["hcc_009"] = {role: hcc_pair(cases) for role, cases in segmented.items()}
        figures, name = args.output or REPO / "Resources" / "Models", models[1].manifest.name
        pictures = (("hcc_009", list(HCC_PAIR), figures / f"{name}_hcc009_phases.png"),
                    ("tcia", [ct.name.removesuffix("_ct.nii.gz") for ct in cts], figures / f"{name}_tcia_montage.png"))
        results["pictures"] = {key: {"path": str(path), "bytes": picture(models, segmented, cases, path)}
                               for key, cases, path in pictures}
    results["tcia"] = {role: {name: {k: v for k, v in case.items() if k != "folder"} for name, case in cases.items()}
                       for role, cases in segmented.items()}
    results.update(
        models={m.role: {"name": m.manifest.name, "version": m.manifest.version, "path": str(m.path)} for m in models},
        model_size_mb={m.role: round(m.size_mb(), 1) for m in models}, date=datetime.date.today().isoformat(),
        machine=real_case.machine(), device=args.device, command=" ".join(["python", *sys.argv]), quick=args.quick,
        load_average=[[round(v, 2) for v in load] for load in (load_start, os.getloadavg())],
        commit=subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip())
    results["ships"], results["rule"] = verdict(results), RULE
    write_results(results, args.output or HERE)
    print((args.output or HERE).joinpath("RESULTS.md").read_text())


if __name__ == "__main__":
    main()
