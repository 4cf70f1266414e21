"""Real (tiny) training runs on small phantoms: learning, exact resume, DDP equivalence, config errors."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from lvt.errors import CancelledError, InputError
from lvt.progress import Progress
from lvt.segment.model_file import load_model
from lvt.segment.network import build_network
from lvt.segment.predict import Predictor
from lvt.train.config import load_training_config, training_config_from_dict
from lvt.train.data.prepare import prepare_cases
from lvt.train.loop import model_manifest, run_training, validate

SPACING = 6.0


def _config_dict(tmp_path: Path, **overrides: object) -> dict:
    data = {
        "model_name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path.parent / "shared-cache"),
        "spacing_mm": [SPACING] * 3,
        "patch_size_zyx": [32, 32, 32],
        "batch_size": 2,
        "steps": 40,
        "validate_every": 40,
        "checkpoint_every": 10,
        "seed": 3,
        "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "optimizer": {"name": "adamw", "learning_rate": 0.01, "warmup_steps": 2},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                      "phantom": {"count": 2, "seed": 11, "spacing_mm": [SPACING] * 3}}],
        "validation": [{"name": "ph_val", "kind": "phantom", "annotated": [1, 1, 1],
                        "phantom": {"count": 1, "seed": 11, "spacing_mm": [SPACING] * 3}}],
    }
    data.update(overrides)
    return data


def _config(tmp_path: Path, **overrides: object):
    return training_config_from_dict(_config_dict(tmp_path, **overrides), tmp_path, source="test")


def test_tiny_training_lowers_the_loss_and_beats_an_untrained_network(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    config = _config(tmp_path, steps=60, validate_every=60)
    result = run_training(config, device="cpu")
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    trained, _ = load_model(result.final_model)
    cases, _ = prepare_cases(config.validation, config, skip_bad_cases=False)
    torch.manual_seed(123)
    untrained = build_network(config.network)
    trained_scores = validate(trained, config, cases, torch.device("cpu"))
    untrained_scores = validate(untrained, config, cases, torch.device("cpu"))
    assert trained_scores["dice"]["liver"] > untrained_scores["dice"]["liver"] + 0.2
    assert (config.output_dir / "curves.png").stat().st_size > 1000
    assert len((config.output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 60
    # the final model is a normal LVT model file: the predictor takes it directly
    predictor = Predictor.from_file(result.final_model, device="cpu")
    assert predictor.manifest.spacing_mm == (SPACING,) * 3
    assert (predictor.manifest.target, predictor.manifest.network.head) == ("ml", "sigmoid")


def test_manifest_records_the_target_kind_and_head(tmp_path: Path) -> None:
    for loss, head in (("ml", "sigmoid"), ("mlx", "sigmoid"), ("mc", "softmax")):
        manifest = model_manifest(_config(tmp_path, loss=loss))
        assert (manifest.target, manifest.network.head) == (loss, head)


def test_validation_decodes_an_mc_model_by_argmax(tmp_path: Path) -> None:
    """A softmax network whose every voxel says (background 0.2, liver 0.45, vessel 0.0001, tumor 0.35):
    each voxel a window reached is liver by argmax, though no class reaches 0.5."""
    torch.set_num_threads(2)
    config = _config(tmp_path, loss="mc")
    cases, _ = prepare_cases(config.validation, config, skip_bad_cases=False)
    network = build_network(config.network)
    with torch.no_grad():
        network.heads[0].weight.zero_()
        network.heads[0].bias.copy_(torch.tensor([0.2, 0.45, 0.0001, 0.35]).log())
    scores = validate(network, config, cases, torch.device("cpu"))
    assert scores["dice"]["liver"] > 0.05  # the whole body is liver; a 0.5 threshold would find none (Dice 0)
    assert scores["dice"]["vessel"] == 0.0  # 0.0001 never wins


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final.safetensors"))


def test_resume_continues_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = _config(tmp_path / "a", steps=8, validate_every=100, checkpoint_every=4, validation=[])
    run_training(straight, device="cpu")
    halves = _config(tmp_path / "b", steps=8, validate_every=100, checkpoint_every=4, validation=[])
    cancel = threading.Event()

    def stop_after_four(event: Progress) -> None:
        if event.stage == "train" and event.done >= 4:
            cancel.set()  # as Ctrl-C would: the run saves its resume point and stops

    with pytest.raises(CancelledError):
        run_training(halves, device="cpu", progress=stop_after_four, cancel=cancel)
    run_training(halves, device="cpu", resume=True)
    a, b = _final_weights(straight.output_dir), _final_weights(halves.output_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    log = (halves.output_dir / "metrics.jsonl").read_text(encoding="utf-8")
    history = [json.loads(line) for line in log.splitlines()]
    assert [h["step"] for h in history] == list(range(1, 9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, config_dict: dict, base: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = training_config_from_dict(config_dict, Path(base), source="test")
    run_training(config, device="cpu")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # SGD: its update is linear in the gradient, so the two runs' rounding differences stay rounding-sized
    sgd = {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "warmup_steps": 1, "schedule": "poly"}
    single = _config_dict(tmp_path / "single", steps=4, validation=[], checkpoint_every=100, optimizer=sgd)
    run_training(training_config_from_dict(single, tmp_path, source="test"), device="cpu")
    double = _config_dict(tmp_path / "double", steps=4, validation=[], checkpoint_every=100, optimizer=sgd)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), double, str(tmp_path)), nprocs=2, start_method="spawn")
    double_dir = Path(double["output_dir"])
    one, two = _final_weights(Path(single["output_dir"])), _final_weights(double_dir)
    assert sorted(double_dir.glob("*.safetensors")) == [double_dir / "final.safetensors"]  # one writer
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)


def test_config_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loss: softmaxx\ndatasets: []\n")
    with pytest.raises(InputError, match=r"bad.yaml.*loss"):
        load_training_config(path)
    path.write_text("stepz: 3\n")
    with pytest.raises(InputError, match=r"unknown field.*stepz"):
        load_training_config(path)
    with pytest.raises(InputError, match="not found"):
        load_training_config(tmp_path / "missing.yaml")
