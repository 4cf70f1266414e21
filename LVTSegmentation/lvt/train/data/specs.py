"""Training datasets as data: where the files are, what the label values mean, which classes are annotated.

A public dataset (LiTS, MSD, 3D-IRCADb, TotalSegmentator, ...) or a user's own folder is a
:class:`DatasetSpec`, a few lines of YAML. The shipped specs in ``dataset_specs/`` describe the
published layouts, so a user who downloaded one only points ``root`` at the folder
(:func:`load_builtin_spec`). :mod:`lvt.train.data.discovery` turns a spec into case references
without reading voxels and :mod:`lvt.train.data.loading` reads one case; the training run caches
them, skipping bad cases when asked (:func:`lvt.train.data.prepare.prepare_cases`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lvt.errors import InputError
from lvt.labels import CLASS_KEYS, NUM_CLASSES
from lvt.train.data.spec_fields import (
    UNLABELLED_KIND,
    ListedCase,
    PhantomOptions,
    SecondLabels,
    StructureRule,
    parse_folder,
    spec_arguments,
)
from lvt.train.known_fields import unknown_fields_problem

KINDS: tuple[str, ...] = ("lits", "msd", "ircadb", "totalsegmentator", "pairs", "phantom", UNLABELLED_KIND)
OTHER_VALUES: tuple[str, ...] = ("error", "background")
BUILTIN_SPEC_DIR = Path(__file__).resolve().parent / "dataset_specs"

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DatasetSpec:
    """What one training dataset is on disk and what its labels mean.

    Attributes:
        name: dataset name, the prefix of its case names ("<name>/<case>").
        kind: reader and checks: "lits", "msd", "ircadb", "totalsegmentator", "pairs", "phantom" or
            "images" (CTs without labels: ``annotated`` all 0, no label fields).
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
        second_labels: a second label map per case on the same images, annotating other classes
            (HepaticVessel liver masks beside Task08's vessels and tumors); ``annotated`` is then the
            classes of both sources.
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
    second_labels: SecondLabels | None = None
    weight: float = 1.0
    phantom: PhantomOptions | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _normalise_spec(self)
        _validate_common(self)
        if self.kind == "phantom":
            _validate_phantom(self)
        elif self.is_unlabelled:
            _validate_unlabelled(self)
        else:
            _validate_files(self)
            _validate_label_meaning(self)

    def __hash__(self) -> int:
        # value_map is a dict, so the generated hash would fail; equal specs share these fields.
        return hash((self.name, self.kind, str(self.root)))

    @property
    def is_unlabelled(self) -> bool:
        """CTs without labels: they never feed the supervised loss, only the consistency term."""
        return self.kind == UNLABELLED_KIND

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
            problem = unknown_fields_problem(data, SPEC_FIELDS)
            if problem:
                raise ValueError(problem)
            return cls(**spec_arguments(data, base_dir), source=source)
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
            "cases": {c.case_id: c.to_dict() for c in self.cases},
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
            # only when set, so the fingerprint (cache key) of every spec without one stays as it was
            **({"second_labels": self.second_labels.to_dict()} if self.second_labels else {}),
        }


# The fields a spec's YAML form may name.
SPEC_FIELDS = frozenset(DatasetSpec.__dataclass_fields__) - {"source"}


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
    file_fields = ("root", "label_root", "image_pattern", "label_pattern", "cases", "value_map", "structure_map",
                   "second_labels")
    used = [name for name in file_fields if getattr(spec, name)]
    if used:
        raise ValueError(f"field {used[0]!r}: kind 'phantom' reads no files; remove {', '.join(used)}")


def _validate_unlabelled(spec: DatasetSpec) -> None:
    """Kind "images": CTs only, so no class is annotated and nothing describes a label."""
    if any(spec.annotated):
        raise ValueError(f"field 'annotated': kind {UNLABELLED_KIND!r} has no labels; annotated must be [0, 0, 0]")
    label_fields = ("label_root", "label_pattern", "value_map", "positive_is", "structure_map", "second_labels",
                    "resample_label_to_image")
    used = [name for name in label_fields if getattr(spec, name)]
    if used:
        raise ValueError(f"field {used[0]!r}: kind {UNLABELLED_KIND!r} reads no labels; remove {', '.join(used)}")
    _validate_files(spec)


