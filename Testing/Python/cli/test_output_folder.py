"""The output folder of `lvt segment` / `lvt measure`: created or refused in one line, one writer at a time,
cancelled at any step with nothing left behind, and readable by others as the umask says."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import lvt.measure.views
from lvt.atomic import LOCK_SUFFIX
from lvt.cli.main import run
from lvt.errors import CancelledError, InputError
from lvt.progress import Progress, ProgressCallback
from lvt.segment.pipeline import atomic_output_folder, measure_file


def _label_map(path: Path) -> Path:
    """A small liver with a vessel and a tumor, 2 mm voxels."""
    labels = np.zeros((20, 32, 32), dtype=np.uint8)
    labels[4:16, 6:26, 6:26] = 1
    labels[5:15, 20, 16] = 2
    labels[8:12, 10:15, 10:15] = 3
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path


def _measure(tmp_path: Path, out: Path, *extra: str) -> int:
    labels = tmp_path / "labels.nii.gz"
    if not labels.exists():
        _label_map(labels)
    return run(["measure", str(labels), "-o", str(out), "--progress", "none", *extra])


@pytest.mark.parametrize("command", ["segment", "measure"])
@pytest.mark.parametrize("where", ["under_a_file", "deeper_under_a_file", "proc"])
def test_an_output_folder_that_cannot_be_created_is_one_line(command: str, where: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    source = _label_map(tmp_path / "labels.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = {"under_a_file": blocker / "out", "deeper_under_a_file": blocker / "sub" / "out",
           "proc": Path("/proc/lvt-test")}[where]
    if where == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    before = set(tmp_path.iterdir())
    code = run([command, str(source), "-o", str(out), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"lvt: error: {out}: cannot create the output folder (") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before


def test_cancel_when_the_report_starts_exits_130_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arriving as the report stage starts (the case that used to finish and write its output)."""
    def progress(event: Progress) -> None:
        if event.stage == "report" and event.done == 0:
            signal.raise_signal(signal.SIGTERM)  # the handler of cancel_on_signals sets the cancel event

    monkeypatch.setattr("lvt.cli.measure.make_progress", lambda style: progress)
    _label_map(tmp_path / "labels.nii.gz")
    before = set(tmp_path.iterdir())
    out = tmp_path / "out"
    assert _measure(tmp_path, out) == 130
    assert "cancelled" in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before


def _events(tmp_path: Path) -> list[tuple[str, float]]:
    events: list[tuple[str, float]] = []
    measure_file(_label_map(tmp_path / "labels.nii.gz"), tmp_path / "first", write_surfaces=True,
                 progress=lambda event: events.append((event.stage, event.done)))
    return events


def _cancel_at(count: int) -> tuple[threading.Event, list[Progress], ProgressCallback]:
    """A cancel event set by the ``count``-th progress event, and the events seen."""
    cancel, seen = threading.Event(), []

    def progress(event: Progress) -> None:
        seen.append(event)
        if len(seen) == count:
            cancel.set()

    return cancel, seen, progress


def test_every_reported_step_is_a_cancel_point(tmp_path: Path) -> None:
    events = _events(tmp_path)
    assert {stage for stage, _ in events} == {"read", "measure", "surfaces", "report"}
    for index, (stage, done) in enumerate(events[:-1]):  # the last one reports the finished job
        cancel, seen, progress = _cancel_at(index + 1)
        out = tmp_path / f"out{index}"
        with pytest.raises(CancelledError):
            measure_file(tmp_path / "labels.nii.gz", out, progress=progress, cancel=cancel)
        assert len(seen) == index + 1, f"went on after a cancel at {stage} {done}"
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


def test_cancel_between_report_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2D views take seconds: a cancel during one stops before the next."""
    cancel = threading.Event()
    rendered: list[Path] = []
    real = lvt.measure.views.render_view_png

    def render_then_cancel(*args: object, **kwargs: object) -> Path:
        rendered.append(real(*args, **kwargs))
        cancel.set()
        return rendered[-1]

    monkeypatch.setattr(lvt.measure.views, "render_view_png", render_then_cancel)
    with pytest.raises(CancelledError):
        measure_file(_label_map(tmp_path / "labels.nii.gz"), tmp_path / "out", write_surfaces=False, cancel=cancel)
    assert len(rendered) == 1
    assert not (tmp_path / "out").exists()


_HOLD_LOCK = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from lvt.atomic import lock_beside\n"
    "with lock_beside(Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "locked"
        code = _measure(tmp_path, out)
        err = capsys.readouterr().err
        assert code == 2 and f"lvt: error: {out}: another lvt run is writing" in err, err
        assert not out.exists()
    finally:
        first.communicate("go\n", timeout=30)
    assert first.returncode == 0
    assert not out.with_name(out.name + LOCK_SUFFIX).exists()  # the first run removed its lock
    assert _measure(tmp_path, out) == 0  # and the folder is free again
    assert not out.with_name(out.name + LOCK_SUFFIX).exists()


def test_two_threads_on_one_output_one_writes_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with atomic_output_folder(out, overwrite=False) as staging:
                (staging / "mine.txt").write_text("first patient")
                inside.set()
                release.wait(30)
        except BaseException as error:  # reported to the test below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    with pytest.raises(InputError, match="another lvt run is writing"), atomic_output_folder(out, overwrite=False):
        pass
    release.set()
    thread.join(30)
    assert not errors and (out / "mine.txt").read_text() == "first patient"


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_appears_meanwhile_is_replaced_only_with_overwrite(overwrite: bool, tmp_path: Path) -> None:
    out = tmp_path / "out"
    context = atomic_output_folder(out, overwrite=overwrite)
    staging = context.__enter__()
    (staging / "mine.txt").write_text("this run")
    out.mkdir()
    (out / "theirs.txt").write_text("someone else's")
    if overwrite:
        context.__exit__(None, None, None)
        assert [p.name for p in out.iterdir()] == ["mine.txt"]
    else:
        with pytest.raises(InputError, match="appeared while this run was writing it"):
            context.__exit__(None, None, None)
        assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_follow_the_umask(umask: int, folder_mode: int, file_mode: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        assert _measure(tmp_path, tmp_path / "out", "--no-surfaces") == 0
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    paths = [out, *out.rglob("*")]
    assert {p.name for p in paths} >= {"out", "views", "report.json", "report.html", "labels.nii.gz"}
    for path in paths:
        expected = folder_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"
