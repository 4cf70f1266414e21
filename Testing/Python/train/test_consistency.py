"""Mean-teacher consistency: the term by hand, its ramp-up, the teacher's moving average, exact resume, and tiny
real runs on phantoms plus one unlabelled CT in which the term is logged and is the only change."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lvt.errors import CancelledError
from lvt.io import write_image
from lvt.phantom import PhantomConfig, make_phantom
from lvt.progress import Progress
from lvt.segment.network import build_network
from lvt.segment.network_config import NetworkConfig
from lvt.train.config import ConsistencyConfig, training_config_from_dict
from lvt.train.consistency import consistency_loss, ema_update, ramp_weight
from lvt.train.data.prepare import prepare_run_cases
from lvt.train.distributed import DistributedRun
from lvt.train.loop import Trainer, run_training, save_resume_point

SPACING = [6.0, 6.0, 6.0]


def test_the_term_is_the_mean_squared_difference_of_class_probabilities() -> None:
    student = torch.zeros(1, 3, 2, 1, 1)  # sigmoid 0.5 everywhere
    teacher = torch.tensor([0.75, 0.25, 0.5, 0.5, 1.0, 0.0]).view(1, 3, 2, 1, 1)
    # squared differences 1/16, 1/16, 0, 0, 1/4, 1/4: their sum 0.625 over 6 values
    assert consistency_loss(student, teacher, "sigmoid").item() == pytest.approx(0.625 / 6, abs=1e-7)
    # softmax over background + 3 classes, all logits equal: each class 0.25; the teacher's classes 0.5, 0.25, 0
    logits = torch.zeros(1, 4, 1, 1, 1)
    teacher = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1, 1)
    assert consistency_loss(logits, teacher, "softmax").item() == pytest.approx((0.0625 + 0 + 0.0625) / 3, abs=1e-7)
    assert consistency_loss(torch.full((1, 3, 2, 2, 2), 3.0), torch.sigmoid(torch.tensor(3.0)).expand(1, 3, 2, 2, 2),
                            "sigmoid").item() == 0.0


def test_the_weight_ramps_up_as_a_sigmoid_then_stays() -> None:
    settings = ConsistencyConfig(weight=2.0, ramp_up_steps=100)
    assert ramp_weight(0, settings) == pytest.approx(2.0 * math.exp(-5.0))
    assert ramp_weight(50, settings) == pytest.approx(2.0 * math.exp(-1.25))
    assert ramp_weight(90, settings) == pytest.approx(2.0 * math.exp(-0.05))
    assert ramp_weight(100, settings) == ramp_weight(5000, settings) == 2.0
    assert ramp_weight(0, ConsistencyConfig(weight=0.5, ramp_up_steps=0)) == 0.5


def test_the_teacher_moves_toward_the_student_by_one_minus_the_decay() -> None:
    config = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1, norm="batch")
    torch.manual_seed(0)
    teacher, student = build_network(config), build_network(config)
    student(torch.rand(2, 1, 8, 8, 8))  # train mode: batch-norm statistics and num_batches_tracked move
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    after, target = teacher.state_dict(), student.state_dict()
    for key, old in before.items():
        if old.is_floating_point():
            torch.testing.assert_close(after[key], old + 0.1 * (target[key] - old), rtol=0, atol=1e-6)
            assert not torch.equal(after[key], old) or torch.equal(old, target[key]), key
        else:
            assert torch.equal(after[key], target[key]), key  # a counter is copied, not averaged
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(teacher.state_dict()[k], after[k]) for k in after)  # decay 1: a frozen teacher


@pytest.fixture(scope="module")
def unlabelled_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one CT written from a phantom (no labels go with it)."""
    folder = tmp_path_factory.mktemp("unlabelled")
    phantom = make_phantom(PhantomConfig(seed=77, spacing_mm=tuple(SPACING)))
    write_image(phantom.image, folder / "p77_ct.nii.gz")
    return folder


