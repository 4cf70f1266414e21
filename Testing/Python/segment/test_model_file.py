"""Model files: safetensors + manifest round trip, and clear errors for every broken file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from lvt.errors import ModelFileError
from lvt.segment.model_file import (
    ModelManifest,
    bundled_model_path,
    is_pickle,
    load_model,
    read_manifest,
    save_model,
    state_mismatches,
)
from lvt.segment.network import NetworkConfig, build_network
from lvt.segment.window import Window

TINY = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1)


def _manifest(network: NetworkConfig = TINY, target: str = "ml") -> ModelManifest:
    return ModelManifest(name="tiny", version="0.0.1", spacing_mm=(4.0, 4.0, 4.0), patch_size_zyx=(16, 16, 16),
                         window=Window(80, 250), network=network, target=target)


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


def test_target_kind_and_head_round_trip_and_must_agree(tmp_path: Path) -> None:
    softmax = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1, head="softmax")
    written = save_model(build_network(softmax), _manifest(softmax, "mc"), tmp_path / "mc.json")
    stored = json.loads((tmp_path / "mc.json").read_text(encoding="utf-8"))
    assert stored["target"] == "mc" and stored["network"]["head"] == "softmax"
    manifest, _ = read_manifest(tmp_path / "mc.json")
    assert manifest == written and (manifest.target, manifest.network.head) == ("mc", "softmax")
    for target, network in (("mc", TINY), ("ml", softmax), ("mlx", softmax), ("multi", TINY)):
        with pytest.raises(ModelFileError, match="does not fit"):
            _manifest(network, target)


def test_a_manifest_without_target_or_head_reads_as_ml_sigmoid(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["target"], data["network"]["head"]
    path.write_text(json.dumps(data))
    manifest = load_model(path)[1]
    assert (manifest.target, manifest.network.head) == ("ml", "sigmoid")
    bundled, _ = read_manifest(bundled_model_path())  # written before the field existed
    assert (bundled.target, bundled.network.head) == ("ml", "sigmoid")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pytorch_checkpoint_is_named_and_never_opened(legacy: bool, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "model.pt"
    torch.save({"state_dict": build_network(TINY).state_dict()}, checkpoint,
               _use_new_zipfile_serialization=not legacy)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: this is a PyTorch pickle; LVT loads only safetensors "
                                             r"\+ manifest"):
        load_model(checkpoint)


def test_bare_safetensors_names_the_manifest_it_looked_for(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    path.unlink()
    weights = path.with_suffix(".safetensors")
    with pytest.raises(ModelFileError) as raised:
        load_model(weights)
    assert str(raised.value).startswith(f"{weights}: no model manifest beside these weights (looked for {path})")


def test_a_safetensors_file_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """A safetensors header length of 0x0280 bytes starts with the bytes of a protocol-2 pickle."""
    path = tmp_path / "w.safetensors"
    header = b'{"__metadata__":{"x":"' + b"y" * 600
    header += b'"}}'.ljust(0x0280 - len(header))
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert not is_pickle(path)


def test_shape_mismatch_lists_five_tensors_then_the_count(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["network"]["features_per_stage"] = [4, 16]
    path.write_text(json.dumps(manifest))
    differing = state_mismatches(build_network(NetworkConfig(features_per_stage=(4, 16), deep_supervision_levels=1))
                                 .state_dict(), build_network(TINY).state_dict())
    assert len(differing) > 5
    with pytest.raises(ModelFileError) as raised:
        load_model(path)
    lines = str(raised.value).splitlines()
    assert "weights do not match the manifest's architecture" in lines[0]
    assert lines[1:6] == [f"  {line}" for line in differing[:5]]
    assert lines[6:] == [f"  ... and {len(differing) - 5} more"]
    assert all(" in the weights, " in line for line in lines[1:6])


def test_manifest_checks_name_the_manifest_file(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["patch_size_zyx"] = [15, 16, 16]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=rf"^{path}: patch size"):
        load_model(path)
