"""The sample CT offered in Slicer's Sample Data module: a phantom made on this computer, no download.

A user can try the module with one click, also offline: the phantom (the core's lvt.phantom, a
fixed seed, so every computer gets the same CT) is written once into Slicer's cache and loaded from
there afterwards. The self-test segments the same phantom and compares with its exact truth.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import lvt
from lvt.io import write_image
from lvt.phantom import Phantom, PhantomConfig, make_phantom

SAMPLE_NAME = "LVTPhantomCT"
SAMPLE_CATEGORY = "LVT Segmentation"
# Two tumors large enough to find; 2 x 2 x 3 mm keeps the file (about 4 MB) and a CPU run short.
SAMPLE_CONFIG = PhantomConfig(seed=3, spacing_mm=(2.0, 2.0, 3.0), n_tumors=(2, 2), tumor_diameter_mm=(20.0, 35.0))


def sample_file_name() -> str:
    """The cache file name; it changes with the phantom's settings and the core's version (a new phantom)."""
    key = hashlib.sha256(f"{SAMPLE_CONFIG!r} {lvt.__version__}".encode()).hexdigest()[:12]
    return f"{SAMPLE_NAME}-{key}.nrrd"


def sample_phantom() -> Phantom:
    """The sample CT with its exact truth (deterministic: the same seed gives the same patient)."""
    return make_phantom(SAMPLE_CONFIG)


def write_sample_ct(folder: str | Path) -> Path:
    """The sample CT file in ``folder``, written (atomically, as int16 HU) only when it is not there yet."""
    path = Path(folder) / sample_file_name()
    if not path.is_file():
        image = sample_phantom().image
        write_image(image.with_array(np.rint(image.array).astype(np.int16)), path)
    return path
