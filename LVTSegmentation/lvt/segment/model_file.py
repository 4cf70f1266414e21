"""Model files: ``safetensors`` weights plus a JSON manifest that holds everything inference needs.

The manifest names the weights file and its sha256 (or, for an ensemble, several such files, whose
probabilities inference averages), the classes, spacing, patch size, HU window,
architecture (its head: sigmoid or softmax), the target kind the network learned (ml, mlx or mc: how
its outputs decode) and training provenance. Loading verifies the hash and the architecture; nothing is
ever unpickled, so a model file from a stranger cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lvt.atomic import atomic_path, write_text_atomically
from lvt.errors import ModelFileError
from lvt.labels import CLASS_KEYS
from lvt.segment.network import UNet, build_network
from lvt.segment.network_config import HEAD_OF_TARGET, NetworkConfig, TargetKind
from lvt.segment.window import Window

MANIFEST_FORMAT = "lvt-model"
MANIFEST_FORMAT_VERSION = 2  # 2: ``weights_files`` (ensembles); single-model manifests are still written as 1
BUNDLED_MODEL_NAME = "lvt_default"


@dataclass(frozen=True)
class WeightsFile:
    """One weights file of a model, relative to its manifest's folder, and the sha256 it must have."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ModelManifest:
    """What a model file promises: inference reads these settings, it never guesses them."""

    name: str
    version: str
    spacing_mm: tuple[float, float, float]
    patch_size_zyx: tuple[int, int, int]
    window: Window
    network: NetworkConfig
    classes: tuple[str, ...] = CLASS_KEYS
    target: TargetKind = "ml"  # how the outputs decode (lvt.segment.postprocess.decode_masks); older files are ML
    tta_flip_axes: tuple[int, ...] = (0, 1, 2)
    weights_file: str = ""
    weights_sha256: str = ""
    weights_files: tuple[WeightsFile, ...] = ()  # an ensemble's members, instead of weights_file
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.classes) != CLASS_KEYS:
            raise ModelFileError(f"model classes {self.classes} are not the LVT classes {CLASS_KEYS}")
        if HEAD_OF_TARGET.get(self.target) != self.network.head:
            raise ModelFileError(f"target {self.target!r} does not fit a {self.network.head} head "
                                 f"(ml and mlx are sigmoid, mc is softmax)")
        if any(p % self.network.divisor for p in self.patch_size_zyx):
            raise ModelFileError(
                f"patch size {self.patch_size_zyx} must be a multiple of {self.network.divisor} for this network"
            )
        if self.weights_files and self.weights_file:
            raise ModelFileError("a manifest names either weights_file or weights_files (an ensemble), not both")

    @property
    def members(self) -> tuple[WeightsFile, ...]:
        """The weights files inference runs: the ensemble's, or the one ``weights_file``."""
        return self.weights_files or (WeightsFile(self.weights_file, self.weights_sha256),)

    @property
    def weights_identity(self) -> str:
        """One sha256 that names the weights in reports: the file's, or for an ensemble that of its members' list."""
        if not self.weights_files:
            return self.weights_sha256
        return hashlib.sha256(",".join(member.sha256 for member in self.weights_files).encode("ascii")).hexdigest()

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            format=MANIFEST_FORMAT,
            format_version=2 if self.weights_files else 1,  # older LVT refuses an ensemble instead of misreading it
            window=self.window.to_dict(),
            network=self.network.to_dict(),
            classes=list(self.classes),
            spacing_mm=list(self.spacing_mm),
            patch_size_zyx=list(self.patch_size_zyx),
            tta_flip_axes=list(self.tta_flip_axes),
        )
        if not self.weights_files:
            data.pop("weights_files")
        return data

    @classmethod
    def from_dict(cls, data: dict, source: Path | str = "manifest") -> ModelManifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise ModelFileError(f"{source}: not an LVT model manifest (format={data.get('format')!r})")
        if int(data.get("format_version", 0)) > MANIFEST_FORMAT_VERSION:
            raise ModelFileError(f"{source}: manifest format {data['format_version']} is newer than this LVT")
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                spacing_mm=tuple(float(s) for s in data["spacing_mm"]),
                patch_size_zyx=tuple(int(p) for p in data["patch_size_zyx"]),
                window=Window.from_dict(data["window"]),
                network=NetworkConfig.from_dict(data["network"]),
                classes=tuple(data.get("classes", CLASS_KEYS)),
                target=str(data.get("target", "ml")),
                tta_flip_axes=tuple(int(a) for a in data.get("tta_flip_axes", (0, 1, 2))),
                **_weights_fields(data),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"{source}: invalid manifest field: {error}") from error


