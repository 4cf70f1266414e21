"""Training configuration: one YAML/JSON file, validated once into frozen dataclasses.

Errors name the file and the field, so a typo in a long run's config fails before any work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from lvt.errors import InputError
from lvt.segment.network import NetworkConfig
from lvt.segment.window import RandomWindowing, Window
from lvt.train.augment import AugmentConfig
from lvt.train.losses import LossName


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW + cosine decay with warm-up (ablations) or SGD + polynomial decay (final model)."""

    name: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.99
    warmup_steps: int = 100
    schedule: Literal["cosine", "poly"] = "cosine"
    gradient_clip_norm: float = 12.0

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "sgd"):
            raise ValueError(f"optimizer.name must be 'adamw' or 'sgd', got {self.name!r}")
        if self.schedule not in ("cosine", "poly"):
            raise ValueError(f"optimizer.schedule must be 'cosine' or 'poly', got {self.schedule!r}")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or self.gradient_clip_norm <= 0:
            raise ValueError("learning_rate and gradient_clip_norm must be > 0 and warmup_steps >= 0")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the mixture: its spec (as a dict, validated by lvt.train.data.specs) and training extras.

    ``synthetic_tumor_variants`` > 0 adds that many copies of each case with synthetic tumors painted
    into its liver (class weights liver + tumor), for real CTs that only have liver labels.
    """

    spec: dict
    synthetic_tumor_variants: int = 0


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run needs; saved into each checkpoint's manifest as provenance."""

    datasets: tuple[DatasetEntry, ...]
    output_dir: Path
    validation: tuple[DatasetEntry, ...] = ()
    cache_dir: Path | None = None
    model_name: str = "lvt_model"
    model_version: str = "0.1.0"
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    patch_size_zyx: tuple[int, int, int] = (96, 96, 96)
    loss: LossName = "ml"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    window: Window = field(default_factory=Window)
    batch_size: int = 2
    steps: int = 1000
    validate_every: int = 250
    checkpoint_every: int = 250
    foreground_probability: float = 0.333
    seed: int = 0
    use_amp: bool = True
    cache_workers: int = 1
    source: str = ""
    base_dir: Path = Path(".")

    def __post_init__(self) -> None:
        if self.loss not in ("ml", "mlx", "mc"):
            raise ValueError(f"loss must be 'ml', 'mlx' or 'mc', got {self.loss!r}")
        head = "softmax" if self.loss == "mc" else "sigmoid"
        if self.network.head != head:
            object.__setattr__(self, "network", replace(self.network, head=head))
        if not self.datasets:
            raise ValueError("datasets: at least one training dataset is needed")
        if min(self.batch_size, self.steps, self.validate_every, self.checkpoint_every) < 1:
            raise ValueError("batch_size, steps, validate_every and checkpoint_every must be >= 1")
        if any(p % self.network.divisor for p in self.patch_size_zyx):
            raise ValueError(f"patch_size_zyx {self.patch_size_zyx} must be multiples of {self.network.divisor}")
        if not 0.0 <= self.foreground_probability <= 1.0:
            raise ValueError("foreground_probability must be in [0, 1]")

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.output_dir / "cache"

    def to_dict(self) -> dict:
        """JSON-ready form (for manifests and resume checks)."""
        return json.loads(json.dumps(_plain(self), default=str))


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict") and not isinstance(value, TrainingConfig):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _entries(items: Any, key: str) -> tuple[DatasetEntry, ...]:
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list of dataset specs")
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"{key}: each dataset must be a mapping, got {item!r}")
        spec = dict(item)
        variants = int(spec.pop("synthetic_tumor_variants", 0))
        entries.append(DatasetEntry(spec=spec, synthetic_tumor_variants=variants))
    return tuple(entries)


def _augment(data: dict) -> AugmentConfig:
    data = dict(data)
    windowing = data.pop("random_windowing", {})
    random_windowing = None if windowing is None else RandomWindowing(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in windowing.items()
    })
    return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()},
                         random_windowing=random_windowing)


def training_config_from_dict(data: dict, base_dir: Path, source: str) -> TrainingConfig:
    """Build and validate a config; relative paths resolve against ``base_dir`` (the file's folder)."""
    data = dict(data)
    known = {f.name for f in fields(TrainingConfig)}
    settable = known - {"source", "base_dir"}
    unknown = sorted(set(data) - settable)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; known fields are {sorted(settable)}")
    for key in ("output_dir", "cache_dir"):
        if data.get(key) is not None:
            data[key] = (base_dir / data[key]).resolve()
    data.setdefault("output_dir", (base_dir / "runs" / str(data.get("model_name", "lvt_model"))).resolve())
    data["datasets"] = _entries(data.get("datasets"), "datasets")
    data["validation"] = _entries(data.get("validation", []), "validation")
    for key, build in (("network", NetworkConfig.from_dict), ("optimizer", lambda d: OptimizerConfig(**d)),
                       ("augment", _augment), ("window", Window.from_dict)):
        if key in data:
            data[key] = build(data[key])
    for key in ("spacing_mm", "patch_size_zyx"):
        if key in data:
            data[key] = tuple(data[key])
    return TrainingConfig(**data, source=source, base_dir=base_dir)


def load_training_config(path: Path | str, **overrides: Any) -> TrainingConfig:
    """Read a YAML or JSON training config; ``overrides`` replace top-level fields (CLI options).

    Raises:
        InputError: the file is missing, unparsable or invalid (the message names the field).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "training config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid YAML/JSON: {error}") from error
    if not isinstance(data, dict):
        raise InputError(path, "a training config must be a mapping of fields")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return training_config_from_dict(data, path.resolve().parent, source=str(path))
    except (TypeError, ValueError) as error:
        raise InputError(path, f"invalid training config: {error}") from error
