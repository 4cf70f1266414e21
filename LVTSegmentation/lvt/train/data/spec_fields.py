"""The parts of a dataset spec (structure rules, listed cases, a second label source, phantom options) and their YAML.

Every parser raises ValueError naming the field, so :meth:`lvt.train.data.specs.DatasetSpec.from_dict`
can add the config file and the dataset to the message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvt.labels import CLASS_KEYS, NUM_CLASSES
from lvt.phantom import PhantomConfig
from lvt.train.known_fields import unknown_fields_problem

# The kind of a dataset of CTs without labels (every class weight 0): they feed the consistency term only.
UNLABELLED_KIND = "images"


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
    """One explicitly listed image/label pair (paths relative to the spec's root and label root); an
    unlabelled CT (kind "images") has no label."""

    case_id: str
    image: str
    label: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"image": self.image, "label": self.label} if self.label else {"image": self.image}


@dataclass(frozen=True)
class SecondLabels:
    """A second label map of each case, on the same CT (the paper merges the HepaticVessel liver masks with
    Task08's vessel and tumor labels into one case annotating all three classes).

    Attributes:
        label_pattern: glob relative to ``label_root`` with the ``{case}`` of the spec's images.
        label_root: the folder of these labels (default: the spec's ``root``).
        value_map, positive_is, other_values: what its values mean, as the spec's fields of the same names.
    """

    label_pattern: str
    label_root: Path | None = None
    value_map: dict[int, tuple[str, ...]] = field(default_factory=dict)
    positive_is: tuple[str, ...] = ()
    other_values: str = "error"

    @property
    def classes(self) -> frozenset[str]:
        """The classes this source annotates."""
        return frozenset(key for keys in self.value_map.values() for key in keys) | frozenset(self.positive_is)

    def to_dict(self) -> dict[str, Any]:
        return {"label_pattern": self.label_pattern,
                "label_root": None if self.label_root is None else self.label_root.as_posix(),
                "value_map": {value: list(keys) for value, keys in sorted(self.value_map.items())},
                "positive_is": list(self.positive_is), "other_values": self.other_values}


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


def spec_arguments(data: Mapping[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """Constructor arguments from the YAML form; raises ValueError naming the field."""
    for required in ("name", "kind"):
        if required not in data:
            raise ValueError(f"field {required!r}: required")
    arguments = {key: value for key, value in data.items() if key in _SIMPLE_FIELDS}
    kind = data.get("kind")
    default_annotated = {"phantom": [True] * NUM_CLASSES, UNLABELLED_KIND: [False] * NUM_CLASSES}.get(kind)
    arguments["annotated"] = _parse_annotated(data.get("annotated", default_annotated))
    arguments["root"] = parse_folder(data.get("root"), base_dir, "root")
    arguments["label_root"] = parse_folder(data.get("label_root"), base_dir, "label_root")
    arguments["cases"] = _parse_cases(data.get("cases") or {})
    arguments["exclude_cases"] = _parse_case_ids(data.get("exclude_cases") or [])
    arguments["value_map"] = _parse_value_map(data.get("value_map") or {})
    arguments["positive_is"] = _parse_class_list(data.get("positive_is"), "positive_is")
    arguments["structure_map"] = _parse_structure_map(data.get("structure_map") or {})
    if data.get("second_labels") is not None:
        arguments["second_labels"] = _parse_second_labels(data["second_labels"], base_dir)
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


def parse_folder(raw: Any, base_dir: str | Path | None, field_name: str) -> Path | None:
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
        if not isinstance(paths, Mapping) or set(paths) not in ({"image", "label"}, {"image"}):
            raise ValueError(f"field 'cases': case {case_id!r} needs exactly the keys 'image' and 'label' "
                             "('image' alone for kind 'images')")
        cases.append(ListedCase(str(case_id), str(paths["image"]), str(paths.get("label", ""))))
    return tuple(cases)


def _parse_case_ids(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"field 'exclude_cases': expected a list of case ids, got {raw!r}")
    return tuple(str(case) for case in raw)


def _parse_value_map(raw: Any, field_name: str = "value_map") -> dict[int, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field {field_name!r}: expected a mapping label value -> class key(s), got {raw!r}")
    value_map = {}
    for value, keys in raw.items():
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(value, (bool, float)) or str(number) != str(value).strip():
            raise ValueError(f"field {field_name!r}: key {value!r} is not a whole-number label value")
        value_map[number] = _parse_class_list(keys, f"{field_name}[{number}]")
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


def _parse_second_labels(raw: Any, base_dir: str | Path | None) -> SecondLabels:
    where = "second_labels"
    if not isinstance(raw, Mapping):
        raise ValueError(f"field {where!r}: expected a mapping (label_pattern, label_root, value_map, ...), "
                         f"got {raw!r}")
    problem = unknown_fields_problem(raw, SecondLabels.__dataclass_fields__)
    if problem:
        raise ValueError(f"field {where!r}: {problem}")
    if not isinstance(raw.get("label_pattern"), str):
        raise ValueError(f"field '{where}.label_pattern': required (a glob relative to label_root with {{case}})")
    return SecondLabels(label_pattern=raw["label_pattern"],
                        label_root=parse_folder(raw.get("label_root"), base_dir, f"{where}.label_root"),
                        value_map=_parse_value_map(raw.get("value_map") or {}, f"{where}.value_map"),
                        positive_is=_parse_class_list(raw.get("positive_is"), f"{where}.positive_is"),
                        other_values=raw.get("other_values", "error"))


def _parse_phantom(raw: Any) -> PhantomOptions:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'phantom': expected a mapping (count, seed, spacing_mm, ...), got {raw!r}")
    options = {key: raw[key] for key in ("count", "seed", "spacing_mm") if key in raw}
    settings = {key: value for key, value in raw.items() if key not in options}
    return PhantomOptions(**options, settings=settings)
