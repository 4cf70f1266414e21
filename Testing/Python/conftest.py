"""Shared fixtures: paths to the real data beside the repo, and a tiny model trained here on phantoms."""

from __future__ import annotations

import importlib.util
import locale
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test cleanly when the data is not beside the repo."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about LPS axis ``axis`` (0 L, 1 P, 2 S), for oblique test grids and known motions."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[[a, a, b, b], [a, b, a, b]] = [c, -s, s, c]
    return matrix


def load_module_file(path: Path, name: str) -> ModuleType:
    """Import one Python file that is not on ``sys.path`` (a script, a Qt-free Slicer-side module) on its own.

    The module is in ``sys.modules`` while it executes (dataclasses look their module up there) and
    removed afterwards, so loading it leaves no trace for other tests.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) LVT model trained for a few seconds on coarse phantoms; its manifest path."""
    import torch

    from lvt.train.config import training_config_from_dict
    from lvt.train.loop import run_training

    folder = tmp_path_factory.mktemp("tiny-model")
    phantoms = {"count": 2, "seed": 21, "spacing_mm": [6.0, 6.0, 6.0]}
    config = training_config_from_dict({
        "model_name": "tiny", "output_dir": str(folder / "run"), "spacing_mm": [6.0, 6.0, 6.0],
        "patch_size_zyx": [32, 32, 32], "batch_size": 2, "steps": 30, "validate_every": 30, "seed": 5,
        "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "optimizer": {"learning_rate": 0.01, "warmup_steps": 2},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1], "phantom": phantoms}],
    }, folder, source="tiny model fixture")
    torch.manual_seed(0)
    return run_training(config, device="cpu").final_model


@pytest.fixture(autouse=True)
def environment_locale() -> None:
    """Every test starts in the environment's character locale, as every ``lvt`` process does.

    slicer-core's DICOM libraries switch the whole test process to the C locale when they load; files opened
    without an encoding (torch.compile's templates among them) would then be read as ASCII.
    """
    locale.setlocale(locale.LC_CTYPE, "")


@pytest.fixture
def one_torch_thread() -> object:
    """One torch thread for the test, then the thread count it had: tiny networks on a shared 2-core machine run
    about 10x slower with two."""
    import torch  # here: most tests never load torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
