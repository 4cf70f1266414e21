"""Training configuration: one YAML/JSON file, validated once into frozen dataclasses.

Strict, so a long run fails before any work starts instead of training with a silently ignored
setting: an unknown field anywhere (a typo such as ``feature_per_stage``), a missing required one, an
invalid value or an invalid dataset spec is an :class:`InputError` naming the config file and the field.
Torch-free (network and augmentation settings are plain data), so a bad config is reported without loading it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lvt.errors import InputError
from lvt.segment.network_config import TARGET_OF_LOSS, NetworkConfig
from lvt.segment.window import RandomWindowing, Window
from lvt.train.data.specs import SPEC_FIELDS, DatasetSpec, read_yaml
from lvt.train.known_fields import unknown_fields_problem

if TYPE_CHECKING:
    from lvt.train.losses import LossName

# Learning rate and weight decay when the config gives none: the ablations' AdamW, nnU-Net's SGD.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "adamw": {"learning_rate": 1e-3, "weight_decay": 1e-2},
    "sgd": {"learning_rate": 1e-2, "weight_decay": 3e-5},
}


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW + cosine decay with warm-up (ablations) or SGD (Nesterov) + polynomial decay (final model).

    ``learning_rate`` and ``weight_decay`` left at None take the chosen optimizer's defaults
    (:data:`OPTIMIZER_DEFAULTS`): SGD gets nnU-Net's 1e-2 and 3e-5, with momentum 0.99.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.99
    warmup_steps: int = 100
    schedule: Literal["cosine", "poly"] = "cosine"
    gradient_clip_norm: float = 12.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_DEFAULTS:
            raise ValueError(f"optimizer.name must be 'adamw' or 'sgd', got {self.name!r}")
        for key, default in OPTIMIZER_DEFAULTS[self.name].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        if self.schedule not in ("cosine", "poly"):
            raise ValueError(f"optimizer.schedule must be 'cosine' or 'poly', got {self.schedule!r}")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or self.gradient_clip_norm <= 0:
            raise ValueError("learning_rate and gradient_clip_norm must be > 0 and warmup_steps >= 0")


@dataclass(frozen=True)
class IntensityAugment:
    """Intensity augmentation (``lvt.train.intensity``): per transform (probability, (low, high)).

    Defaults follow nnU-Net's probabilities and ranges, expressed in HU where nnU-Net works on
    normalised values: brightness as a shift of +-30 HU (about +-0.12 of the default 250 HU window),
    contrast 0.75-1.25 about the patch mean, Gaussian noise up to 30 HU sd (a low-dose scan),
    blur sigma 0.5-1 voxel, low resolution 0.5-1, gamma 0.7-1.5. ``liver_shift_hu`` moves the liver's
    enhancement against the other organs by up to +-40 HU (phase differences, METHOD.md's HU table).
    """

    shift_hu: tuple[float, tuple[float, float]] = (0.15, (-30.0, 30.0))
    contrast: tuple[float, tuple[float, float]] = (0.15, (0.75, 1.25))
    noise_hu: tuple[float, tuple[float, float]] = (0.15, (0.0, 30.0))
    blur_voxels: tuple[float, tuple[float, float]] = (0.2, (0.5, 1.0))
    resolution: tuple[float, tuple[float, float]] = (0.25, (0.5, 1.0))
    gamma: tuple[float, tuple[float, float]] = (0.3, (0.7, 1.5))
    liver_shift_hu: tuple[float, tuple[float, float]] = (0.3, (-40.0, 40.0))

    def __post_init__(self) -> None:
        for name in ("shift_hu", "contrast", "noise_hu", "blur_voxels", "resolution", "gamma", "liver_shift_hu"):
            probability, (low, high) = getattr(self, name)
            object.__setattr__(self, name, (float(probability), (float(low), float(high))))
            if not 0.0 <= probability <= 1.0 or low > high:
                raise ValueError(f"intensity.{name} must be [probability, [low, high]], got {getattr(self, name)}")
        if self.contrast[1][0] <= 0 or self.gamma[1][0] <= 0 or self.noise_hu[1][0] < 0:
            raise ValueError("intensity: contrast and gamma must be > 0 and noise_hu >= 0")
        if self.blur_voxels[1][0] < 0 or not 0 < self.resolution[1][0] <= self.resolution[1][1] <= 1:
            raise ValueError("intensity: blur_voxels must be >= 0 and resolution within (0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation probabilities and ranges (defaults: the paper's).

    Rotation turns about all three axes, each angle U(-max, max); the context read around a patch
    grows with ``scale_range[1]`` and ``rotation_max_degrees`` (``lvt.train.augment.context_size``).
    Random windowing: see ``lvt.segment.window`` for the reading of the paper's ranges and total p.
    """

    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    rotation_probability: float = 0.2
    rotation_max_degrees: float = 30.0
    flip_probability: float = 0.5
    random_windowing: RandomWindowing | None = field(default_factory=RandomWindowing)
    intensity: IntensityAugment | None = None

    def __post_init__(self) -> None:
        for name in ("scale_probability", "rotation_probability", "flip_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if not 0.0 <= self.rotation_max_degrees <= 180.0:
            raise ValueError(f"rotation_max_degrees must be in [0, 180], got {self.rotation_max_degrees}")


@dataclass(frozen=True)
class ConsistencyConfig:
    """Mean-teacher consistency on unlabelled CTs (``lvt.train.consistency``).

    ``weight`` is reached after a sigmoid ramp-up over ``ramp_up_steps``; the teacher is the exponential
    moving average of the student with ``ema_decay``; ``batch_size`` unlabelled patches per step; the two
    views differ by ``intensity`` (default: nnU-Net's set plus the liver-enhancement shift) and the window.
    """

    weight: float = 1.0
    ramp_up_steps: int = 0
    ema_decay: float = 0.99
    batch_size: int = 1
    intensity: IntensityAugment | None = field(default_factory=IntensityAugment)

    def __post_init__(self) -> None:
        counts = (self.ramp_up_steps, self.batch_size)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in counts) or counts[0] < 0 or counts[1] < 1:
            raise ValueError(f"consistency: ramp_up_steps >= 0 and batch_size >= 1 must be whole numbers, got {counts}")
        if not (0.0 <= self.weight < float("inf") and 0.0 <= self.ema_decay <= 1.0):
            raise ValueError(f"consistency: weight must be finite and >= 0 and ema_decay in [0, 1], "
                             f"got {self.weight!r} and {self.ema_decay!r}")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the mixture: its validated spec and training extras.

    ``synthetic_tumor_variants`` > 0 adds that many copies of each case with synthetic tumors painted
    into its liver (class weights liver + tumor), for real CTs that only have liver labels.
    ``written`` is the entry as the config wrote it (a built-in spec stays a name, a root stays as
    typed): the provenance saved with the model.
    """

    spec: DatasetSpec
    synthetic_tumor_variants: int = 0
    written: dict = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"spec": self.written, "synthetic_tumor_variants": self.synthetic_tumor_variants}


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run needs; saved into each checkpoint's manifest as provenance."""

    datasets: tuple[DatasetEntry, ...]
    output_dir: Path
    validation: tuple[DatasetEntry, ...] = ()
    cache_dir: Path | None = None
    init_weights: Path | None = None  # a model manifest (.json) to start from (fine-tuning); same network
    model_name: str = "lvt_model"
    model_version: str = "0.1.0"
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    patch_size_zyx: tuple[int, int, int] = (96, 96, 96)
    loss: LossName = "ml"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    consistency: ConsistencyConfig | None = None
    window: Window = field(default_factory=Window)
    batch_size: int = 2
    steps: int = 1000
    validate_every: int = 250
    checkpoint_every: int = 250
    foreground_probability: float = 0.333
    seed: int = 0
    use_amp: bool = True
    cache_workers: int = 1
    folds: int | None = None
    fold: int | None = None
    source: str = ""
    base_dir: Path = Path(".")

    def __post_init__(self) -> None:
        if self.loss not in TARGET_OF_LOSS:
            raise ValueError(f"loss must be one of {', '.join(TARGET_OF_LOSS)}, got {self.loss!r}")
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
        _check_fold(self.fold, self.folds, bool(self.validation))
        _check_unlabelled(self)

    @property
    def labelled_datasets(self) -> tuple[DatasetEntry, ...]:
        """The datasets of the supervised loss (and of the cross-validation folds)."""
        return tuple(entry for entry in self.datasets if not entry.spec.is_unlabelled)

    @property
    def unlabelled_datasets(self) -> tuple[DatasetEntry, ...]:
        """The CTs without labels: only the consistency term sees them."""
        return tuple(entry for entry in self.datasets if entry.spec.is_unlabelled)

    @property
    def resolved_cache_dir(self) -> Path:
        """Shared by all folds of a cross-validation: each case is cached once."""
        return self.cache_dir or self.output_dir / "cache"

    @property
    def run_dir(self) -> Path:
        """Where this run writes: ``output_dir``, or its ``fold_<k>`` subfolder when training one fold."""
        return self.output_dir if self.fold is None else self.output_dir / f"fold_{self.fold}"

    def to_dict(self) -> dict:
        """JSON-ready form (for manifests and resume checks)."""
        return json.loads(json.dumps(_plain(self), default=str))


def _check_fold(fold: Any, folds: Any, has_validation: bool) -> None:
    """Cross-validation settings: ``folds`` >= 2, ``fold`` in 0..folds-1, the held-out fold as the only validation."""
    for name, value in (("folds", folds), ("fold", fold)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    if folds is not None and folds < 2:
        raise ValueError(f"folds must be >= 2 (cross-validation), got {folds}")
    if fold is None:
        return
    if folds is None:
        raise ValueError(f"fold {fold} needs the number of folds (folds: N in the config, or --folds N)")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1} for {folds} folds, got {fold}")
    if has_validation:
        raise ValueError("with a fold, the held-out fold is the validation set; remove the config's validation list")


def _check_unlabelled(config: TrainingConfig) -> None:
    """Unlabelled CTs feed only the consistency term: it must be set, and they never validate or get tumors."""
    unlabelled = [entry.spec.name for entry in config.unlabelled_datasets]
    if any(entry.spec.is_unlabelled for entry in config.validation):
        raise ValueError("validation: an unlabelled dataset (kind 'images') has no labels to validate against")
    if unlabelled and config.consistency is None:
        raise ValueError(f"datasets: {unlabelled[0]!r} is unlabelled (kind 'images') and would do nothing without "
                         "a consistency section")
    if config.consistency is not None and not unlabelled:
        raise ValueError("consistency: needs an unlabelled training dataset (kind 'images') to draw patches from")
    if not config.labelled_datasets:
        raise ValueError("datasets: at least one labelled training dataset is needed beside the unlabelled ones")
    painted = next((e.spec.name for e in config.unlabelled_datasets if e.synthetic_tumor_variants), None)
    if painted is not None:
        raise ValueError(f"datasets: {painted!r} is unlabelled; synthetic_tumor_variants needs a liver label")


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


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


_SETTABLE_FIELDS = _field_names(TrainingConfig) - {"source", "base_dir"}
_ENTRY_FIELDS = SPEC_FIELDS | {"builtin", "synthetic_tumor_variants"}


def _checked(section: Any, where: str, known: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of one section once it is a mapping with no unknown field and every required one."""
    prefix = f"{where}: " if where else ""
    if not isinstance(section, Mapping):
        raise ValueError(f"{prefix}expected a mapping of fields, got {section!r}")
    problem = unknown_fields_problem(section, known)
    if problem:
        raise ValueError(prefix + problem)
    missing = [key for key in required if key not in section]
    if missing:
        raise ValueError(f"{prefix}missing required field(s) {', '.join(missing)}")
    return dict(section)


def _tuples(section: dict[str, Any]) -> dict[str, Any]:
    """YAML lists as the tuples the frozen configs hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in section.items()}


def _entries(items: Any, key: str, base_dir: Path, source: str) -> tuple[DatasetEntry, ...]:
    """The datasets of one list, each spec validated now (kind, fields, label meaning); names unique."""
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list of dataset specs")
    entries = []
    for index, item in enumerate(items):
        written = _checked(item, f"{key}[{index}]", _ENTRY_FIELDS)
        variants = int(written.pop("synthetic_tumor_variants", 0))
        spec = DatasetSpec.from_dict(written, source=source, base_dir=base_dir)
        entries.append(DatasetEntry(spec, variants, written))
    names = [entry.spec.name for entry in entries]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ValueError(f"{key}: dataset name {twice!r} is used twice; names must be unique (they prefix case names)")
    return tuple(entries)


def _network(section: Any) -> NetworkConfig:
    return NetworkConfig.from_dict(_checked(section, "network", _field_names(NetworkConfig) - {"extra"}))


def _optimizer(section: Any) -> OptimizerConfig:
    return OptimizerConfig(**_checked(section, "optimizer", _field_names(OptimizerConfig)))


def _window(section: Any) -> Window:
    return Window.from_dict(_checked(section, "window", _field_names(Window), required=("level_hu", "width_hu")))


def _augment(section: Any) -> AugmentConfig:
    """Augmentation settings; ``random_windowing: null`` turns random windowing off."""
    data = _tuples(_checked(section, "augment", _field_names(AugmentConfig)))
    windowing = data.get("random_windowing")
    if windowing is not None:
        known = _field_names(RandomWindowing)
        data["random_windowing"] = RandomWindowing(**_tuples(_checked(windowing, "augment.random_windowing", known)))
    if data.get("intensity") is not None:
        data["intensity"] = _intensity(data["intensity"], "augment.intensity")
    return AugmentConfig(**data)


def _intensity(section: Any, where: str) -> IntensityAugment:
    return IntensityAugment(**_checked(section, where, _field_names(IntensityAugment)))


def _consistency(section: Any) -> ConsistencyConfig | None:
    """The mean-teacher settings; ``consistency: null`` (or no section) turns the term off."""
    if section is None:
        return None
    data = _checked(section, "consistency", _field_names(ConsistencyConfig))
    if data.get("intensity") is not None:
        data["intensity"] = _intensity(data["intensity"], "consistency.intensity")
    return ConsistencyConfig(**data)


_SECTIONS = {"network": _network, "optimizer": _optimizer, "augment": _augment, "window": _window,
             "consistency": _consistency}


def _arguments(data: Any, base_dir: Path, source: str) -> dict[str, Any]:
    """TrainingConfig's arguments from the file's mapping; paths resolved, sections and datasets built."""
    data = _checked(data, "", _SETTABLE_FIELDS, required=("datasets",))
    for key in ("output_dir", "cache_dir", "init_weights"):
        if data.get(key) is not None:
            data[key] = (base_dir / data[key]).resolve()
    data.setdefault("output_dir", (base_dir / "runs" / str(data.get("model_name", "lvt_model"))).resolve())
    for key in ("datasets", "validation"):
        if key in data:
            data[key] = _entries(data[key], key, base_dir, source)
    for key, build in _SECTIONS.items():
        if key in data:
            data[key] = build(data[key])
    for key in ("spacing_mm", "patch_size_zyx"):
        if key in data:
            data[key] = tuple(data[key])
    return data


def training_config_from_dict(data: Mapping[str, Any], base_dir: Path, source: str) -> TrainingConfig:
    """Build and validate a config; relative paths resolve against ``base_dir`` (the file's folder).

    Raises:
        InputError: naming ``source`` and the field: an unknown or missing field, an invalid value,
            or an invalid dataset spec (e.g. a ``kind`` that is not one of the known kinds).
    """
    where = source or "training config"
    try:
        return TrainingConfig(**_arguments(data, base_dir, where), source=source, base_dir=base_dir)
    except InputError:
        raise
    except (TypeError, ValueError) as error:
        raise InputError(where, f"invalid training config: {error}") from error


def load_training_config(path: Path | str, **overrides: Any) -> TrainingConfig:
    """Read a YAML or JSON training config; ``overrides`` replace top-level fields (CLI options).

    Raises:
        InputError: the file is missing, unparsable or invalid (the message names the field).
    """
    path = Path(path)
    data = read_yaml(path, "training config")
    if not isinstance(data, dict):
        raise InputError(path, "a training config must be a mapping of fields")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return training_config_from_dict(data, path.resolve().parent, source=str(path))
