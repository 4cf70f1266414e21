"""The report's doubts reach the terminal: warnings are printed, and --strict turns them into exit 2."""

from __future__ import annotations

import json

import numpy as np

from lvt.cli.main import run
from lvt.image import Image
from lvt.io import write_image


def _small_liver_map(path):
    """A 40 x 40 x 40 label map (2 mm) whose liver is a 10 mL cube in the middle: far below any real liver."""
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[15:26, 15:26, 15:26] = 1  # 11^3 voxels x 8 mm^3 = 10.6 mL
    write_image(Image(labels, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)), path)
    return path


def test_measure_prints_the_small_liver_warning_and_still_succeeds(tmp_path, capsys):
    source = _small_liver_map(tmp_path / "labels.nii.gz")
    status = run(["measure", str(source), "-o", str(tmp_path / "out"), "--no-surfaces", "--progress", "none"])
    err = capsys.readouterr().err
    assert status == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["warnings"], "a 10 mL liver must be doubted in the report"
    assert f"lvt: warning: {report['warnings'][0]}" in err


def test_strict_turns_a_doubtful_report_into_exit_2(tmp_path, capsys):
    source = _small_liver_map(tmp_path / "labels.nii.gz")
    status = run(["measure", str(source), "-o", str(tmp_path / "out"), "--no-surfaces", "--progress", "none",
                  "--strict"])
    err = capsys.readouterr().err
    assert status == 2
    assert "lvt: error:" in err and "--strict" in err and "mL" in err
    assert (tmp_path / "out" / "report.json").is_file(), "the output stays for review"
