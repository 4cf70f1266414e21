"""torch.compile in a cohort: each process compiles as ``--compile`` and its share of the cases decide.

No network runs here: whether a predictor will compile is its configuration (the compile itself,
and its fallback, are tested in test_predict_compile.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lvt.cli.main import run
from lvt.segment.cohort import CohortSettings, load_for_process
from lvt.segment.compiled import BREAK_EVEN_CASES, toolchain_available
from lvt.segment.model_file import ModelManifest, save_model
from lvt.segment.network import NetworkConfig, build_network
from lvt.segment.pipeline import SegmentOptions
from lvt.segment.window import Window


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny network with seeded random weights, saved as a model file."""
    torch.manual_seed(0)
    config = NetworkConfig(features_per_stage=(4, 8, 16), deep_supervision_levels=2)
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    save_model(build_network(config), ModelManifest(name="tiny", version="0", spacing_mm=(6.0, 6.0, 6.0),
                                                    patch_size_zyx=(16, 16, 16), window=Window(), network=config),
               path)
    return path


@pytest.mark.parametrize(("choice", "cases", "compiles"), [
    ("off", 100 * BREAK_EVEN_CASES, False),
    ("on", 1, True),
    ("auto", 1, False),
    ("auto", BREAK_EVEN_CASES - 1, False),
    ("auto", BREAK_EVEN_CASES, None),  # None: as the toolchain allows
])
def test_a_process_compiles_as_the_choice_and_its_cases_decide(choice: str, cases: int, compiles: bool | None,
                                                               random_model: Path, tmp_path: Path) -> None:
    settings = CohortSettings(tmp_path, SegmentOptions(model_path=random_model, device="cpu"), compile=choice)
    predictor, _ = load_for_process(settings, cases)
    expected = toolchain_available(torch.device("cpu")) if compiles is None else compiles
    assert predictor.config.use_compile is expected


def test_the_compile_choice_reaches_the_cohort_and_its_manifest(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    cts = tmp_path / "cts"
    cts.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):  # never read: the model fails to load before the first case
        (cts / name).write_bytes(b"")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    code = run(["segment", str(cts), "-o", str(tmp_path / "out"), "--model", str(broken), "--compile", "off",
                "--progress", "none"])
    assert code == 2 and "broken.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "cohort.json").read_text())["options"]["compile"] == "off"