def _config_dict(tmp_path: Path, ct_folder: Path | None, **overrides: object) -> dict:
    data = {
        "model_name": "tiny", "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path.parent / "shared-cache"),
        "spacing_mm": SPACING, "patch_size_zyx": [32, 32, 32], "batch_size": 2, "steps": 4, "validate_every": 100,
        "checkpoint_every": 100, "seed": 9, "use_amp": False,
        "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "optimizer": {"name": "adamw", "learning_rate": 0.01, "warmup_steps": 2},
        "augment": {"intensity": {}},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                      "phantom": {"count": 2, "seed": 11, "spacing_mm": SPACING}}],
    }
    if ct_folder is not None:
        data["datasets"] = [*data["datasets"], {"name": "unl", "kind": "images", "root": str(ct_folder),
                                                "cases": {"p77": {"image": "p77_ct.nii.gz"}}}]
        data["consistency"] = {"weight": 1.0, "ramp_up_steps": 2, "ema_decay": 0.9, "batch_size": 1}
    return data | overrides


def _config(tmp_path: Path, ct_folder: Path | None, **overrides: object):
    return training_config_from_dict(_config_dict(tmp_path, ct_folder, **overrides), tmp_path, source="test")


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_tiny_run_logs_a_finite_positive_term_with_its_ramped_weight(tmp_path: Path, unlabelled_ct: Path) -> None:
    config = _config(tmp_path, unlabelled_ct, steps=3)
    run_training(config, device="cpu")
    history = _history(config.output_dir)
    values = [h["consistency_loss"] for h in history]
    assert all(math.isfinite(v) and v > 0 for v in values), values
    assert [h["consistency_weight"] for h in history] == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0])
    manifest = json.loads((config.output_dir / "final.json").read_text(encoding="utf-8"))
    assert manifest["training"]["config"]["consistency"]["weight"] == 1  # the shipped model is the student


@pytest.mark.usefixtures("one_torch_thread")
def test_with_weight_zero_the_student_is_the_run_without_the_term(tmp_path: Path, unlabelled_ct: Path) -> None:
    """The unlabelled patches share the student's forward pass, so this shows the term is exactly the only change."""
    with_term = training_config_from_dict(
        _config_dict(tmp_path / "zero", unlabelled_ct, consistency={"weight": 0.0, "ema_decay": 0.9}), tmp_path, "t")
    without = _config(tmp_path / "none", None)
    run_training(with_term, device="cpu")
    run_training(without, device="cpu")
    assert [h["loss"] for h in _history(with_term.output_dir)] == [h["loss"] for h in _history(without.output_dir)]
    a = load_file(str(with_term.output_dir / "final.safetensors"))
    b = load_file(str(without.output_dir / "final.safetensors"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert all(h["consistency_loss"] > 0 and h["consistency_weight"] == 0 for h in _history(with_term.output_dir))


def _teacher(run: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(run / "checkpoints" / "last" / "state.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("teacher.")}


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_restores_the_teacher_bit_exactly(tmp_path: Path, unlabelled_ct: Path) -> None:
    config = _config(tmp_path / "saved", unlabelled_ct, steps=6, checkpoint_every=3)
    cases = prepare_run_cases(config, skip_bad_cases=False)
    trainer = Trainer(config, cases.training, torch.device("cpu"), DistributedRun(), None, cases.unlabelled)
    for _ in range(2):
        trainer.train_step()
    folder = tmp_path / "point"
    save_resume_point(trainer, folder)
    restored = Trainer(config, cases.training, torch.device("cpu"), DistributedRun(), None, cases.unlabelled)
    assert restored.mean_teacher is not None and trainer.mean_teacher is not None
    before = {k: v.clone() for k, v in restored.mean_teacher.teacher.state_dict().items()}
    restored.load_state(folder)
    saved, loaded = trainer.mean_teacher.teacher.state_dict(), restored.mean_teacher.teacher.state_dict()
    assert any(not torch.equal(before[k], saved[k]) for k in saved)  # two steps moved it from the start
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    # and a run stopped at step 3 and resumed ends where the straight run ends, teacher and student
    straight = _config(tmp_path / "straight", unlabelled_ct, steps=6, checkpoint_every=3)
    run_training(straight, device="cpu")
    cancel = threading.Event()

    def stop_after_three(event: Progress) -> None:
        if event.stage == "train" and event.done >= 3:
            cancel.set()

    with pytest.raises(CancelledError):
        run_training(config, device="cpu", progress=stop_after_three, cancel=cancel)
    run_training(config, device="cpu", resume=True)
    a, b = _teacher(straight.output_dir), _teacher(config.output_dir)
    assert len(a) == len(build_network(config.network).state_dict()) and a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert np.allclose([h["consistency_loss"] for h in _history(straight.output_dir)],
                       [h["consistency_loss"] for h in _history(config.output_dir)], rtol=1e-4)
