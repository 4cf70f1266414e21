"""Finding a dataset's cases on disk: ``{case}`` patterns or listed pairs, matched into image/label references.

Nothing is read here; a case whose files are missing or ambiguous is still listed with its problem, so
the run names it (or skips it) instead of silently training on fewer cases.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lvt.errors import InputError
from lvt.train.data.spec_fields import ListedCase
from lvt.train.data.specs import DatasetSpec

logger = logging.getLogger(__name__)

_PATTERN_TOKENS = re.compile(r"(\{case\}|\*\*/|\*|\?)")


@dataclass(frozen=True)
class CaseRef:
    """One case found on disk (nothing read yet); ``problem`` is set when discovery already saw it is bad."""

    name: str
    case_id: str
    spec: DatasetSpec
    image_path: Path | None = None
    label_path: Path | None = None
    second_label_path: Path | None = None
    phantom_seed: int | None = None
    problem: str | None = None

    @property
    def dataset(self) -> str:
        return self.spec.name


def discover_cases(spec: DatasetSpec) -> list[CaseRef]:
    """All cases of one dataset, in natural order of their ids, without reading any voxels.

    A case with a missing or ambiguous file is still listed, with its ``problem`` set, so that
    :func:`lvt.train.data.loading.load_case` reports it by name and ``skip_bad_cases`` can list it.

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
        refs = [_listed_ref(spec, case, root, label_root) for case in listed]
    elif spec.is_unlabelled:
        refs = _image_refs(spec, root)
    else:
        refs = _pattern_refs(spec, root, label_root)
    return refs if spec.second_labels is None else _with_second_labels(spec, refs, root)


def _with_second_labels(spec: DatasetSpec, refs: list[CaseRef], root: Path) -> list[CaseRef]:
    """Each case with its second label file; a case with none (or several) gets a problem, like a missing pair."""
    assert spec.second_labels is not None
    pattern = spec.second_labels.label_pattern
    second_root = spec.second_labels.label_root
    folder = root if second_root is None else _existing_folder(spec, second_root, "second_labels.label_root")
    found = _match_pattern(folder, pattern)
    if not found:
        raise InputError(folder, f"dataset {spec.name!r}: nothing matches second_labels.label_pattern {pattern!r}")
    paired = []
    for ref in refs:
        paths = found.get(ref.case_id, [])
        problem = _pair_problem("second label", paths, pattern)
        paired.append(replace(ref, second_label_path=paths[0] if len(paths) == 1 else None,
                              problem="; ".join(p for p in (ref.problem, problem) if p) or None))
    return paired


def _existing_folder(spec: DatasetSpec, folder: Path | None, field_name: str) -> Path:
    if folder is None or not folder.is_dir():
        where = spec.source or "spec given in code"
        raise InputError(folder, f"dataset {spec.name!r}: {field_name} is not a folder ({where})")
    return folder


def _listed_ref(spec: DatasetSpec, case: ListedCase, root: Path, label_root: Path) -> CaseRef:
    image, label = root / case.image, (label_root / case.label if case.label else None)
    missing = [f"{role} {path} does not exist" for role, path in (("image", image), ("label", label))
               if path is not None and not path.exists()]
    problem = "; ".join(missing) or None
    return CaseRef(f"{spec.name}/{case.case_id}", case.case_id, spec, image, label, problem=problem)


def _image_refs(spec: DatasetSpec, root: Path) -> list[CaseRef]:
    """The CTs of an unlabelled dataset that ``image_pattern`` finds (kind "images": no label to pair)."""
    images = _match_pattern(root, spec.image_pattern)
    if not images:
        raise InputError(root, f"dataset {spec.name!r}: nothing matches image_pattern {spec.image_pattern!r}")
    refs = []
    for case_id in sorted(set(images) - set(spec.exclude_cases), key=_natural_key):
        paths = images[case_id]
        refs.append(CaseRef(f"{spec.name}/{case_id}", case_id, spec, paths[0] if len(paths) == 1 else None,
                            problem=_pair_problem("image", paths, spec.image_pattern)))
    return refs


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
