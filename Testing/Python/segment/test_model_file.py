"""Model files: safetensors + manifest round trip, and clear errors for every broken file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from lvt.errors import ModelFileError
from lvt.segment.model_file import ModelManifest, load_model, read_manifest, save_model
from lvt.segment.network import NetworkConfig, build_network
from lvt.segment.window import Window

TINY = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1)


def _manifest(network: NetworkConfig = TINY) -> ModelManifest:
    return ModelManifest(name="tiny", version="0.0.1", spacing_mm=(4.0, 4.0, 4.0), patch_size_zyx=(16, 16, 16),
                         window=Window(80, 250), network=network)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    network = build_network(TINY)
    save_model(network, _manifest(), tmp_path / "tiny.json")
    return tmp_path / "tiny.json", network


def test_round_trip_gives_identical_outputs(saved: tuple[Path, torch.nn.Module]) -> None:
    path, network = saved
    loaded, manifest = load_model(path)
    x = torch.randn(1, 1, 16, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), network(x))
    assert manifest.spacing_mm == (4.0, 4.0, 4.0) and manifest.window == Window(80, 250)
    assert len(manifest.weights_sha256) == 64
    # the .safetensors path finds its manifest too
    assert load_model(path.with_suffix(".safetensors"))[1].name == "tiny"


def test_corrupt_weights_fail_the_hash_check(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(path)


def test_architecture_mismatch_is_a_clear_error(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = saved
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["network"]["features_per_stage"] = [4, 16]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="architecture"):
        load_model(path)


def test_missing_files_and_bad_manifests(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_manifest(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not an LVT model manifest"):
        read_manifest(bad)


def test_a_pickle_is_never_loaded(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(pickle.dumps({"weights": "a pickle that could run code"}))
    manifest = json.loads(path.read_text(encoding="utf-8"))
    import hashlib

    manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model(path)


def test_patch_size_must_fit_the_network() -> None:
    with pytest.raises(ModelFileError, match="multiple"):
        ModelManifest(name="x", version="1", spacing_mm=(2, 2, 2), patch_size_zyx=(15, 16, 16), window=Window(),
                      network=TINY)
