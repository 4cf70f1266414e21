"""Render the extension's screenshot, ``docs/images/LVTSegmentation-screenshot.png``, from a real CT.

    python docs/images/render_screenshots.py [--ct CT] [--device auto|cpu|cuda] [--output PNG]

The top-level CMakeLists.txt gives this file to the Extensions Index as the screenshot. It shows real
results, not a mock-up: the bundled model is run once on a real CT (by default the TCIA case HCC_009,
series 103, from ../shared/data, CC BY 4.0; the attribution is in README.md beside this script), then
two images are drawn by the core's own functions and set side by side: the 3D surfaces of the liver,
vessels and tumors with each lesion's longest axial diameter (:mod:`lvt.measure.surface_view`, off-screen
VTK), and the axial slice through the largest lesion with the label overlay and its calipers
(:mod:`lvt.measure.views`). The composed PNG is reduced to 256 colours so it stays small.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_CT = REPO.parent / "shared" / "data" / "tcia_unlabeled" / "HCC_009_103_ct.nii.gz"
DEFAULT_OUTPUT = HERE / "LVTSegmentation-screenshot.png"
GAP_PX = 8
MAX_BYTES = 500_000


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT, help="CT to segment (a licence that allows showing it)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    return parser.parse_args(argv)


def segment(ct_path: Path, device: str):
    """The CT, its labels and their measurements, as ``lvt segment`` computes them (bundled model)."""
    from lvt.io import read_image
    from lvt.measure.volumes_and_lesions import measure_labels
    from lvt.segment.pipeline import SegmentOptions, load_predictor, segment_image

    ct = read_image(ct_path)
    options = SegmentOptions(device=device)
    predictor, _ = load_predictor(options)
    labels = segment_image(ct, predictor, options.postprocess).labels
    return ct, labels, measure_labels(labels)


def render_panels(ct, labels, measurements, folder: Path) -> tuple[Path, Path]:
    """The axial view through the largest lesion (with a title band) and the 3D view of the same height."""
    from lvt.measure.surface_view import render_surfaces_png
    from lvt.measure.surfaces import extract_surfaces
    from lvt.measure.views import AXIAL, TITLE_BAND_PX, Caliper, render_view_png

    if not measurements.lesions:
        raise SystemExit("render_screenshots.py: the model found no lesion in this CT; choose a CT with a tumor")
    largest = measurements.lesions[0].diameters
    ends = np.asarray(largest.long_axis_endpoints_lps_mm)
    calipers = [Caliper(largest.long_axis_endpoints_lps_mm, f"{largest.longest_mm:.1f} mm", True),
                Caliper(largest.short_axis_endpoints_lps_mm, "", False)]
    title = (f"Axial slice {largest.slice_index}: liver, vessels, tumors; largest lesion "
             f"{largest.longest_mm:.0f} x {largest.short_axis_mm:.0f} mm")
    axial = render_view_png(ct, labels, AXIAL, ends.mean(axis=0), folder / "axial.png", title=title,
                            calipers=calipers)
    rows = _read_png(axial).shape[0] - TITLE_BAND_PX
    lines = [lesion.diameters.long_axis_endpoints_lps_mm for lesion in measurements.lesions]
    surfaces = render_surfaces_png(extract_surfaces(labels), folder / "surfaces.png", size_px=(rows, rows),
                                   lines_lps=lines)
    return axial, surfaces


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        return np.asarray(image.convert("RGB"))


def compose(axial: Path, surfaces: Path, title_3d: str) -> bytes:
    """Both panels side by side on black, the 3D one under its own title band; a 256-colour PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image as PILImage

    from lvt.measure.views import TITLE_BAND_PX, TITLE_POINTS

    left, right = _read_png(axial), _read_png(surfaces)
    height, width = left.shape[0], left.shape[1] + GAP_PX + right.shape[1]
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="black")
    canvas = FigureCanvasAgg(figure)
    for image, x0 in ((left, 0), (right, left.shape[1] + GAP_PX)):
        axes = figure.add_axes((x0 / width, 0.0, image.shape[1] / width, image.shape[0] / height))
        axes.set_axis_off()
        axes.imshow(image, interpolation="nearest")
    figure.text((left.shape[1] + GAP_PX + 6) / width, 1.0 - TITLE_BAND_PX / 2.0 / height, title_3d,
                ha="left", va="center", color="white", fontsize=TITLE_POINTS)
    canvas.draw()
    rgb = PILImage.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    buffer = io.BytesIO()
    rgb.quantize(colors=256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    from lvt.atomic import atomic_path

    args = parse_arguments(argv)
    if not args.ct.is_file():
        print(f"render_screenshots.py: error: {args.ct}: CT not found (see --ct)", file=sys.stderr)
        return 2
    ct, labels, measurements = segment(args.ct, args.device)
    with tempfile.TemporaryDirectory(prefix="lvt-screenshot-") as folder:
        axial, surfaces = render_panels(ct, labels, measurements, Path(folder))
        png = compose(axial, surfaces, "3D surfaces from the front; red: longest axial diameters")
    if len(png) > MAX_BYTES:
        print(f"render_screenshots.py: error: the image has {len(png)} bytes (limit {MAX_BYTES})", file=sys.stderr)
        return 1
    with atomic_path(args.output, suffix=".png") as temporary:
        temporary.write_bytes(png)
    print(f"{args.output}: {len(png) // 1000} kB, {len(measurements.lesions)} lesion(s), "
          f"liver {measurements.whole_liver_volume_ml:.0f} mL")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