def _validate_files(spec: DatasetSpec) -> None:
    if spec.phantom is not None:
        raise ValueError(f"field 'phantom': only for kind 'phantom', not {spec.kind!r}")
    if spec.root is None:
        raise ValueError(f"field 'root': required for kind {spec.kind!r} (the folder holding the downloaded data)")
    if spec.cases and (spec.image_pattern or spec.label_pattern):
        raise ValueError("field 'cases': give either explicit cases or image_pattern/label_pattern, not both")
    labelled = not spec.is_unlabelled
    if not spec.cases:
        for name in ("image_pattern", "label_pattern") if labelled else ("image_pattern",):
            _validate_pattern(getattr(spec, name), name)
    wrong = next((case for case in spec.cases if bool(case.label) != labelled), None)
    if wrong is not None:
        keys = "'image' and 'label'" if labelled else "'image' (no label)"
        raise ValueError(f"field 'cases': case {wrong.case_id!r} of kind {spec.kind!r} needs exactly the key(s) {keys}")
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
    if spec.second_labels is not None:
        produced |= _second_label_classes(spec.second_labels, produced)
    for key, is_annotated in zip(CLASS_KEYS, spec.annotated, strict=True):
        if is_annotated and key not in produced:
            raise ValueError(f"field 'annotated': {key} is marked annotated but no label value or structure maps to it")
        if key in produced and not is_annotated:
            raise ValueError(f"field 'annotated': labels map to {key} but {key} is not marked annotated")


def _second_label_classes(second: SecondLabels, first: set[str]) -> frozenset[str]:
    """The classes of a valid second label source; each class has one source, so none comes from both."""
    _validate_pattern(second.label_pattern, "second_labels.label_pattern")
    if not second.classes:
        raise ValueError("field 'second_labels': give value_map and/or positive_is (what its label values mean)")
    if second.other_values not in OTHER_VALUES:
        raise ValueError(f"field 'second_labels.other_values': {second.other_values!r} is not one of "
                         f"{', '.join(OTHER_VALUES)}")
    for value, keys in second.value_map.items():
        _check_class_keys(keys, f"second_labels.value_map[{value}]")
        if value == 0 and keys:
            raise ValueError("field 'second_labels.value_map': value 0 is background and maps to no class")
    _check_class_keys(second.positive_is, "second_labels.positive_is")
    both = sorted(second.classes & first)
    if both:
        raise ValueError(f"field 'second_labels': {', '.join(both)} would come from both label sources; "
                         "each class must have one source")
    return second.classes


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
    return DatasetSpec.from_dict(read_yaml(path), source=str(path), base_dir=path.parent)


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
    merged = dict(read_yaml(path))
    for key in ("root", "label_root"):
        merged[key] = parse_folder(merged.get(key), path.parent, key)
        if data.get(key) is not None:
            merged[key] = parse_folder(data[key], base_dir, key)
    second = merged.get("second_labels")
    if isinstance(second, Mapping):
        folder = parse_folder(second.get("label_root"), path.parent, "second_labels.label_root")
        second = merged["second_labels"] = {**second, "label_root": folder}
    merged.update((key, value) for key, value in data.items() if key not in ("builtin", "root", "label_root"))
    if isinstance(second, Mapping) and isinstance(data.get("second_labels"), Mapping):
        merged["second_labels"] = {**second, **data["second_labels"]}  # e.g. only its label_root given
    return merged


def read_yaml(path: Path, what: str = "dataset spec") -> Any:
    """The parsed content of a YAML (or JSON) file; every way it can fail is an InputError naming ``what``."""
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read the {what} ({getattr(error, 'strerror', None) or error})") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(path, f"is not valid YAML/JSON ({error})") from error


def spec_fingerprint(spec: DatasetSpec) -> str:
    """sha256 hex digest of the normalised spec: changes whenever anything that shapes the cases changes."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
