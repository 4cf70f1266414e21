"""The manifest of a cohort run: one JSON file per run (per shard), rewritten atomically after each case.

``cohort.json``, or ``cohort-shard-K-of-N.json`` for ``--shard K/N``, so that shards running at once
on many machines never write one file. Each lists its cases with status (done, skipped, failed, or
pending: not done, e.g. after Ctrl-C), seconds, a one-line error, the report's warnings and the
output folder. :func:`read_cohort_status` merges every manifest of an output root on reading.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lvt.atomic import write_text_atomically
from lvt.errors import InputError

if TYPE_CHECKING:
    from lvt.segment.cases import CohortCase, Shard

MANIFEST_FORMAT = "lvt-cohort"
MANIFEST_VERSION = 1
STATUSES = ("done", "skipped", "failed", "pending")
MAX_ERROR_CHARACTERS = 500


@dataclass
class CaseResult:
    """One case's line in the manifest; ``at`` is when it ended (UTC), None while pending."""

    case_id: str
    input: str
    output: str
    status: str
    seconds: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    at: str | None = None

    @classmethod
    def of(cls, case: CohortCase, status: str, *, seconds: float | None = None, error: str | None = None,
           warnings: Iterable[str] = ()) -> CaseResult:
        return cls(case.case_id, str(case.image), str(case.output), status, seconds, error, list(warnings),
                   None if status == "pending" else now_text())


def manifest_path(root: Path, shard: Shard | None) -> Path:
    name = "cohort.json" if shard is None else f"cohort-shard-{shard.index}-of-{shard.count}.json"
    return Path(root) / name


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def one_line(text: str) -> str:
    """An error as one line of at most 500 characters (a traceback's worth of text would drown the manifest)."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARACTERS else line[: MAX_ERROR_CHARACTERS - 3] + "..."


class ManifestWriter:
    """The manifest of one run: every case pending at first, each result recorded as it comes.

    Nothing is written until the first :meth:`write` (or :meth:`record`).
    """

    def __init__(self, path: Path, cases: Iterable[CohortCase], shard: Shard | None, options: dict) -> None:
        self._path = Path(path)
        self._header = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                        "shard": None if shard is None else str(shard), "options": options, "started_at": now_text()}
        self._results = {case.case_id: CaseResult.of(case, "pending") for case in cases}

    def record(self, result: CaseResult, *, write: bool = True) -> None:
        """Record a result; ``write=False`` defers the rewrite (thousands of skipped cases: one write)."""
        self._results[result.case_id] = result
        if write:
            self.write()

    def results(self) -> list[CaseResult]:
        return list(self._results.values())

    def write(self) -> None:
        counts = {status: 0 for status in STATUSES}
        for result in self._results.values():
            counts[result.status] += 1
        document = {**self._header, "updated_at": now_text(), "summary": counts,
                    "cases": [asdict(result) for result in self._results.values()]}
        write_text_atomically(self._path, json.dumps(document, indent=2) + "\n")


def read_cohort_status(root: Path) -> dict[str, dict]:
    """Each case's latest entry over every manifest in ``root`` (all shards, all runs), by case id.

    An entry that ended beats a pending one; of two that ended, the later wins.

    Raises:
        InputError: a manifest that is not valid JSON.
    """
    latest: dict[str, dict] = {}
    for path in sorted(Path(root).glob("cohort*.json")):
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(path, f"cannot read the cohort manifest ({error})") from error
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            continue
        for entry in document.get("cases", []):
            seen = latest.get(entry["case_id"])
            if seen is None or _rank(entry) > _rank(seen):
                latest[entry["case_id"]] = entry
    return dict(sorted(latest.items()))


def _rank(entry: dict) -> tuple[bool, str]:
    return entry.get("at") is not None, entry.get("at") or ""
