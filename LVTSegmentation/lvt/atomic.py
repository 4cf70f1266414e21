"""Atomic file and folder writes: readers see the old thing or the new thing, never half of one.

Everything is written to a temporary sibling (same folder, so the rename stays on one file system)
and renamed over the target only when writing succeeded; on any error the temporary is removed, and
so are the parent folders the write created. The result gets the modes a plain ``open``/``mkdir``
would give (0666/0777 less the umask), not the private 0600/0700 of the temporaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lvt.errors import InputError

LOCK_SUFFIX = ".lvt-lock"
STAGING_MARK, RETIRED_MARK = ".partial-", ".old-"  # in the names of atomic_folder's temporaries


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; it replaces ``path`` when the block succeeds.

    ``suffix`` lets writers that choose the format by extension (SimpleITK, VTK, matplotlib) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path | str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")


def refuse_existing_output(path: Path, overwrite: bool) -> None:
    """An output folder is replaced only with ``--overwrite``: the one rule of ``lvt``'s checks and of the pipeline.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off.
    """
    if path.exists() and not overwrite:
        raise InputError(path, "output folder already exists (use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_folder(path: Path | str, *, replace: bool = True, lock: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` (and all of it) on success.

    Args:
        replace: replace ``path`` if it exists at the end; when False, refuse instead (it appeared
            while this block was writing).
        lock: hold ``<path>.lvt-lock`` meanwhile, so that a second writer of ``path`` is refused at
            once instead of silently replacing the first one's result.

    Raises:
        InputError: the folder cannot be created here, another writer holds the lock, or (without
            ``replace``) ``path`` appeared meanwhile.
    """
    path = Path(path)
    with contextlib.ExitStack() as stack:
        staging = _prepare(stack, path, lock)
        yield staging
        _publish(staging, path, replace)


def _prepare(stack: contextlib.ExitStack, path: Path, lock: bool) -> Path:
    """Create the parents, the lock and the staging folder; ``stack`` undoes each (parents only if empty)."""
    try:
        stack.callback(_remove_empty_folders, _make_folders(path.parent))
        if lock:
            stack.enter_context(lock_beside(path))
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{STAGING_MARK}", dir=path.parent))
    except OSError as error:
        raise InputError(path, f"cannot create the output folder ({error.strerror or error})") from error
    stack.callback(shutil.rmtree, staging, ignore_errors=True)
    return staging


def _publish(staging: Path, path: Path, replace: bool) -> None:
    """Give the staged tree its final modes and rename it to ``path`` (moving an old one aside first)."""
    set_creation_modes(staging)
    retired = None
    if path.exists():
        if not replace:
            raise InputError(path, "appeared while this run was writing it; it was not replaced "
                                   "(use --overwrite to replace it)")
        retired = Path(tempfile.mkdtemp(prefix=f".{path.name}{RETIRED_MARK}", dir=path.parent))
        os.replace(path, retired / path.name)
    os.replace(staging, path)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def remove_leftovers(path: Path | str) -> list[Path]:
    """Remove the temporaries that a killed writer of ``path`` left beside it; return them.

    A process killed outright (SIGKILL, out of memory) cannot clean up; call this while holding
    ``path``'s lock (:func:`lock_beside`), so that no live writer's temporaries are taken.
    """
    path = Path(path)
    prefixes = (f".{path.name}{STAGING_MARK}", f".{path.name}{RETIRED_MARK}")
    siblings = path.parent.iterdir() if path.parent.is_dir() else iter(())
    found = sorted(p for p in siblings for prefix in prefixes  # mkdtemp's random tail has no dot: not "a.old-b"'s
                   if p.name.startswith(prefix) and "." not in p.name[len(prefix):])
    for leftover in found:
        shutil.rmtree(leftover, ignore_errors=True)
    return found


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors; return those created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _remove_empty_folders(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty: the result (or someone else's file) is in it
            folder.rmdir()


@contextlib.contextmanager
def lock_beside(path: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<path>.lvt-lock`` while the block runs; the file is removed after.

    The operating system drops the lock when the process dies, so a killed run never blocks the next.

    Raises:
        InputError: another process holds the lock.
        OSError: the lock file cannot be created.
    """
    lock = path.with_name(path.name + LOCK_SUFFIX)
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(handle):
            os.close(handle)
            raise InputError(path, "another lvt run is writing this output folder now; wait for it to finish "
                                   "or choose another folder")
        if _is_same_file(handle, lock):
            break
        os.close(handle)  # its holder removed it between our open and lock: lock the new one
    try:
        yield lock
    finally:
        _release(handle, lock)


def _try_lock(handle: int) -> bool:
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_same_file(handle: int, lock: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(lock))
    except FileNotFoundError:
        return False


def _release(handle: int, lock: Path) -> None:
    """Remove the lock file while still holding it (POSIX), so that no third run locks a stale file."""
    if os.name != "nt":
        lock.unlink(missing_ok=True)
    os.close(handle)
    if os.name == "nt":
        with contextlib.suppress(OSError):  # another run opened it meanwhile; it removes it when done
            lock.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask, read from /proc where it can be: setting it to read it races other threads."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o077)  # a racing thread gets private files for a moment, never public ones
    os.umask(mask)
    return mask


def set_creation_modes(folder: Path) -> None:
    """Folders 0777 and files 0666 less the umask, throughout ``folder`` (as mkdir and open would make them)."""
    umask = current_umask()
    os.chmod(folder, 0o777 & ~umask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