def _weights_fields(data: dict) -> dict:
    """``weights_file`` + ``weights_sha256``, or an ensemble's ``weights_files`` list of {file, sha256}."""
    if "weights_files" not in data:
        return {"weights_file": str(data["weights_file"]), "weights_sha256": str(data["weights_sha256"])}
    members = data["weights_files"]
    if data.get("weights_file"):
        raise ValueError("give weights_file (one model) or weights_files (an ensemble), not both")
    if not isinstance(members, list) or not members:
        raise ValueError("weights_files must be a non-empty list of {file, sha256}")
    return {"weights_files": tuple(WeightsFile(str(m["file"]), str(m["sha256"])) for m in members)}


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies)."""
    with atomic_path(path, suffix=".safetensors") as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)


def save_model(network: torch.nn.Module, manifest: ModelManifest, manifest_path: Path) -> ModelManifest:
    """Write ``<name>.safetensors`` beside ``manifest_path`` and the manifest with its sha256.

    Returns:
        The manifest as written (weights file name and hash filled in).
    """
    manifest_path = Path(manifest_path)
    weights_path = manifest_path.with_suffix(".safetensors")
    save_tensors(weights_path, dict(network.state_dict()))
    written = replace(manifest, weights_file=weights_path.name, weights_sha256=sha256_of_file(weights_path),
                      weights_files=())
    write_text_atomically(manifest_path, json.dumps(written.to_dict(), indent=2) + "\n")
    return written


PICKLE_NOTE = "this is a PyTorch pickle; LVT loads only safetensors + manifest (a .json written with the weights)"
SHOWN_MISMATCHES = 5


def read_manifest(path: Path | str) -> tuple[ModelManifest, Path]:
    """Read a manifest (or find it beside a ``.safetensors`` file); return it and its path.

    A pickle (``.pt``, ``.pth``, ``.ckpt``) is recognised by its first bytes and refused unopened.
    """
    path = Path(path)
    if path.is_file() and is_pickle(path):
        raise ModelFileError(f"{path}: {PICKLE_NOTE}")
    if path.suffix == ".safetensors":
        manifest_path = path.with_suffix(".json")
        if not manifest_path.is_file():
            raise ModelFileError(f"{path}: no model manifest beside these weights (looked for {manifest_path}); "
                                 "give the manifest .json that was written with them")
        path = manifest_path
    if not path.is_file():
        raise ModelFileError(f"{path}: model manifest not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: manifest is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: manifest must be a JSON object")
    try:
        return ModelManifest.from_dict(data, source=path), path
    except ModelFileError as error:  # the checks of the manifest itself do not know its file
        raise ModelFileError(str(error) if str(path) in str(error) else f"{path}: {error}") from error


def is_pickle(path: Path) -> bool:
    """Whether a file starts like a PyTorch checkpoint: a zip archive or a pickle (protocol 2 to 5).

    A safetensors file may start with the same byte as a pickle (its header length), but its 9th
    byte opens the JSON header.
    """
    with open(path, "rb") as handle:
        head = handle.read(9)
    return head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
                                        and head[8:9] != b"{")


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[UNet, ModelManifest]:
    """Load one model for inference (or to start training from): verify the hash and the architecture.

    Raises:
        ModelFileError: as :func:`load_models`, and for an ensemble (several networks: use that).
    """
    manifest, manifest_path = read_manifest(path)
    if len(manifest.members) > 1:
        raise ModelFileError(f"{manifest_path}: an ensemble of {len(manifest.members)} models, not one model; "
                             "give one of its members (lvt segment --model takes the ensemble)")
    return _load_member(manifest, manifest_path, manifest.members[0]).to(device).eval(), manifest


def load_models(path: Path | str, device: torch.device | str = "cpu") -> tuple[list[UNet], ModelManifest]:
    """Load a model or every member of an ensemble: verify each hash and architecture, never unpickle.

    Raises:
        ModelFileError: naming the file: missing or corrupt files, a pickle, a hash mismatch, or
            weights that do not fit the manifest's architecture (one line per differing tensor).
    """
    manifest, manifest_path = read_manifest(path)
    return [_load_member(manifest, manifest_path, member).to(device).eval() for member in manifest.members], manifest


def verified_weights(manifest_path: Path, member: WeightsFile) -> Path:
    """The path of a manifest's weights file, once it exists and has the sha256 the manifest gives."""
    weights_path = manifest_path.parent / member.file
    if not member.file or not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: weights file named in {manifest_path.name} not found")
    actual = sha256_of_file(weights_path)
    if actual != member.sha256:
        raise ModelFileError(
            f"{weights_path}: sha256 {actual[:12]}... does not match the manifest ({member.sha256[:12]}...);"
            " the file is corrupt or belongs to another model"
        )
    return weights_path


def _load_member(manifest: ModelManifest, manifest_path: Path, member: WeightsFile) -> UNet:
    weights_path = verified_weights(manifest_path, member)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        reason = PICKLE_NOTE if is_pickle(weights_path) else str(error)
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({reason})") from error
    network = build_network(manifest.network)
    mismatches = state_mismatches(network.state_dict(), state)
    if mismatches:
        shown = mismatches[:SHOWN_MISMATCHES]
        more = [f"... and {len(mismatches) - len(shown)} more"] if len(mismatches) > len(shown) else []
        raise ModelFileError(f"{weights_path}: weights do not match the manifest's architecture "
                             f"({manifest_path.name}):\n  " + "\n  ".join(shown + more))
    network.load_state_dict(state, strict=True)
    return network


def state_mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """One line per tensor that the network and the weights disagree on (missing, extra, other shape)."""
    lines = [f"{name}: shape {tuple(found[name].shape)} in the weights, {tuple(tensor.shape)} in the network"
             for name, tensor in expected.items() if name in found and found[name].shape != tensor.shape]
    lines += [f"{name}: missing from the weights" for name in expected if name not in found]
    lines += [f"{name}: in the weights but not in the network" for name in found if name not in expected]
    return lines


def bundled_model_path() -> Path:
    """The manifest of the model shipped in ``Resources/Models`` of the source tree or extension."""
    return Path(__file__).resolve().parents[3] / "Resources" / "Models" / f"{BUNDLED_MODEL_NAME}.json"
