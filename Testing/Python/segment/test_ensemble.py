"""Ensembles: built from model files, averaged after each member's TTA, every member file checked by sha256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lvt.cli.main import run as lvt
from lvt.errors import InputError, ModelFileError
from lvt.image import Image
from lvt.io import write_image
from lvt.segment.ensemble import member_manifests, write_ensemble
from lvt.segment.model_file import ModelManifest, load_model, load_models, read_manifest, save_model
from lvt.segment.network import NetworkConfig, build_network
from lvt.segment.predict import Predictor, SlidingWindowConfig
from lvt.segment.window import Window

TINY = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1)
TTA = SlidingWindowConfig(use_tta=True, windows_per_batch=2)


def _save(folder: Path, seed: int, spacing: float = 4.0) -> Path:
    """A real (untrained, seeded) network written as a model: different seeds give different probabilities."""
    torch.manual_seed(seed)
    manifest = ModelManifest(name="tiny", version="0.0.1", spacing_mm=(spacing,) * 3, patch_size_zyx=(16, 16, 16),
                             window=Window(80, 250), network=TINY)
    save_model(build_network(TINY), manifest, folder / "final.json")
    return folder / "final.json"


@pytest.fixture
def hu() -> np.ndarray:
    """A body (soft tissue with a brighter block) in air, larger than one window."""
    image = np.full((20, 24, 28), -1000.0, dtype=np.float32)
    image[2:18, 3:21, 3:25] = 60.0
    image[6:12, 8:14, 8:16] = 140.0
    return image


def _probabilities(model: Path, hu: np.ndarray) -> np.ndarray:
    return Predictor.from_file(model, "cpu", TTA).predict_probabilities(hu)[0]


def test_the_same_model_twice_gives_the_single_models_probabilities(tmp_path: Path, hu: np.ndarray) -> None:
    model = _save(tmp_path / "a", seed=1)
    ensemble = write_ensemble([model, model], tmp_path / "ensemble")
    networks, manifest = load_models(ensemble)
    assert len(networks) == 2 and manifest.weights_file == ""
    assert json.loads(ensemble.read_text(encoding="utf-8"))["format_version"] == 2
    single = _probabilities(model, hu)
    np.testing.assert_array_equal(_probabilities(ensemble, hu), single)
    assert single.max() > 0


def test_two_models_give_the_mean_of_their_probabilities(tmp_path: Path, hu: np.ndarray) -> None:
    first, second = _save(tmp_path / "a", seed=1), _save(tmp_path / "b", seed=2)
    ensemble = write_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "ensemble")  # run folders: final.json
    p_first, p_second = _probabilities(first, hu), _probabilities(second, hu)
    assert np.abs(p_first - p_second).max() > 0.01  # the members disagree, so the mean is a real test
    predictor = Predictor.from_file(ensemble, "cpu", TTA)
    probabilities, stats = predictor.predict_probabilities(hu)
    np.testing.assert_allclose(probabilities, (p_first + p_second) / 2, atol=1e-6)
    assert stats.forward_passes == stats.windows_computed * 8 * 2  # every window: 8 flips, 2 members
    provenance = read_manifest(ensemble)[0].training["ensemble"]
    assert [Path(member["model"]) for member in provenance] == [first.resolve(), second.resolve()]


def test_a_tampered_or_missing_member_is_refused_naming_the_file(tmp_path: Path) -> None:
    ensemble = write_ensemble([_save(tmp_path / "a", 1), _save(tmp_path / "b", 2)], tmp_path / "ensemble")
    member = tmp_path / "ensemble" / "member_1.safetensors"
    data = bytearray(member.read_bytes())
    data[-1] ^= 0xFF
    member.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=rf"^{member}: sha256 .* does not match the manifest"):
        Predictor.from_file(ensemble, "cpu")
    member.unlink()
    with pytest.raises(ModelFileError, match=rf"^{member}: weights file named in ensemble.json not found"):
        load_models(ensemble)
    with pytest.raises(ModelFileError, match="an ensemble of 2 models"):  # one network is asked for
        load_model(tmp_path / "ensemble" / "ensemble.json")
    both = json.loads(ensemble.read_text(encoding="utf-8")) | {"weights_file": "member_0.safetensors"}
    ensemble.write_text(json.dumps(both), encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"ensemble\.json: invalid manifest field: give weights_file .* not both"):
        read_manifest(ensemble)


def test_building_checks_the_members_and_refuses_what_cannot_be_averaged(tmp_path: Path) -> None:
    first = _save(tmp_path / "a", 1)
    weights = first.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelFileError, match=rf"^{weights}: sha256"):
        write_ensemble([first, _save(tmp_path / "b", 2)], tmp_path / "e1")
    other_spacing = _save(tmp_path / "c", 3, spacing=2.0)
    with pytest.raises(InputError, match=r"c/final\.json: cannot join an ensemble with .*: spacing_mm differ"):
        write_ensemble([_save(tmp_path / "d", 4), other_spacing], tmp_path / "e2")
    with pytest.raises(InputError, match="at least two models"):
        write_ensemble([first], tmp_path / "e3")
    assert not any((tmp_path / name).exists() for name in ("e1", "e2", "e3"))  # nothing half-written


def test_a_cross_validation_folder_gives_its_fold_models(tmp_path: Path) -> None:
    folds = [_save(tmp_path / "cv" / f"fold_{k}", k) for k in range(3)]
    assert member_manifests([tmp_path / "cv"]) == folds
    with pytest.raises(InputError, match="not a model manifest, a run folder"):
        member_manifests([tmp_path / "nothing"])


def test_the_command_line_builds_an_ensemble(tmp_path: Path, capsys) -> None:
    first, second = _save(tmp_path / "a", 1), _save(tmp_path / "b", 2)
    assert lvt(["train", "--ensemble", str(first), str(second), "--output", str(tmp_path / "ens")]) == 0
    assert len(read_manifest(tmp_path / "ens" / "ensemble.json")[0].members) == 2
    capsys.readouterr()
    assert lvt(["train", "--ensemble", str(first), str(second), "--output", str(tmp_path / "ens")]) == 2
    assert capsys.readouterr().err.startswith(f"lvt: error: {tmp_path / 'ens'}: already exists")
    assert lvt(["train", "--ensemble", str(first), str(second)]) == 2
    assert "needs --output DIR" in capsys.readouterr().err


def test_lvt_segment_runs_an_ensemble_and_names_its_weights(tmp_path: Path, hu: np.ndarray) -> None:
    first, second = _save(tmp_path / "a", 1), _save(tmp_path / "b", 2)
    ensemble = write_ensemble([first, second], tmp_path / "ensemble")
    manifest = read_manifest(ensemble)[0]
    identity = manifest.weights_identity
    assert len(identity) == 64 and identity not in {m.sha256 for m in manifest.members}
    assert read_manifest(first)[0].weights_identity == read_manifest(first)[0].weights_sha256
    write_image(Image(hu, (4.0, 4.0, 4.0)), tmp_path / "ct.nii.gz")
    assert lvt(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--model", str(ensemble),
                "--progress", "none"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["name"] == "tiny_ensemble"
