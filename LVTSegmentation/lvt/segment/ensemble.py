"""Build an ensemble model file from trained models (e.g. the fold models of a cross-validation).

The ensemble is one folder: a manifest listing every member's weights with its sha256, and a copy of
each weights file, so it moves and installs like any model. The members must agree on everything
inference reads from a manifest (spacing, patch, window, architecture, target, flips): one sliding
window setup serves them all, and only their probabilities are averaged
(:class:`lvt.segment.predict.Predictor`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lvt.atomic import atomic_folder
from lvt.errors import InputError
from lvt.segment.model_file import ModelManifest, WeightsFile, read_manifest, sha256_of_file, verified_weights

ENSEMBLE_MANIFEST = "ensemble.json"
RUN_MODEL = "final.json"  # what a training run folder contributes
_SHARED_FIELDS = ("spacing_mm", "patch_size_zyx", "window", "network", "classes", "target", "tta_flip_axes")


def member_manifests(paths: Sequence[Path]) -> list[Path]:
    """Model manifests from what the user named: a manifest, a run folder (its ``final.json``), or a
    cross-validation folder (the ``final.json`` of each ``fold_<k>``).

    Raises:
        InputError: a path that is none of these.
    """
    manifests = []
    for path in map(Path, paths):
        folds = sorted(path.glob(f"fold_*/{RUN_MODEL}"))
        if path.is_dir() and (path / RUN_MODEL).is_file():
            manifests.append(path / RUN_MODEL)
        elif path.is_dir() and folds:
            manifests.extend(folds)
        elif path.is_file():
            manifests.append(path)
        else:
            raise InputError(path, f"not a model manifest, a run folder with {RUN_MODEL}, or a folder of fold_<k> runs")
    return manifests


def _check_compatible(manifests: Sequence[tuple[ModelManifest, Path]]) -> None:
    first, first_path = manifests[0]
    for manifest, path in manifests[1:]:
        differing = [name for name in _SHARED_FIELDS if getattr(manifest, name) != getattr(first, name)]
        if differing:
            raise InputError(path, f"cannot join an ensemble with {first_path}: {', '.join(differing)} differ "
                                   "(members must share every inference setting)")


def write_ensemble(paths: Sequence[Path], output_dir: Path, name: str | None = None) -> Path:
    """Write ``output_dir`` with ``ensemble.json`` and a copy of every member's weights; return the manifest path.

    Each member's weights are checked against its own manifest's sha256 before they are copied.

    Raises:
        InputError: fewer than two members, members that differ in an inference setting, or an
            ``output_dir`` that already exists.
        ModelFileError: a member's manifest or weights file is missing, corrupt or tampered with.
    """
    manifests = [read_manifest(path) for path in member_manifests(paths)]
    members = [(path, member) for manifest, path in manifests for member in manifest.members]
    if len(members) < 2:
        raise InputError(None, f"an ensemble needs at least two models, got {len(members)}")
    _check_compatible(manifests)
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise InputError(output_dir, "already exists; choose a new folder for the ensemble")
    files = []
    with atomic_folder(output_dir, replace=False) as staging:
        for index, (manifest_path, member) in enumerate(members):
            copy = staging / f"member_{index}.safetensors"
            shutil.copyfile(verified_weights(manifest_path, member), copy)
            files.append(WeightsFile(copy.name, sha256_of_file(copy)))
        provenance = [{"model": str(path.resolve()), "name": m.name, "version": m.version,
                       "weights_files": [w.__dict__ for w in m.members], "training": m.training}
                      for m, path in manifests]
        ensemble = replace(manifests[0][0], name=name or f"{manifests[0][0].name}_ensemble", weights_file="",
                           weights_sha256="", weights_files=tuple(files), training={"ensemble": provenance},
                           metrics={})
        (staging / ENSEMBLE_MANIFEST).write_text(json.dumps(ensemble.to_dict(), indent=2) + "\n", encoding="utf-8")
    return output_dir / ENSEMBLE_MANIFEST
