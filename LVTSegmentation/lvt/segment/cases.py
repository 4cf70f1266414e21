"""The cases of a cohort: which CTs a folder, a glob or a CSV names, their case ids and output folders.

``lvt segment`` takes one CT or a cohort. A CSV, a glob (``*``, ``?`` or ``[`` in a path that does
not exist) and a folder of cases are cohorts. A folder is one CT (a DICOM series folder) when DICOM
files sit directly in it, when it holds no CT files and at most one subfolder with DICOM files (a
nested export), or whenever ``--series`` is given; otherwise each CT file (NIfTI, NRRD, MHA) and each
subfolder that holds DICOM files at any depth is a case. A DICOM file is one with the ``DICM``
preamble or the ``.dcm`` suffix.

Case ids are folder names: letters, digits, ``.``, ``_`` and ``-``; ids derived from file names are
made so, ids a CSV gives must be so. Two cases with the same id (in any letter case, as on macOS or
Windows) or the same output folder are refused, naming both inputs.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from lvt.errors import InputError

CT_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NOT_CT_SUFFIXES: tuple[str, ...] = (".seg.nrrd",)  # Slicer segmentations are label maps, not CTs
GLOB_CHARACTERS = "*?["
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
DICOM_PREAMBLE = b"DICM"


@dataclass(frozen=True)
class CohortCase:
    """One CT of a cohort: its id, the CT (file or DICOM folder) and its own output folder."""

    case_id: str
    image: Path
    output: Path


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (counted from 0): every ``count``-th case of the sorted list."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def is_cohort(source: Path, series_uid: str | None = None, output: Path | None = None) -> bool:
    """Whether ``lvt segment SOURCE`` means many CTs (see the module's rule) rather than one.

    ``output`` (the output folder) is not looked into: its DICOM SEG files make no case.
    """
    if source.suffix.lower() == ".csv" and source.is_file():
        return True
    if not source.exists():
        return any(character in str(source) for character in GLOB_CHARACTERS)
    if not source.is_dir() or series_uid is not None or _dicom_files_in(source):
        return False
    children = [child for child in _visible(source) if output is None or not _is_within(child, output.absolute())]
    if any(_ct_file_name(child) for child in children if child.is_file()):
        return True
    dicom_subfolders = (child for child in children if child.is_dir() and holds_dicom(child))
    return next(dicom_subfolders, None) is not None and next(dicom_subfolders, None) is not None  # two are many


def find_cohort(source: Path, output_root: Path) -> list[CohortCase]:
    """The cases of a cohort, sorted by case id, each with its output folder under ``output_root``.

    Raises:
        InputError: no case found, a malformed CSV, an unsafe case id, or two cases with one id or
            one output folder.
    """
    output_root = Path(output_root).absolute()
    if source.suffix.lower() == ".csv" and source.is_file():
        cases = _cases_from_csv(source, output_root)
    else:
        found = _cases_in_folder(source) if source.is_dir() else _cases_from_glob(str(source))
        cases = [CohortCase(case_id, image, output_root / case_id) for case_id, image in found
                 if not _is_within(image, output_root)]
    if not cases:
        raise InputError(source, "no CTs found: expected NIfTI/NRRD/MHA files or DICOM series folders "
                                 "(see docs/cohorts.md)")
    _refuse_duplicates(cases)
    return sorted((replace(case, image=case.image.absolute()) for case in cases), key=lambda case: case.case_id)


def parse_shard(text: str) -> Shard:
    """``K/N`` (K counted from 0, like ``$SLURM_ARRAY_TASK_ID`` of ``--array=0-(N-1)``) as a :class:`Shard`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise InputError(None, f"--shard {text!r}: expected K/N, e.g. 0/10 (K counts from 0)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise InputError(None, f"--shard {text}: K counts from 0 and must be below N (0..{max(count - 1, 0)})")
    return Shard(index, count)


def select_shard(cases: list[CohortCase], shard: Shard | None) -> list[CohortCase]:
    """Every ``count``-th case of the sorted list from ``index`` on: shards are disjoint and cover all cases."""
    return list(cases) if shard is None else list(cases)[shard.index::shard.count]


def holds_dicom(folder: Path) -> bool:
    """Whether a DICOM file lies in ``folder`` or below (stops at the first one)."""
    return any(_dicom_files_in(Path(root)) for root, _, _ in os.walk(folder))


def _dicom_files_in(folder: Path) -> bool:
    return any(is_dicom_file(child) for child in _files(folder) if _ct_file_name(child) is None)


def _visible(folder: Path) -> list[Path]:
    """The entries of a folder, sorted, without hidden ones (macOS ``._x.nii.gz``, staging folders)."""
    return sorted(child for child in folder.iterdir() if not child.name.startswith("."))


def _files(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                yield Path(entry.path)


def is_dicom_file(path: Path) -> bool:
    """A file with the ``.dcm`` suffix or the ``DICM`` preamble (read without numpy: ``lvt`` checks inputs with it)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == DICOM_PREAMBLE
    except OSError:
        return False


def _ct_file_name(path: Path) -> str | None:
    """The name of a CT file without its suffix; None for any other file."""
    lower = path.name.lower()
    if lower.endswith(NOT_CT_SUFFIXES):
        return None
    suffix = next((s for s in CT_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)
    return None if suffix is None else path.name[: -len(suffix)]


def _cases_in_folder(folder: Path) -> list[tuple[str, Path]]:
    """Each CT file (id: its name) and each subfolder holding DICOM (id: the folder's name)."""
    found = []
    for child in _visible(folder):
        if child.is_file() and (name := _ct_file_name(child)) is not None:
            found.append((safe_case_id(name), child))
        elif child.is_dir() and holds_dicom(child):
            found.append((safe_case_id(child.name), child))
    return found


def _cases_from_glob(pattern: str) -> list[tuple[str, Path]]:
    """CT files and DICOM folders the glob matches; the id is the path below the pattern's fixed part.

    ``data/*/ct.nii.gz`` gives ``patient01_ct`` for ``data/patient01/ct.nii.gz``, so that cases stay
    apart when every file has the same name.
    """
    parts = Path(pattern).parts
    first_wild = next((i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARACTERS)), len(parts))
    fixed = Path(*parts[:first_wild] or ["."])
    found = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        below = path.relative_to(fixed) if path.is_relative_to(fixed) else Path(path.name)
        if path.is_file() and _ct_file_name(path) is not None:
            found.append((safe_case_id("_".join([*below.parts[:-1], _ct_file_name(path) or ""])), path))
        elif path.is_dir() and holds_dicom(path):
            found.append((safe_case_id("_".join(below.parts)), path))
    return found


def _cases_from_csv(table: Path, output_root: Path) -> list[CohortCase]:
    """Rows of a CSV with an ``image`` column and optional ``case_id`` and ``output`` (other columns are ignored).

    ``image`` is relative to the CSV's folder, ``output`` to the output root.
    """
    cases = []
    for row_number, row in _csv_rows(table):
        image_text = (row.get("image") or "").strip()
        if not image_text:
            raise InputError(table, f"row {row_number}: the image cell is empty")
        image = table.parent / Path(image_text).expanduser()
        case_id = (row.get("case_id") or "").strip()
        if case_id and not SAFE_ID.fullmatch(case_id):
            raise InputError(table, f"row {row_number}: case_id {case_id!r} is not a safe folder name "
                                    "(use letters, digits, '.', '_' and '-')")
        case_id = case_id or safe_case_id(_ct_file_name(image) or image.name)
        output_text = (row.get("output") or "").strip()
        output = output_root / Path(output_text).expanduser() if output_text else output_root / case_id
        if output.absolute() == output_root:
            raise InputError(table, f"row {row_number}: the output folder of a case cannot be the output root")
        cases.append(CohortCase(case_id, image, output))
    return cases


def _csv_rows(table: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every row with a value; the header must name ``image``."""
    try:
        with open(table, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            if "image" not in columns:
                raise InputError(table, f"no 'image' column (columns: {', '.join(columns) or 'none'}); "
                                        "expected image[,case_id][,output]")
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(table, f"cannot read the CSV ({error})") from error
    for number, row in rows:
        if any((value or "").strip() for value in row.values() if isinstance(value, str)):
            yield number, row


def safe_case_id(text: str) -> str:
    """A folder name from any text: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")
    return cleaned or "case"


def _refuse_duplicates(cases: Iterable[CohortCase]) -> None:
    """Refuse two cases with one id (in any letter case) or one output folder, naming both inputs."""
    by_id: dict[str, CohortCase] = {}
    by_output: dict[str, CohortCase] = {}
    for case in cases:
        for seen, key, what in ((by_id, case.case_id.casefold(), f"case id '{case.case_id}'"),
                                (by_output, str(case.output.absolute()).casefold(), f"output folder {case.output}")):
            if key in seen:
                raise InputError(case.image, f"{what} is also that of {seen[key].image}; "
                                             "give each case its own (a CSV can set case_id and output)")
            seen[key] = case


def _is_within(path: Path, folder: Path) -> bool:
    return path.absolute().is_relative_to(folder)
