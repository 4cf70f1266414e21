"""Mean-teacher consistency on CTs without labels (Tarvainen & Valpola 2017, "Mean teachers are better role models").

The teacher is the exponential moving average of the student's weights. It predicts on one view of an
unlabelled patch; the student, on another view of the same patch, is pulled toward it by the mean squared
difference of their class probabilities (sigmoid for the multi-label losses, the softmax's foreground
channels for ``mc``), with a weight ramped up as exp(-5 (1 - t/T)^2) (Laine & Aila 2017) so that the term
does not drown the supervised loss while the teacher is still poor. No label is invented: the unlabelled
cases carry class weight 0 everywhere and never enter the supervised loss.

The two views share the geometry (one draw of the spatial augmentation, so their voxels correspond and
nothing needs warping back) and differ in intensity: each view has its own window and its own draw of the
intensity set, applied after the spatial transform. The liver-enhancement shift (another contrast phase)
needs a liver: the teacher's whole liver, decoded as inference decodes, marks it in the student's view,
while the teacher's view gets no liver shift. So the student learns to give a phase-shifted liver the
segmentation that the teacher gives the unshifted one.

The sampler and the generator of the views are seeded apart from the supervised ones, so the supervised
stream of a run is the same with and without the term.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from lvt.errors import InputError
from lvt.segment.network import UNet, probabilities_from_logits
from lvt.segment.network_config import TARGET_OF_LOSS, HeadName
from lvt.segment.postprocess import decode_masks, whole_liver_mask
from lvt.train.augment import draw_augment_params, network_input, resample_boxes
from lvt.train.config import ConsistencyConfig, TrainingConfig
from lvt.train.data.cache import CachedCase
from lvt.train.data.prepare import dataset_weights
from lvt.train.distributed import DistributedRun
from lvt.train.sampling import PatchSampler

# Offsets from the config seed of the unlabelled sampler and of the views' generator (the loop uses +0, +1).
SAMPLER_SEED_OFFSET = 2
VIEWS_SEED_OFFSET = 3
_TEACHER_PREFIX = "teacher."


def ramp_weight(step: int, settings: ConsistencyConfig) -> float:
    """The term's weight at ``step`` (0-based): weight * exp(-5 (1 - t/T)^2) for t < T, then the weight."""
    if step >= settings.ramp_up_steps:
        return settings.weight
    phase = 1.0 - step / settings.ramp_up_steps
    return settings.weight * math.exp(-5.0 * phase * phase)


def consistency_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, head: HeadName) -> torch.Tensor:
    """Mean squared difference between the student's class probabilities and the teacher's (B, 3, *spatial)."""
    student = probabilities_from_logits(student_logits.float(), head)
    return ((student - teacher_probabilities.float()) ** 2).mean()


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """teacher <- teacher + (1 - decay) (student - teacher), weights and float buffers; other buffers copied."""
    source = student.state_dict()
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            value.lerp_(source[name].to(value.dtype), 1.0 - decay)
        else:
            value.copy_(source[name])


@dataclass(frozen=True)
class Views:
    """One step's unlabelled patches: the student's input and the teacher's probabilities on the other view."""

    student_input: torch.Tensor
    teacher_probabilities: torch.Tensor


class MeanTeacher:
    """The teacher network, the unlabelled patch sampler and the random stream of the views."""

    def __init__(self, config: TrainingConfig, student: UNet, cases: list[CachedCase],
                 context_zyx: tuple[int, int, int], device: torch.device, ddp: DistributedRun) -> None:
        assert config.consistency is not None
        self.config, self.settings, self.device, self.ddp = config, config.consistency, device, ddp
        if not cases:
            raise InputError(config.source or None, "consistency: no unlabelled case is left to draw from")
        if self.settings.batch_size % ddp.world_size:
            raise ValueError(f"consistency.batch_size {self.settings.batch_size} must be divisible by the "
                             f"{ddp.world_size} processes")
        self.teacher = copy.deepcopy(student).requires_grad_(False).eval()
        self.teacher.deep_supervision = False
        self.sampler = PatchSampler(cases, context_zyx, 0.0, config.seed + SAMPLER_SEED_OFFSET,
                                    dataset_weights(config.unlabelled_datasets), inside_body=True)
        self.generator = torch.Generator().manual_seed(config.seed + VIEWS_SEED_OFFSET)

    def views(self, autocast: contextlib.AbstractContextManager) -> Views:
        """Draw this process's share of the unlabelled patches, run the teacher on its view, make the student's."""
        size, augment = self.settings.batch_size, replace(self.config.augment, intensity=self.settings.intensity)
        batch = self.sampler.sample(size)
        student = draw_augment_params(size, augment, self.config.window, self.generator)
        teacher = replace(draw_augment_params(size, augment, self.config.window, self.generator),
                          matrices=student.matrices)
        local = size // self.ddp.world_size
        share = slice(self.ddp.rank * local, (self.ddp.rank + 1) * local)
        hu = resample_boxes(torch.from_numpy(batch.hu[share]).to(self.device), student.matrices[share],
                            self.config.patch_size_zyx)
        no_liver = torch.zeros((local, *hu.shape[2:]), dtype=torch.bool, device=self.device)
        with torch.no_grad(), autocast:
            logits = self.teacher(network_input(hu, no_liver, teacher.select(share)))
        probabilities = probabilities_from_logits(logits.float(), self.config.network.head)
        liver = self._whole_liver(probabilities)
        return Views(network_input(hu, liver, student.select(share)), probabilities)

    def _whole_liver(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(B, *spatial) bool: the whole liver of each sample, decoded as inference decodes the model's target."""
        target = TARGET_OF_LOSS[self.config.loss]
        masks = [whole_liver_mask(decode_masks(p, target), target) for p in probabilities.cpu().numpy()]
        return torch.from_numpy(np.stack(masks)).to(self.device)

    def loss(self, student_logits: torch.Tensor, views: Views, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted term to add to the supervised loss, and its value and weight for the metrics."""
        weight = ramp_weight(step, self.settings)
        value = consistency_loss(student_logits, views.teacher_probabilities, self.config.network.head)
        return weight * value, {"consistency_loss": float(value.detach()), "consistency_weight": weight}

    def update(self, student: torch.nn.Module) -> None:
        """Move the teacher toward the student after an optimiser step."""
        ema_update(self.teacher, student, self.settings.ema_decay)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Teacher weights and generator (tensors), sampler state (JSON): what a resume needs."""
        tensors = {_TEACHER_PREFIX + name: value for name, value in self.teacher.state_dict().items()}
        tensors["consistency_generator"] = self.generator.get_state()
        return tensors, {"consistency_sampler": self.sampler.state_dict()}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore :meth:`state` exactly."""
        weights = {name[len(_TEACHER_PREFIX):]: value for name, value in tensors.items()
                   if name.startswith(_TEACHER_PREFIX)}
        self.teacher.load_state_dict(weights)
        self.generator.set_state(tensors["consistency_generator"])
        self.sampler.load_state_dict(meta["consistency_sampler"])
