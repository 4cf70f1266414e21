"""The cohort manifests: one per run or shard, merged on reading (an ended entry beats a pending one, later wins)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lvt.errors import InputError
from lvt.segment.cases import CohortCase, Shard
from lvt.segment.cohort_manifest import CaseResult, ManifestWriter, manifest_path, one_line, read_cohort_status


def _case(root: Path, case_id: str) -> CohortCase:
    return CohortCase(case_id, root / f"{case_id}.nii.gz", root / "out" / case_id)


def test_manifests_of_runs_and_shards_merge_by_case(tmp_path: Path) -> None:
    cases = [_case(tmp_path, name) for name in ("a", "b", "c")]
    first = ManifestWriter(manifest_path(tmp_path, None), cases, None, {})
    first.record(replace(CaseResult.of(cases[0], "done", seconds=3.0), at="2026-01-01T10:00:00.000+00:00"))
    first.record(replace(CaseResult.of(cases[1], "failed", error="bad"), at="2026-01-01T10:01:00.000+00:00"))
    shard = ManifestWriter(manifest_path(tmp_path, Shard(1, 2)), cases[:2], Shard(1, 2), {})
    shard.record(replace(CaseResult.of(cases[1], "done", seconds=2.0), at="2026-01-02T09:00:00.000+00:00"))
    # the shard never reached "a": its pending entry must not hide the earlier result
    (tmp_path / "cohort-notes.json").write_text('{"format": "something else"}', encoding="utf-8")
    status = read_cohort_status(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("cohort*.json")) == [
        "cohort-notes.json", "cohort-shard-1-of-2.json", "cohort.json"]
    assert {case: (entry["status"], entry["seconds"]) for case, entry in status.items()} == {
        "a": ("done", 3.0), "b": ("done", 2.0), "c": ("pending", None)}
    summary = json.loads((tmp_path / "cohort.json").read_text(encoding="utf-8"))["summary"]
    assert summary == {"done": 1, "skipped": 0, "failed": 1, "pending": 1}


def test_a_broken_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "cohort.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"cohort\.json: cannot read the cohort manifest"):
        read_cohort_status(tmp_path)


def test_an_error_is_one_short_line() -> None:
    assert one_line("Traceback:\n  line 1\n\tline 2 ") == "Traceback: line 1 line 2"
    assert len(one_line("x" * 2000)) == 500
