"""The U-Net's architecture as plain data: what a training config and a model manifest record.

Kept apart from :mod:`lvt.segment.network` so that reading a training config does not load torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from lvt.labels import NUM_CLASSES

NormName = Literal["instance", "batch"]
HeadName = Literal["sigmoid", "softmax"]
# What the network was trained to output (METHOD.md, Losses): multi-hot ML, exclusive MLx (both sigmoid), MC (softmax).
TargetKind = Literal["ml", "mlx", "mc"]
HEAD_OF_TARGET: dict[str, HeadName] = {"ml": "sigmoid", "mlx": "sigmoid", "mc": "softmax"}
# The training losses (lvt.train.losses) and the target kind each one teaches: the combined Dice + BCE +
# focal-Tversky loss trains the same multi-hot sigmoid head as ML, so its models decode as ML.
TARGET_OF_LOSS: dict[str, TargetKind] = {"ml": "ml", "mlx": "mlx", "mc": "mc", "ml_dice_bce_ft": "ml"}


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the U-Net. Scalars are per stage; lists have one entry per stage."""

    features_per_stage: tuple[int, ...] = (16, 32, 64, 128, 192)
    convs_per_stage: int = 2
    convs_per_decoder_stage: int = 2
    norm: NormName = "instance"
    residual_encoder: bool = False
    num_classes: int = NUM_CLASSES
    head: HeadName = "sigmoid"
    deep_supervision_levels: int = 3
    in_channels: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features_per_stage", tuple(int(f) for f in self.features_per_stage))
        if len(self.features_per_stage) < 2 or min(self.features_per_stage) < 1:
            raise ValueError(f"features_per_stage needs >= 2 positive entries, got {self.features_per_stage}")
        if self.norm not in ("instance", "batch"):
            raise ValueError(f"norm must be 'instance' or 'batch', got {self.norm!r}")
        if self.head not in ("sigmoid", "softmax"):
            raise ValueError(f"head must be 'sigmoid' or 'softmax', got {self.head!r}")
        if not 1 <= self.deep_supervision_levels <= len(self.features_per_stage) - 1:
            raise ValueError(
                f"deep_supervision_levels must be in 1..{len(self.features_per_stage) - 1}, "
                f"got {self.deep_supervision_levels}"
            )
        if min(self.convs_per_stage, self.convs_per_decoder_stage) < 1:
            raise ValueError("convs_per_stage and convs_per_decoder_stage must be >= 1")

    @property
    def num_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def out_channels(self) -> int:
        """Sigmoid heads have one channel per class; softmax adds the background channel."""
        return self.num_classes + (1 if self.head == "softmax" else 0)

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this (one factor 2 per downsampling)."""
        return 2 ** (self.num_stages - 1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["features_per_stage"] = list(self.features_per_stage)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known)
