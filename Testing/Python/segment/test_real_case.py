"""The bundled model on the one real expert-labelled case (ircadb01_17): a regression floor.

Measured with lvt_default 1.0.0 (Testing/Benchmarks/real_case/RESULTS.md): liver Dice 0.889, vessel
0.502, tumor 0.235 (0.887 / 0.499 / 0.233 with the full sliding window). The floors below are those values
minus a margin, so a regression shows. This and the held-out phantoms are the accuracy checks: the model's
own training CTs (example_ct, example_ct_dicom) are never scored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, shared_file

from lvt.cli.main import run
from lvt.evaluate.run import evaluate_folder

pytestmark = pytest.mark.slow

LIVER_DICE_FLOOR = 0.85
VESSEL_DICE_FLOOR = 0.40
TUMOR_DICE_FLOOR = 0.15


def test_bundled_model_on_ircadb01_17_stays_above_its_floor(tmp_path: Path) -> None:
    ct = shared_file("ircadb01_17", "ircadb01_17_ct.nii.gz")
    prediction = tmp_path / "pred" / "ircadb01_17"
    assert run(["segment", str(ct), "-o", str(prediction), "--device", "cpu", "--progress", "none",
                "--no-surfaces"]) == 0
    spec = REPO / "Testing" / "Benchmarks" / "real_case" / "ircadb01_17_truth.yaml"
    rows = evaluate_folder([prediction.parent], spec, tmp_path / "eval", (7.0, 3.0, 3.0)).rows
    dice = {row["class"]: row["dice"] for row in rows}
    assert dice["liver"] > LIVER_DICE_FLOOR
    assert dice["vessel"] > VESSEL_DICE_FLOOR
    assert dice["tumor"] > TUMOR_DICE_FLOOR
    assert "1 case" in (tmp_path / "eval" / "summary.md").read_text(encoding="utf-8")
