"""Which CTs a cohort names (a folder, a glob, a CSV), their case ids and output folders, and the shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvt.errors import InputError
from lvt.segment.cases import Shard, find_cohort, is_cohort, parse_shard, select_shard


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _dicom(path: Path) -> Path:
    """A file with the DICOM preamble (discovery looks no further)."""
    return _touch(path, bytes(128) + b"DICM" + bytes(16))


def test_a_folder_of_cases_gives_each_ct_file_and_dicom_folder(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _touch(cohort / "a.nii.gz")
    _touch(cohort / "b.nrrd")
    _touch(cohort / "edited.seg.nrrd")  # a segmentation, not a CT
    _touch(cohort / "notes.txt")
    _touch(cohort / "._a.nii.gz")  # macOS metadata, hidden
    _dicom(cohort / "c d" / "study" / "IM0001")  # nested, no suffix: found by its preamble
    (cohort / "empty").mkdir()
    assert is_cohort(cohort)
    cases = find_cohort(cohort, tmp_path / "out")
    assert [(case.case_id, case.image.name) for case in cases] == [("a", "a.nii.gz"), ("b", "b.nrrd"),
                                                                  ("c_d", "c d")]
    assert [case.output for case in cases] == [tmp_path / "out" / name for name in ("a", "b", "c_d")]


def test_a_dicom_series_folder_stays_one_ct(tmp_path: Path) -> None:
    series = tmp_path / "series"
    _dicom(series / "slice1")
    assert not is_cohort(series)
    nested = tmp_path / "export"  # one subfolder with DICOM: a nested export of one CT, as before
    _dicom(nested / "DICOM" / "1" / "slice1.dcm")
    assert not is_cohort(nested)
    _dicom(nested / "lvt-out" / "segmentation.dcm")  # the DICOM SEG of an earlier run, written into the export
    assert not is_cohort(nested, output=nested / "lvt-out")
    _dicom(nested / "DICOM2" / "slice1.dcm")  # two: a folder of DICOM cases ...
    assert is_cohort(nested)
    assert not is_cohort(nested, series_uid="1.2.3")  # ... unless a series of one folder is asked for
    assert not is_cohort(_touch(tmp_path / "ct.nii.gz"))
    assert not is_cohort(tmp_path / "missing.nii.gz")


def test_a_glob_names_cases_by_their_path_below_the_pattern(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for patient in ("p1", "p2"):
        _touch(tmp_path / "data" / patient / "ct.nii.gz")
    _touch(tmp_path / "data" / "out" / "p1" / "labels.nii.gz")  # an earlier output inside the data: not a case
    monkeypatch.chdir(tmp_path)
    pattern = Path("data/**/*.nii.gz")
    assert is_cohort(pattern)
    cases = find_cohort(pattern, Path("data/out"))
    assert [case.case_id for case in cases] == ["p1_ct", "p2_ct"]
    assert find_cohort(Path("data/p1/*.nii.gz"), tmp_path / "o")[0].case_id == "ct"
    with pytest.raises(InputError, match="no CTs found"):
        find_cohort(Path("data/*.mha"), tmp_path / "o")


def test_a_csv_gives_images_ids_and_outputs(tmp_path: Path) -> None:
    _touch(tmp_path / "scans" / "x.nii.gz")
    table = tmp_path / "cohort.csv"
    table.write_text("\ufeffimage,case_id,output,age\nscans/x.nii.gz,,,61\n/abs/y.nrrd,patient-2,,70\n,,,\n"
                     "scans/z.mha,z,elsewhere/z,55\n", encoding="utf-8")
    assert is_cohort(table)
    cases = find_cohort(table, tmp_path / "out")
    assert [(c.case_id, c.image, c.output) for c in cases] == [
        ("patient-2", Path("/abs/y.nrrd"), tmp_path / "out" / "patient-2"),
        ("x", tmp_path / "scans" / "x.nii.gz", tmp_path / "out" / "x"),
        ("z", tmp_path / "scans" / "z.mha", tmp_path / "out" / "elsewhere" / "z"),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("ct,case_id\na.nii.gz,a\n", r"no 'image' column \(columns: ct, case_id\)"),
    ("image,case_id\na.nii.gz,../up\n", "row 2: case_id '../up' is not a safe folder name"),
    ("image,case_id\na.nii.gz,\n\n,\n,x\n", "row 5: the image cell is empty"),
    ("image,output\na.nii.gz,.\n", "row 2: the output folder of a case cannot be the output root"),
    ("image,case_id\nA.nii.gz,\nsub/a.nrrd,\n", r"sub/a.nrrd: case id 'a' is also that of .*A.nii.gz"),
    ("image,case_id,output\na.nii.gz,a,same\nb.nii.gz,b,same\n", r"b.nii.gz: output folder .*same is also that of"),
])
def test_a_bad_csv_is_refused_naming_the_row(tmp_path: Path, text: str, message: str) -> None:
    table = tmp_path / "cohort.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        find_cohort(table, tmp_path / "out")


def test_two_files_with_one_case_id_are_refused_naming_both(tmp_path: Path) -> None:
    _touch(tmp_path / "in" / "a.nii.gz")
    _touch(tmp_path / "in" / "a.nrrd")
    with pytest.raises(InputError) as error:
        find_cohort(tmp_path / "in", tmp_path / "out")
    assert "a.nii.gz" in str(error.value) and "a.nrrd" in str(error.value)


@pytest.mark.parametrize("text", ["3", "a/b", "2/2", "0/0", "-1/3"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 9])
def test_shards_are_disjoint_and_cover_every_case(tmp_path: Path, count: int) -> None:
    for name in "gfedcba":
        _touch(tmp_path / "in" / f"{name}.nii.gz")
    cases = find_cohort(tmp_path / "in", tmp_path / "out")
    shards = [select_shard(cases, parse_shard(f"{index}/{count}")) for index in range(count)]
    ids = [case.case_id for shard in shards for case in shard]
    assert sorted(ids) == list("abcdefg") and len(ids) == len(set(ids))
    assert [case.case_id for case in select_shard(cases, Shard(1, 3))] == ["b", "e"]
