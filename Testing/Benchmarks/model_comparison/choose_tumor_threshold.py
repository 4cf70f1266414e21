"""Choose a model's tumor decision threshold on the validation set, and write the model with it built in.

    python Testing/Benchmarks/model_comparison/choose_tumor_threshold.py --model /work/runs/lvt_default_2b/best.json \
        --config LVTTraining/configs/lvt_default_2b.yaml --output /work/runs/lvt_default_2b_t

For each threshold t the model's tumor bias is shifted by -logit(t) (:mod:`lvt.train.calibration`) and the
shifted model is scored on the config's validation cases as training validates (:mod:`lvt.train.validation`).
The rule, fixed before any run: the t with the highest mean of validation tumor Dice and validation lesion F1
(found and false lesions on the labels a user sees); a tie goes to the lower t. Writes the table
(threshold_choice.md / .json) and the chosen model (model.json + model.safetensors) into --output. Validation
cases only: ircadb01_17 is never read here (compare_models.py then evaluates the chosen model on it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from lvt.atomic import write_text_atomically
from lvt.segment.model_file import load_model, save_model
from lvt.segment.predict import Predictor
from lvt.train.calibration import shift_decision_threshold
from lvt.train.config import load_training_config
from lvt.train.data.prepare import prepare_cases
from lvt.train.validation import VALIDATION_WINDOWS, score_cases

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
RULE = ("the threshold with the highest mean of validation tumor Dice and validation lesion F1; a tie goes to "
        "the lower threshold")


def selection_score(scores: dict) -> float:
    """What RULE maximises: the mean of tumor Dice and lesion F1 (a missing F1 counts as 0)."""
    return (scores["dice"]["tumor"] + (scores["lesions"]["f1"] or 0.0)) / 2.0


def choose(rows: list[dict]) -> dict:
    """The row RULE picks (rows in increasing threshold order, so max keeps the first, lower, of equals)."""
    return max(rows, key=lambda row: row["selection_score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a single model's manifest (not an ensemble)")
    parser.add_argument("--config", type=Path, required=True, help="its training config (the validation cases)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    args = parser.parse_args()
    config = load_training_config(args.config)
    cases, _ = prepare_cases(config.validation, config, skip_bad_cases=False)
    rows = []
    for threshold in sorted(args.thresholds):
        network, manifest = load_model(args.model, "cpu")
        shift_decision_threshold(network, "tumor", threshold)
        scores = score_cases(Predictor(network, manifest, torch.device("cpu"), VALIDATION_WINDOWS), cases,
                             config.spacing_mm)
        rows.append({"threshold": threshold, **scores, "selection_score": selection_score(scores)})
        print(f"t={threshold}: tumor Dice {scores['dice']['tumor']:.3f}, lesions {scores['lesions']}", flush=True)
    chosen = choose(rows)
    network, manifest = load_model(args.model, "cpu")
    shift_decision_threshold(network, "tumor", chosen["threshold"])
    calibration = {"tumor_decision_threshold": chosen["threshold"], "rule": RULE, "source": str(args.model),
                   "validation": [{k: row[k] for k in ("threshold", "dice", "lesions")} for row in rows]}
    args.output.mkdir(parents=True, exist_ok=True)
    save_model(network, replace(manifest, training={**manifest.training, "calibration": calibration},
                                metrics={**manifest.metrics, "validation_after_calibration": chosen}),
               args.output / "model.json")
    record = {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
              "cases": [case.name for case in cases], "rule": RULE, "rows": rows, "chosen": chosen["threshold"]}
    write_text_atomically(args.output / "threshold_choice.json", json.dumps(record, indent=2) + "\n")
    write_text_atomically(args.output / "threshold_choice.md", markdown(record))
    print(markdown(record))


def markdown(record: dict) -> str:
    """The sweep as a table, the rule and the choice."""
    lines = [f"# Tumor decision threshold chosen on validation ({record['date']})", "",
             f"- command: `{record['command']}`", f"- validation cases: {', '.join(record['cases'])}",
             f"- rule: {RULE}", "",
             "| threshold | Dice liver | Dice vessel | Dice tumor | lesions found / true | false lesions | "
             "lesion F1 | score |", "|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        dice, lesions = row["dice"], row["lesions"]
        lines.append(f"| {row['threshold']:g} | {dice['liver']:.3f} | {dice['vessel']:.3f} | {dice['tumor']:.3f} | "
                     f"{lesions['detected']} / {lesions['true']} | {lesions['false']} | {lesions['f1'] or 0:.3f} | "
                     f"{row['selection_score']:.3f} |")
    return "\n".join([*lines, "", f"Chosen: **{record['chosen']:g}**", ""])


if __name__ == "__main__":
    main()
