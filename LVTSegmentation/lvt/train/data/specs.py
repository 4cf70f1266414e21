"""Training datasets as data: where the files are, what the label values mean, which classes are annotated.

A public dataset (LiTS, MSD, 3D-IRCADb, TotalSegmentator, ...) or a user's own folder is a
:class:`DatasetSpec`, a few lines of YAML. The shipped specs in ``lvt/dataset_specs/`` describe the
published layouts, so a user who downloaded one only points ``root`` at the folder
(:func:`load_builtin_spec`). :func:`discover_cases` turns a spec into :class:`CaseRef` s without
reading voxels; :func:`load_case` reads one case into an image, per-class masks and the class weights
``w`` of METHOD.md (True where the dataset annotates the class). Masks come back as annotated, without
the anatomical hierarchy: the training loop decides (ML applies it, MLx does not).

A problem with one case (unreadable file, missing pair, label grid off the image grid, a label value
the spec does not know) raises :class:`CaseError` naming the case, so a long run can skip and list
the bad cases (:func:`load_cases` with ``skip_bad_cases``) instead of stopping at case 97 of 131.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lvt.errors import InputError
from lvt.grid import describe_grid, resample_like
from lvt.image import Image
from lvt.io import find_dicom_series, read_image, read_label_image
from lvt.labels import CLASS_KEYS, LIVER, NUM_CLASSES
from lvt.phantom import PhantomConfig, make_phantom
from lvt.progress import ProgressCallback, check_cancel, report

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("lits", "msd", "ircadb", "totalsegmentator", "pairs", "phantom")
OTHER_VALUES: tuple[str, ...] = ("error", "background")
BUILTIN_SPEC_DIR = Path(__file__).resolve().parent / "dataset_specs"
# Two grids whose voxel boxes agree this closely (mm) cover the same physical region.
GRID_TOLERANCE_MM = 0.01

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PATTERN_TOKENS = re.compile(r"(\{case\}|\*\*/|\*|\?)")


class CaseError(InputError):
    """One case of a dataset is unusable; the message names the case (and the file when there is one)."""

    def __init__(self, case_name: str, problem: str, path: str | Path | None = None) -> None:
        super().__init__(path, f"case {case_name}: {problem}")
        self.case_name = case_name
        self.case_problem = problem if path is None else f"{path}: {problem}"


@dataclass(frozen=True)
class StructureRule:
    """Per-structure masks (3D-IRCADb ``MASKS_DICOM/<structure>``, TotalSegmentator ``segmentations/``).

    Attributes:
        pattern: shell pattern matched, case-insensitively, against the structure's folder name or
            file name without extensions (``livertumor*`` matches ``livertumor01``).
        class_key: the LVT class the structure's voxels (> 0) belong to.
        intersect_liver: keep only the voxels inside the case's liver mask (portal and hepatic veins
            run outside the liver; only the intrahepatic part is an LVT vessel).
    """

    pattern: str
    class_key: str
    intersect_liver: bool = False

    def __post_init__(self) -> None:
        if not self.pattern or "/" in self.pattern:
            raise ValueError(f"field 'structure_map': pattern {self.pattern!r} must be a non-empty name")
        if self.class_key not in CLASS_KEYS:
            raise ValueError(
                f"field 'structure_map': {self.pattern!r} maps to {self.class_key!r}, "
                f"expected one of {', '.join(CLASS_KEYS)}"
            )


@dataclass(frozen=True)
class ListedCase:
    """One explicitly listed image/label pair (paths relative to the spec's root and label root)."""

    case_id: str
    image: str
    label: str


@dataclass(frozen=True)
class PhantomOptions:
    """Synthetic phantom cases (:mod:`lvt.phantom`): ``count`` cases with seeds ``seed, seed + 1, ...``.

    Attributes:
        count: number of cases.
        seed: seed of the first case.
        spacing_mm: voxel size of the rendered CT.
        settings: any other :class:`lvt.phantom.PhantomConfig` field (phase, n_tumors, ...).
    """

    count: int = 8
    seed: int = 0
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "settings", {key: _as_tuples(value) for key, value in dict(self.settings).items()})
        for name, low in (("count", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"field 'phantom.{name}': must be a whole number >= {low}, got {value!r}")
        if len(self.spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ValueError(f"field 'phantom.spacing_mm': must be three positive numbers, got {self.spacing_mm}")
        try:
            self.config_for(self.seed)
        except (TypeError, ValueError) as error:
            raise ValueError(f"field 'phantom': {error}") from error

    def config_for(self, seed: int) -> PhantomConfig:
        """The phantom configuration of the case with this seed."""
        return PhantomConfig(seed=seed, spacing_mm=self.spacing_mm, **self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "seed": self.seed, "spacing_mm": list(self.spacing_mm), **self.settings}


def _as_tuples(value: Any) -> Any:
    """YAML lists as tuples (nested too), the form the frozen configs expect."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class DatasetSpec:
    """What one training dataset is on disk and what its labels mean.

    Attributes:
        name: dataset name, the prefix of its case names ("<name>/<case>").
        kind: reader and checks: "lits", "msd", "ircadb", "totalsegmentator", "pairs" or "phantom".
        annotated: which of (liver, vessel, tumor) the dataset labels: the class weights w.
        root: the folder that image paths (and label paths, unless ``label_root``) are relative to.
        label_root: a separate folder for the labels (HepaticVessel liver masks live apart).
        image_pattern: glob relative to ``root`` with one ``{case}`` placeholder (``**/`` allowed);
            may match a DICOM folder.
        label_pattern: the same for the label map, or for the folder of structure masks when
            ``structure_map`` is given.
        cases: explicit image/label pairs instead of patterns.
        exclude_cases: case ids never used (e.g. a held-out evaluation case).
        value_map: label value on disk -> LVT class keys; 0 is background.
        positive_is: classes of every value > 0 that ``value_map`` does not list (Couinaud segments).
        other_values: what a value outside the map means: "error" (a bad case) or "background".
        structure_map: per-structure mask rules, in order; the first matching rule wins.
        resample_label_to_image: a label on another grid covering the same physical region (e.g. a
            flipped axis) is resampled onto the image grid with nearest neighbour instead of rejected.
        weight: sampling weight of the dataset in the training mixture (> 0).
        phantom: options of kind "phantom".
        source: where the spec came from (config file), for messages; not part of its identity.
    """

    name: str
    kind: str
    annotated: tuple[bool, bool, bool]
    root: Path | None = None
    label_root: Path | None = None
    image_pattern: str = ""
    label_pattern: str = ""
    cases: tuple[ListedCase, ...] = ()
    exclude_cases: tuple[str, ...] = ()
    value_map: dict[int, tuple[str, ...]] = field(default_factory=dict)
    positive_is: tuple[str, ...] = ()
    other_values: str = "error"
    structure_map: tuple[StructureRule, ...] = ()
    resample_label_to_image: bool = False
    weight: float = 1.0
    phantom: PhantomOptions | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _normalise_spec(self)
        _validate_common(self)
        if self.kind == "phantom":
            _validate_phantom(self)
        else:
            _validate_files(self)
            _validate_label_meaning(self)

    def __hash__(self) -> int:
        # value_map is a dict, so the generated hash would fail; equal specs share these fields.
        return hash((self.name, self.kind, str(self.root)))

    @classmethod
    def from_dict(cls, data: Any, source: str, base_dir: str | Path | None = None) -> DatasetSpec:
        """Build and validate a spec from its YAML/JSON form.

        Args:
            data: the mapping (see :meth:`to_dict` for the fields). ``builtin: <name>`` starts from
                a shipped spec and overrides the fields given beside it (typically ``root``).
            source: the config file it came from, named in every error.
            base_dir: folder that relative ``root`` / ``label_root`` are resolved against (the
                config file's folder); None keeps them relative to the working directory.

        Raises:
            InputError: naming ``source``, the dataset and the field, for any invalid field.
        """
        if not isinstance(data, Mapping):
            raise InputError(source, f"a dataset spec must be a mapping of fields, got {type(data).__name__}")
        name = data.get("name", data.get("builtin", "?"))
        try:
            if "builtin" in data:
                data = _merged_with_builtin(data, base_dir)
            unknown = sorted(set(data) - _SPEC_FIELDS)
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(map(str, unknown))}; known fields: {', '.join(sorted(_SPEC_FIELDS))}"
                )
            return cls(**_spec_arguments(data, base_dir), source=source)
        except (ValueError, TypeError) as error:
            raise InputError(source, f"dataset {name!r}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML/JSON data; ``from_dict(spec.to_dict(), ...)`` gives an equal spec."""
        return {
            "name": self.name,
            "kind": self.kind,
            "annotated": list(self.annotated),
            "root": None if self.root is None else self.root.as_posix(),
            "label_root": None if self.label_root is None else self.label_root.as_posix(),
            "image_pattern": self.image_pattern,
            "label_pattern": self.label_pattern,
            "cases": {c.case_id: {"image": c.image, "label": c.label} for c in self.cases},
            "exclude_cases": list(self.exclude_cases),
            "value_map": {value: list(keys) for value, keys in sorted(self.value_map.items())},
            "positive_is": list(self.positive_is),
            "other_values": self.other_values,
            "structure_map": {
                rule.pattern: {"class": rule.class_key, "intersect_liver": rule.intersect_liver}
                for rule in self.structure_map
            },
            "resample_label_to_image": self.resample_label_to_image,
            "weight": self.weight,
            "phantom": None if self.phantom is None else self.phantom.to_dict(),
        }


_SPEC_FIELDS = frozenset(DatasetSpec.__dataclass_fields__) - {"source"}


@dataclass(frozen=True)
class CaseRef:
    """One case found on disk (nothing read yet); ``problem`` is set when discovery already saw it is bad."""

    name: str
    case_id: str
    spec: DatasetSpec
    image_path: Path | None = None
    label_path: Path | None = None
    phantom_seed: int | None = None
    problem: str | None = None

    @property
    def dataset(self) -> str:
        return self.spec.name


@dataclass(frozen=True, eq=False)
class LoadedCase:
    """A case in memory.

    Attributes:
        name: "<dataset>/<case>".
        image: the CT, float32 HU on its own grid.
        masks: (3, Z, Y, X) bool per-class masks (liver, vessel, tumor) on the image grid, as
            annotated: no hierarchy applied; a class the dataset does not annotate is all False.
        annotated: which classes the masks hold (the class weights w).
    """

    name: str
    image: Image
    masks: np.ndarray
    annotated: tuple[bool, bool, bool]

    def __post_init__(self) -> None:
        if self.masks.shape != (NUM_CLASSES, *self.image.array.shape) or self.masks.dtype != np.bool_:
            raise ValueError(
                f"{self.name}: masks must be bool of shape {(NUM_CLASSES, *self.image.array.shape)}, "
                f"got {self.masks.dtype} {self.masks.shape}"
            )


@dataclass(frozen=True)
class SkippedCase:
    """A case left out by ``skip_bad_cases``, and why."""

    name: str
    problem: str


# ---------------------------------------------------------------------------------------------
# Spec parsing and validation


def _spec_arguments(data: Mapping[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """Constructor arguments from the YAML form; raises ValueError naming the field."""
    for required in ("name", "kind"):
        if required not in data:
            raise ValueError(f"field {required!r}: required")
    arguments = {key: value for key, value in data.items() if key in _SIMPLE_FIELDS}
    kind = data.get("kind")
    default_annotated = [True] * NUM_CLASSES if kind == "phantom" else None
    arguments["annotated"] = _parse_annotated(data.get("annotated", default_annotated))
    arguments["root"] = _parse_folder(data.get("root"), base_dir, "root")
    arguments["label_root"] = _parse_folder(data.get("label_root"), base_dir, "label_root")
    arguments["cases"] = _parse_cases(data.get("cases") or {})
    arguments["exclude_cases"] = _parse_case_ids(data.get("exclude_cases") or [])
    arguments["value_map"] = _parse_value_map(data.get("value_map") or {})
    arguments["positive_is"] = _parse_class_list(data.get("positive_is"), "positive_is")
    arguments["structure_map"] = _parse_structure_map(data.get("structure_map") or {})
    if data.get("phantom") is not None:
        arguments["phantom"] = _parse_phantom(data["phantom"])
    return arguments


_SIMPLE_FIELDS = frozenset(
    {"name", "kind", "image_pattern", "label_pattern", "other_values", "resample_label_to_image", "weight"}
)


def _parse_annotated(raw: Any) -> tuple[bool, bool, bool]:
    if raw is None:
        raise ValueError("field 'annotated': required, e.g. [1, 0, 1] for liver and tumor (order liver, vessel, tumor)")
    values = list(raw) if isinstance(raw, (list, tuple)) else None
    if values is None or len(values) != NUM_CLASSES or any(v not in (0, 1) for v in values):
        raise ValueError(f"field 'annotated': expected three of 0/1 or true/false (liver, vessel, tumor), got {raw!r}")
    return tuple(bool(v) for v in values)  # type: ignore[return-value]


def _parse_folder(raw: Any, base_dir: str | Path | None, field_name: str) -> Path | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, (str, os.PathLike)):
        raise ValueError(f"field {field_name!r}: expected a folder path, got {raw!r}")
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return Path(os.path.normpath(path))


def _parse_cases(raw: Any) -> tuple[ListedCase, ...]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'cases': expected a mapping case id -> {{image: ..., label: ...}}, got {raw!r}")
    cases = []
    for case_id, paths in raw.items():
        if not isinstance(paths, Mapping) or set(paths) != {"image", "label"}:
            raise ValueError(f"field 'cases': case {case_id!r} needs exactly the keys 'image' and 'label'")
        cases.append(ListedCase(str(case_id), str(paths["image"]), str(paths["label"])))
    return tuple(cases)


def _parse_case_ids(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"field 'exclude_cases': expected a list of case ids, got {raw!r}")
    return tuple(str(case) for case in raw)


def _parse_value_map(raw: Any) -> dict[int, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'value_map': expected a mapping label value -> class key(s), got {raw!r}")
    value_map = {}
    for value, keys in raw.items():
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(value, (bool, float)) or str(number) != str(value).strip():
            raise ValueError(f"field 'value_map': key {value!r} is not a whole-number label value")
        value_map[number] = _parse_class_list(keys, f"value_map[{number}]")
    return value_map


def _parse_class_list(raw: Any, field_name: str) -> tuple[str, ...]:
    """A class key, a list of them, or nothing (background)."""
    if raw is None:
        return ()
    keys = [raw] if isinstance(raw, str) else raw
    if not isinstance(keys, (list, tuple)) or not all(isinstance(key, str) for key in keys):
        raise ValueError(f"field {field_name!r}: expected a class key or a list of them, got {raw!r}")
    return tuple(keys)


def _parse_structure_map(raw: Any) -> tuple[StructureRule, ...]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'structure_map': expected a mapping pattern -> class, got {raw!r}")
    rules = []
    for pattern, target in raw.items():
        if isinstance(target, str):
            target = {"class": target}
        if not isinstance(target, Mapping) or "class" not in target or set(target) - {"class", "intersect_liver"}:
            raise ValueError(
                f"field 'structure_map': {pattern!r} needs a class key or {{class: ..., intersect_liver: true}}"
            )
        rules.append(StructureRule(str(pattern), target["class"], bool(target.get("intersect_liver", False))))
    return tuple(rules)


def _parse_phantom(raw: Any) -> PhantomOptions:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'phantom': expected a mapping (count, seed, spacing_mm, ...), got {raw!r}")
    options = {key: raw[key] for key in ("count", "seed", "spacing_mm") if key in raw}
    settings = {key: value for key, value in raw.items() if key not in options}
    return PhantomOptions(**options, settings=settings)


def _normalise_spec(spec: DatasetSpec) -> None:
    """Tuples for sequences, a private copy of the value map, default phantom options."""
    object.__setattr__(spec, "annotated", tuple(bool(v) for v in spec.annotated))
    object.__setattr__(spec, "cases", tuple(spec.cases))
    object.__setattr__(spec, "exclude_cases", tuple(str(c) for c in spec.exclude_cases))
    object.__setattr__(spec, "value_map", {int(v): tuple(keys) for v, keys in dict(spec.value_map).items()})
    object.__setattr__(spec, "positive_is", tuple(spec.positive_is))
    object.__setattr__(spec, "structure_map", tuple(spec.structure_map))
    for name in ("root", "label_root"):
        if getattr(spec, name) is not None:
            object.__setattr__(spec, name, Path(getattr(spec, name)))
    if spec.kind == "phantom" and spec.phantom is None:
        object.__setattr__(spec, "phantom", PhantomOptions())


def _validate_common(spec: DatasetSpec) -> None:
    if not isinstance(spec.name, str) or not _NAME_PATTERN.fullmatch(spec.name):
        raise ValueError(f"field 'name': {spec.name!r} must be letters, digits, '_', '-' or '.' (no '/')")
    if spec.kind not in KINDS:
        raise ValueError(f"field 'kind': {spec.kind!r} is not one of {', '.join(KINDS)}")
    if len(spec.annotated) != NUM_CLASSES:
        raise ValueError(f"field 'annotated': expected three flags (liver, vessel, tumor), got {spec.annotated}")
    weight_ok = isinstance(spec.weight, (int, float)) and not isinstance(spec.weight, bool)
    if not weight_ok or not math.isfinite(spec.weight) or spec.weight <= 0:
        raise ValueError(f"field 'weight': must be a positive number, got {spec.weight!r}")
    object.__setattr__(spec, "weight", float(spec.weight))
    if not isinstance(spec.resample_label_to_image, bool):
        flag = spec.resample_label_to_image
        raise ValueError(f"field 'resample_label_to_image': must be true or false, got {flag!r}")


def _validate_phantom(spec: DatasetSpec) -> None:
    if not any(spec.annotated):
        raise ValueError("field 'annotated': a phantom dataset must annotate at least one class")
    file_fields = ("root", "label_root", "image_pattern", "label_pattern", "cases", "value_map", "structure_map")
    used = [name for name in file_fields if getattr(spec, name)]
    if used:
        raise ValueError(f"field {used[0]!r}: kind 'phantom' reads no files; remove {', '.join(used)}")


def _validate_files(spec: DatasetSpec) -> None:
    if spec.phantom is not None:
        raise ValueError(f"field 'phantom': only for kind 'phantom', not {spec.kind!r}")
    if spec.root is None:
        raise ValueError(f"field 'root': required for kind {spec.kind!r} (the folder holding the downloaded data)")
    if spec.cases and (spec.image_pattern or spec.label_pattern):
        raise ValueError("field 'cases': give either explicit cases or image_pattern/label_pattern, not both")
    if not spec.cases:
        for name in ("image_pattern", "label_pattern"):
            _validate_pattern(getattr(spec, name), name)
    if spec.kind == "ircadb" and not spec.structure_map:
        raise ValueError("field 'structure_map': required for kind 'ircadb' (one mask folder per structure)")


def _validate_pattern(pattern: str, field_name: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"field {field_name!r}: required (a glob relative to root with a {{case}} placeholder)")
    if "{case}" not in pattern:
        raise ValueError(f"field {field_name!r}: {pattern!r} has no {{case}} placeholder")
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise ValueError(f"field {field_name!r}: {pattern!r} must stay inside root (relative, no '..')")
    if any(ch in pattern.replace("{case}", "") for ch in "[]{}"):
        raise ValueError(f"field {field_name!r}: {pattern!r} may use only '*', '?', '**/' and {{case}} as wildcards")


def _validate_label_meaning(spec: DatasetSpec) -> None:
    """Exactly one way to read labels, and the classes it can produce are exactly the annotated ones."""
    uses_values = bool(spec.value_map or spec.positive_is)
    if uses_values == bool(spec.structure_map):
        raise ValueError(
            "field 'value_map': give value_map/positive_is for a label map, or structure_map for a folder "
            "of per-structure masks (exactly one of them)"
        )
    if spec.other_values not in OTHER_VALUES:
        raise ValueError(f"field 'other_values': {spec.other_values!r} is not one of {', '.join(OTHER_VALUES)}")
    for value, keys in spec.value_map.items():
        _check_class_keys(keys, f"value_map[{value}]")
        if value == 0 and keys:
            raise ValueError("field 'value_map': value 0 is background and maps to no class")
    _check_class_keys(spec.positive_is, "positive_is")
    produced = {key for keys in spec.value_map.values() for key in keys} | set(spec.positive_is)
    produced |= {rule.class_key for rule in spec.structure_map}
    if any(rule.intersect_liver for rule in spec.structure_map) and "liver" not in produced:
        raise ValueError("field 'structure_map': intersect_liver needs a rule that maps a structure to 'liver'")
    for key, is_annotated in zip(CLASS_KEYS, spec.annotated, strict=True):
        if is_annotated and key not in produced:
            raise ValueError(f"field 'annotated': {key} is marked annotated but no label value or structure maps to it")
        if key in produced and not is_annotated:
            raise ValueError(f"field 'annotated': labels map to {key} but {key} is not marked annotated")


def _check_class_keys(keys: tuple[str, ...], field_name: str) -> None:
    unknown = [key for key in keys if key not in CLASS_KEYS]
    if unknown:
        raise ValueError(f"field {field_name!r}: unknown class {unknown[0]!r}, expected one of {', '.join(CLASS_KEYS)}")


# ---------------------------------------------------------------------------------------------
# Spec files


def load_spec_file(path: str | Path) -> DatasetSpec:
    """Read one dataset spec from a YAML (or JSON) file; a relative root is relative to the file's folder.

    Raises:
        InputError: unreadable file, invalid YAML, or an invalid field (named).
    """
    path = Path(path)
    return DatasetSpec.from_dict(_read_yaml(path), source=str(path), base_dir=path.parent)


def builtin_spec_names() -> list[str]:
    """Names of the shipped specs (files in ``lvt/dataset_specs``)."""
    return sorted(path.stem for path in BUILTIN_SPEC_DIR.glob("*.yaml"))


def load_builtin_spec(name: str, *, root: str | Path | None = None, **overrides: Any) -> DatasetSpec:
    """A shipped spec for a public dataset layout, pointed at the user's download.

    Args:
        name: one of :func:`builtin_spec_names` (e.g. "lits", "msd_task03_liver", "ircadb").
        root: the downloaded dataset folder (relative to the working directory); required unless
            the shipped spec carries its own root.
        **overrides: any other spec field, e.g. ``label_root`` for the HepaticVessel liver masks,
            ``weight``, ``exclude_cases`` or a different ``label_pattern``.

    Raises:
        InputError: unknown name or an invalid field.
    """
    data = {"builtin": name, **overrides}
    if root is not None:
        data["root"] = root
    return DatasetSpec.from_dict(data, source=f"built-in spec {name!r}", base_dir=Path.cwd())


def _merged_with_builtin(data: Mapping[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """A shipped spec's fields overridden by ``data``; each relative folder resolves against its own file."""
    name = data["builtin"]
    path = BUILTIN_SPEC_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise ValueError(f"field 'builtin': no built-in spec named {name!r}; known: {', '.join(builtin_spec_names())}")
    merged = dict(_read_yaml(path))
    for key in ("root", "label_root"):
        merged[key] = _parse_folder(merged.get(key), path.parent, key)
        if data.get(key) is not None:
            merged[key] = _parse_folder(data[key], base_dir, key)
    merged.update((key, value) for key, value in data.items() if key not in ("builtin", "root", "label_root"))
    return merged


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(path, f"cannot read the dataset spec ({error.strerror or error})") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(path, f"is not valid YAML ({error})") from error


def spec_fingerprint(spec: DatasetSpec) -> str:
    """sha256 hex digest of the normalised spec: changes whenever anything that shapes the cases changes."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Discovery


def discover_cases(spec: DatasetSpec) -> list[CaseRef]:
    """All cases of one dataset, in natural order of their ids, without reading any voxels.

    A case with a missing or ambiguous file is still listed, with its ``problem`` set, so that
    :func:`load_case` reports it by name and ``skip_bad_cases`` can list it.

    Raises:
        InputError: the root is not a folder, an MSD folder has no dataset.json, or no file at all
            matches a pattern (the spec points at the wrong place).
    """
    if spec.kind == "phantom":
        assert spec.phantom is not None  # set by validation
        return [
            CaseRef(f"{spec.name}/{index:03d}", f"{index:03d}", spec, phantom_seed=spec.phantom.seed + index)
            for index in range(spec.phantom.count)
        ]
    root = _existing_folder(spec, spec.root, "root")
    label_root = _existing_folder(spec, spec.label_root, "label_root") if spec.label_root else root
    if spec.kind == "msd" and not (root / "dataset.json").is_file():
        raise InputError(
            root, f"dataset {spec.name!r}: not an MSD task folder (no dataset.json); point root at e.g. Task03_Liver"
        )
    if spec.cases:
        listed = [case for case in spec.cases if case.case_id not in spec.exclude_cases]
        return [_listed_ref(spec, case, root, label_root) for case in listed]
    return _pattern_refs(spec, root, label_root)


def discover_datasets(specs: Sequence[DatasetSpec]) -> list[CaseRef]:
    """The cases of several datasets; dataset names must be unique so that case names are.

    Raises:
        InputError: two specs share a name, or any :func:`discover_cases` error.
    """
    seen: dict[str, DatasetSpec] = {}
    for spec in specs:
        if spec.name in seen:
            other = seen[spec.name].source or "a spec given in code"
            raise InputError(spec.source or None, f"dataset name {spec.name!r} is used twice (also in {other})")
        seen[spec.name] = spec
    return [ref for spec in specs for ref in discover_cases(spec)]


def _existing_folder(spec: DatasetSpec, folder: Path | None, field_name: str) -> Path:
    if folder is None or not folder.is_dir():
        where = spec.source or "spec given in code"
        raise InputError(folder, f"dataset {spec.name!r}: {field_name} is not a folder ({where})")
    return folder


def _listed_ref(spec: DatasetSpec, case: ListedCase, root: Path, label_root: Path) -> CaseRef:
    image, label = root / case.image, label_root / case.label
    missing = [f"{role} {path} does not exist" for role, path in (("image", image), ("label", label))
               if not path.exists()]
    problem = "; ".join(missing) or None
    return CaseRef(f"{spec.name}/{case.case_id}", case.case_id, spec, image, label, problem=problem)


def _pattern_refs(spec: DatasetSpec, root: Path, label_root: Path) -> list[CaseRef]:
    images = _match_pattern(root, spec.image_pattern)
    labels = _match_pattern(label_root, spec.label_pattern)
    for found, folder, name in ((images, root, "image_pattern"), (labels, label_root, "label_pattern")):
        if not found:
            pattern = getattr(spec, name)
            raise InputError(folder, f"dataset {spec.name!r}: nothing matches {name} {pattern!r}")
    case_ids = set(images) | set(labels)
    unused = sorted(set(spec.exclude_cases) - case_ids)
    if unused:
        logger.warning("Dataset %s: excluded case ids %s are not in the data", spec.name, unused)
    refs = []
    for case_id in sorted(case_ids - set(spec.exclude_cases), key=_natural_key):
        image_paths, label_paths = images.get(case_id, []), labels.get(case_id, [])
        problem = _pair_problem("image", image_paths, spec.image_pattern) or _pair_problem(
            "label", label_paths, spec.label_pattern
        )
        image = image_paths[0] if len(image_paths) == 1 else None
        label = label_paths[0] if len(label_paths) == 1 else None
        refs.append(CaseRef(f"{spec.name}/{case_id}", case_id, spec, image, label, problem=problem))
    return refs


def _match_pattern(folder: Path, pattern: str) -> dict[str, list[Path]]:
    """Case id -> paths under ``folder`` matching ``pattern``; hidden entries (macOS ``._`` files) skipped."""
    regex = _pattern_regex(pattern)
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob(pattern.replace("{case}", "*"))):
        relative = path.relative_to(folder).as_posix()
        match = regex.fullmatch(relative)
        if match and not any(part.startswith(".") for part in relative.split("/")):
            found.setdefault(match["case"], []).append(path)
    return found


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """The glob as a regex whose group ``case`` captures the ``{case}`` part (one path component)."""
    parts = []
    for token in _PATTERN_TOKENS.split(pattern):
        if token == "{case}":
            parts.append("(?P=case)" if any("(?P<case>" in part for part in parts) else "(?P<case>[^/]+?)")
        elif token == "**/":
            parts.append("(?:[^/]+/)*")
        elif token in ("*", "?"):
            parts.append("[^/]*" if token == "*" else "[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def _pair_problem(role: str, paths: list[Path], pattern: str) -> str | None:
    if not paths:
        return f"missing pair: no {role} matches {pattern!r}"
    if len(paths) > 1:
        return f"{len(paths)} {role}s match {pattern!r}: {', '.join(str(p) for p in paths)}"
    return None


def _natural_key(text: str) -> list[Any]:
    """Sort key that puts "2" before "10"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


# ---------------------------------------------------------------------------------------------
# Loading


def load_case(ref: CaseRef) -> LoadedCase:
    """Read one case: the CT (float32 HU) and its per-class masks on the CT grid.

    Raises:
        CaseError: naming the case: a missing pair, an unreadable file, a label grid that does not
            match the image, or a label value outside the spec's value map.
    """
    if ref.problem:
        raise CaseError(ref.name, ref.problem)
    if ref.spec.kind == "phantom":
        return _load_phantom(ref)
    assert ref.image_path is not None and ref.label_path is not None  # set when problem is None
    image = _read(ref, ref.image_path, read_image)
    if ref.spec.structure_map:
        masks = _structure_masks(ref, image, ref.label_path)
    else:
        labels = _aligned_to_image(ref, _read(ref, ref.label_path, read_label_image), image, ref.label_path)
        masks = _masks_from_values(ref, labels.array)
    return LoadedCase(ref.name, image, masks, ref.spec.annotated)


def iter_cases(
    refs: Sequence[CaseRef],
    *,
    skip_bad_cases: bool,
    skipped: list[SkippedCase] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[LoadedCase]:
    """Load cases one at a time (bounded memory), skipping bad ones when asked.

    Args:
        refs: cases from :func:`discover_cases`.
        skip_bad_cases: log and record a :class:`CaseError` and go on, instead of raising it.
        skipped: list that receives a :class:`SkippedCase` for every case left out.
        progress: receives one "load cases" event per case.
        cancel: checked before every case.

    Yields:
        :class:`LoadedCase` in the order of ``refs``.

    Raises:
        CaseError: a bad case when ``skip_bad_cases`` is False.
        CancelledError: ``cancel`` was set.
    """
    for index, ref in enumerate(refs):
        check_cancel(cancel)
        report(progress, "load cases", index, len(refs), ref.name)
        try:
            case = load_case(ref)
        except CaseError as error:
            if not skip_bad_cases:
                raise
            logger.warning("Skipping %s: %s", ref.name, error.case_problem)
            if skipped is not None:
                skipped.append(SkippedCase(ref.name, error.case_problem))
            continue
        yield case
    report(progress, "load cases", len(refs), len(refs), "done")


def load_cases(
    refs: Sequence[CaseRef],
    *,
    skip_bad_cases: bool,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[LoadedCase], list[SkippedCase]]:
    """All cases in memory, plus the list of skipped ones (see :func:`iter_cases`)."""
    skipped: list[SkippedCase] = []
    cases = list(iter_cases(refs, skip_bad_cases=skip_bad_cases, skipped=skipped, progress=progress, cancel=cancel))
    return cases, skipped


def _load_phantom(ref: CaseRef) -> LoadedCase:
    assert ref.spec.phantom is not None and ref.phantom_seed is not None
    phantom = make_phantom(ref.spec.phantom.config_for(ref.phantom_seed))
    image = phantom.image.with_array(phantom.image.array.astype(np.float32, copy=False))
    # a partially annotated phantom set behaves like a partially labelled dataset: unannotated classes are empty
    masks = np.asarray(phantom.truth, dtype=bool) & np.asarray(ref.spec.annotated, dtype=bool)[:, None, None, None]
    return LoadedCase(ref.name, image, masks, ref.spec.annotated)


def _read(ref: CaseRef, path: Path, reader: Callable[[Path], Image]) -> Image:
    """Read with an :mod:`lvt.io` reader; any failure becomes a :class:`CaseError` for this case."""
    try:
        return reader(path)
    except InputError as error:
        raise CaseError(ref.name, f"cannot read: {error.problem}", path) from error
    except (OSError, RuntimeError, ValueError) as error:  # SimpleITK raises RuntimeError
        raise CaseError(ref.name, f"cannot read: {error}", path) from error


def _masks_from_values(ref: CaseRef, labels: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) bool masks from a label map through the spec's value map."""
    spec = ref.spec
    masks = np.zeros((NUM_CLASSES, *labels.shape), dtype=bool)
    unknown = []
    for value in _present_values(labels):
        keys = spec.value_map.get(value)
        if keys is None:
            if value != 0 and not (spec.positive_is and value > 0) and spec.other_values == "error":
                unknown.append(value)
            continue
        for key in keys:
            masks[CLASS_KEYS.index(key)] |= labels == value
    if unknown:
        shown = ", ".join(map(str, unknown[:20])) + (", ..." if len(unknown) > 20 else "")
        raise CaseError(
            ref.name, f"label value(s) {shown} are not in the value map of dataset {spec.name!r} "
            f"({spec.source or 'spec given in code'}); add them to value_map or set other_values: background",
            ref.label_path,
        )
    if spec.positive_is:
        positive = labels > 0
        for value in spec.value_map:
            positive &= labels != value
        for key in spec.positive_is:
            masks[CLASS_KEYS.index(key)] |= positive
    return masks


def _present_values(labels: np.ndarray) -> list[int]:
    """The distinct values of an integer label map; bincount is linear where np.unique sorts."""
    if labels.size and np.issubdtype(labels.dtype, np.integer):
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < 1 << 16:
            return [int(v) for v in np.flatnonzero(np.bincount(labels.reshape(-1)))]
    return [int(v) for v in np.unique(labels)]


def _structure_masks(ref: CaseRef, image: Image, folder: Path) -> np.ndarray:
    """(3, Z, Y, X) bool masks from a folder of per-structure masks, by the spec's structure rules."""
    if not folder.is_dir():
        raise CaseError(ref.name, "the structure mask folder does not exist or is not a folder", folder)
    masks = np.zeros((NUM_CLASSES, *image.array.shape), dtype=bool)
    inside_liver: list[tuple[int, np.ndarray]] = []
    matched = []
    for name, path in _structure_entries(folder):
        rule = next((r for r in ref.spec.structure_map if fnmatch.fnmatchcase(name.lower(), r.pattern.lower())), None)
        if rule is None:
            continue
        matched.append(name)
        mask = _aligned_to_image(ref, _read_structure(ref, path), image, path).array > 0
        channel = CLASS_KEYS.index(rule.class_key)
        if rule.intersect_liver:
            inside_liver.append((channel, mask))
        else:
            masks[channel] |= mask
    if not matched:
        names = ", ".join(name for name, _ in _structure_entries(folder)) or "nothing"
        raise CaseError(ref.name, f"no structure matches the structure map (found {names})", folder)
    if inside_liver and not masks[LIVER].any():
        raise CaseError(ref.name, "vessels are to be kept inside the liver, but the case has no liver mask", folder)
    for channel, mask in inside_liver:
        masks[channel] |= mask & masks[LIVER]
    logger.debug("%s: structures used: %s", ref.name, matched)
    return masks


def _structure_entries(folder: Path) -> list[tuple[str, Path]]:
    """(structure name, path) of each visible entry; a file's name loses its extensions (liver.nii.gz)."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    return sorted((entry.name if entry.is_dir() else entry.name.split(".")[0], entry) for entry in entries)


def _read_structure(ref: CaseRef, path: Path) -> Image:
    """A structure mask: a label file, or a DICOM folder (any modality; values are only compared with 0)."""
    if not path.is_dir():
        return _read(ref, path, read_label_image)
    try:
        series = find_dicom_series(path)
    except RuntimeError as error:
        raise CaseError(ref.name, f"cannot list DICOM files: {error}", path) from error
    if not series:
        raise CaseError(ref.name, "cannot read: the structure folder holds no DICOM series", path)
    return _read(ref, path, lambda folder: read_image(folder, series_uid=series[0].uid, allow_non_ct=True))


# ---------------------------------------------------------------------------------------------
# Grids


def _aligned_to_image(ref: CaseRef, label: Image, image: Image, path: Path) -> Image:
    """The label on the image grid: as is when the grids match, resampled when the spec allows it.

    Raises:
        CaseError: the grids differ and either cover different physical regions or the spec does
            not allow resampling.
    """
    if label.same_grid(image):
        return label
    differences = ", ".join(_grid_differences(label, image))
    detail = f"label {describe_grid(label)}; image {describe_grid(image)}"
    if not _same_physical_region(label, image):
        raise CaseError(ref.name, f"label grid does not match its image ({differences} differ): {detail}", path)
    if not ref.spec.resample_label_to_image:
        raise CaseError(
            ref.name, f"label grid differs from its image ({differences}) but covers the same physical region: "
            f"{detail}; set resample_label_to_image: true in the spec to resample it (nearest neighbour)",
            path,
        )
    logger.info("%s: resampling the label onto the image grid (%s differ)", ref.name, differences)
    return resample_like(label, image, interpolation="nearest", default_value=0)


def _grid_differences(first: Image, second: Image) -> list[str]:
    """Which of size, spacing, origin and direction differ (tolerances of :meth:`Image.same_grid`)."""
    checks = {
        "size": first.size_ijk == second.size_ijk,
        "spacing": np.allclose(first.spacing_mm, second.spacing_mm, atol=1e-3),
        "origin": np.allclose(first.origin_lps_mm, second.origin_lps_mm, atol=1e-3),
        "direction": np.allclose(first.direction, second.direction, atol=1e-5),
    }
    return [name for name, same in checks.items() if not same]


def _same_physical_region(first: Image, second: Image) -> bool:
    """True when the outer corners of both voxel boxes coincide (as sets), whatever the index order."""
    first_corners, second_corners = _box_corners_lps(first), _box_corners_lps(second)
    distances = np.linalg.norm(first_corners[:, None, :] - second_corners[None, :, :], axis=-1)
    # Every corner of each box must have a partner in the other box.
    unmatched = np.maximum(distances.min(axis=1), distances.min(axis=0))
    return bool(np.all(unmatched <= GRID_TOLERANCE_MM))


def _box_corners_lps(image: Image) -> np.ndarray:
    """(8, 3) LPS corners of the region the voxels cover (continuous indices -0.5 and n - 0.5)."""
    faces = np.array(list(itertools.product((0.0, 1.0), repeat=3)))
    return image.ijk_to_lps(faces * np.asarray(image.size_ijk, dtype=float) - 0.5)
