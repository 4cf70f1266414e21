"""Find the files of an evaluation and read them: predictions, references, truth specs.

Predictions are label maps, ``lvt segment`` output folders, or folders of either; a reference is
an exclusive label map named like the case, or per-structure binary masks listed in a JSON/YAML
spec. Every file is checked to exist before any is read, and every error names the case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lvt.errors import InputError
from lvt.image import Image
from lvt.io import read_label_image, read_segmentation
from lvt.labels import CLASS_KEYS, LIVER, TUMOR, VESSEL, apply_hierarchy, masks_from_labels

SEGMENT_OUTPUT_LABELS = "labels.nii.gz"
LABEL_SUFFIXES: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SPEC_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")


# ------------------------------------------------------------------------------------- finding the files


@dataclass(frozen=True)
class TruthSource:
    """Where one case's reference lives: an exclusive label map, or binary masks per structure.

    Attributes:
        labels_path: exclusive label map (0..3), every class annotated; ``None`` for structure masks.
        structure_paths: class key -> mask files whose union (voxels > 0) is that class; a class
            without an entry is not annotated.
    """

    labels_path: Path | None = None
    structure_paths: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationCase:
    """One case to score: its name, the predicted label map and where its reference lives."""

    name: str
    pred_path: Path
    truth: TruthSource


def case_name_of(path: Path) -> str | None:
    """Case name of a label file (its name without a known suffix); ``None`` for other files."""
    lower = path.name.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _predictions_in_folder(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / SEGMENT_OUTPUT_LABELS).is_file():
            found.append((child.name, child / SEGMENT_OUTPUT_LABELS))
        elif child.is_file() and (name := case_name_of(child)) is not None:
            found.append((name, child))
    return found


def find_predictions(paths: Sequence[Path]) -> dict[str, Path]:
    """Case name -> predicted label map, from files, ``lvt segment`` output folders, or folders of either.

    Raises:
        InputError: for a missing path, a case found twice, or when nothing was found.
    """
    found: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append((case_name_of(path) or path.name, path))
        elif (path / SEGMENT_OUTPUT_LABELS).is_file():
            found.append((path.name, path / SEGMENT_OUTPUT_LABELS))
        elif path.is_dir():
            found.extend(_predictions_in_folder(path))
        else:
            raise InputError(path, "prediction path does not exist")
    cases: dict[str, Path] = {}
    for name, path in found:
        if name in cases:
            raise InputError(path, f"case '{name}' is given twice (also {cases[name]}); keep one prediction per case")
        cases[name] = path
    if not cases:
        raise InputError(paths[0] if paths else None, f"no prediction label maps found ({', '.join(LABEL_SUFFIXES)})")
    return cases


def _truth_label_file(folder: Path, name: str) -> Path:
    candidates = [folder / f"{name}{suffix}" for suffix in LABEL_SUFFIXES] + [folder / name / SEGMENT_OUTPUT_LABELS]
    existing = [c for c in candidates if c.is_file()]
    if len(existing) != 1:
        problem = "no reference label map" if not existing else f"several reference files {existing}"
        raise InputError(folder, f"case '{name}': {problem}; expected {name}.nii.gz (or .nrrd, .mha, ...)")
    return existing[0]


def _as_paths(value: object, spec_path: Path, case: str, key: str) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise InputError(spec_path, f"case '{case}', {key}: expected a path or a non-empty list of paths")
    return tuple((spec_path.parent / item).resolve() for item in items)


def read_truth_spec(spec_path: Path) -> dict[str, TruthSource]:
    """Read a JSON/YAML spec ``{case: {liver: path | [paths], vessel: ..., tumor: ...}}``.

    Relative paths are relative to the spec file. A missing class is not annotated for that case.

    Raises:
        InputError: for unreadable files, unknown class keys or malformed entries.
    """
    try:
        text = spec_path.read_text(encoding="utf-8")
        spec = json.loads(text) if spec_path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise InputError(spec_path, f"cannot read the truth spec: {error}") from error
    if not isinstance(spec, dict) or not spec:
        raise InputError(spec_path, "expected a mapping from case name to {liver: ..., vessel: ..., tumor: ...}")
    sources = {}
    for case, entry in spec.items():
        if not isinstance(entry, dict) or not entry:
            raise InputError(spec_path, f"case '{case}': expected a mapping of {', '.join(CLASS_KEYS)} to paths")
        unknown = set(entry) - set(CLASS_KEYS)
        if unknown:
            raise InputError(
                spec_path, f"case '{case}': unknown classes {sorted(unknown)}; use {', '.join(CLASS_KEYS)}"
            )
        paths = {key: _as_paths(value, spec_path, str(case), key) for key, value in entry.items()}
        sources[str(case)] = TruthSource(structure_paths=paths)
    return sources


def find_cases(pred_paths: Sequence[Path], truth_path: Path) -> list[EvaluationCase]:
    """Pair every prediction with its reference, checking that all files exist before any is read.

    Args:
        pred_paths: prediction files or folders (see :func:`find_predictions`).
        truth_path: a folder of exclusive label maps named like the cases, or a JSON/YAML spec
            (see :func:`read_truth_spec`).

    Raises:
        InputError: naming the case and the missing or ambiguous file.
    """
    predictions = find_predictions(pred_paths)
    truth_path = Path(truth_path)
    if truth_path.is_file() and truth_path.suffix.lower() in SPEC_SUFFIXES:
        spec = read_truth_spec(truth_path)
        missing = sorted(set(predictions) - set(spec))
        if missing:
            raise InputError(truth_path, f"no reference for cases {missing}")
        sources = {name: spec[name] for name in predictions}
    elif truth_path.is_dir():
        sources = {name: TruthSource(labels_path=_truth_label_file(truth_path, name)) for name in predictions}
    else:
        raise InputError(truth_path, "reference must be a folder of label maps or a .json/.yaml spec")
    cases = [EvaluationCase(name, predictions[name], sources[name]) for name in sorted(predictions)]
    for case in cases:
        for path in case.truth.structure_paths.values():
            for file in path:
                if not file.is_file():
                    raise InputError(file, f"case '{case.name}': reference mask does not exist")
    return cases


# ---------------------------------------------------------------------------------------- loading a case


def _check_same_grid(reference: Image, other: Image, path: Path, case: str, what: str) -> None:
    if not reference.same_grid(other):
        raise InputError(
            path,
            f"case '{case}': {what} grid (size {other.size_ijk}, spacing {other.spacing_mm}, origin "
            f"{other.origin_lps_mm}) does not match the reference grid (size {reference.size_ijk}, spacing "
            f"{reference.spacing_mm}, origin {reference.origin_lps_mm}); evaluate on the reference CT grid",
        )


def _read_structure_masks(case: EvaluationCase) -> tuple[Image, np.ndarray, tuple[bool, bool, bool]]:
    """Union of each class's binary masks (> 0); vessels and tumors clipped to the liver when it is annotated."""
    paths = case.truth.structure_paths
    images = {path: read_label_image(path) for key in CLASS_KEYS for path in paths.get(key, ())}
    grid = next(iter(images.values()))
    masks = np.zeros((3, *grid.array.shape), dtype=bool)
    for channel, key in enumerate(CLASS_KEYS):
        for path in paths.get(key, ()):
            _check_same_grid(grid, images[path], path, case.name, "reference mask")
            masks[channel] |= images[path].array > 0
    annotated = tuple(key in paths for key in CLASS_KEYS)
    if annotated[LIVER]:
        # The classes are *intrahepatic* vessels and *liver* tumors (IRCAD's portal vein runs outside).
        masks[VESSEL] &= masks[LIVER]
        masks[TUMOR] &= masks[LIVER]
    return grid, apply_hierarchy(masks), annotated  # type: ignore[return-value]


def load_truth(case: EvaluationCase) -> tuple[Image, np.ndarray, tuple[bool, bool, bool]]:
    """Read a case's reference: (grid, (3, Z, Y, X) bool multi-hot masks, annotated per class)."""
    if case.truth.labels_path is not None:
        labels = read_segmentation(case.truth.labels_path)
        return labels, masks_from_labels(labels.array), (True, True, True)
    return _read_structure_masks(case)


def load_prediction(case: EvaluationCase, grid: Image) -> Image:
    """Read a case's predicted label map, checking that it lies on the reference grid."""
    pred = read_segmentation(case.pred_path)
    _check_same_grid(grid, pred, case.pred_path, case.name, "prediction")
    return pred
