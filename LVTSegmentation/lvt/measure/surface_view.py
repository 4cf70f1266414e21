"""The 3D view of the surfaces (:mod:`lvt.measure.surfaces`): an off-screen VTK rendering, as a PNG.

Not every machine can render without a screen; callers that can do without the view catch
:class:`OffscreenRenderingError` (the report then says the view is missing).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lvt.atomic import atomic_path
from lvt.labels import LIVER, STRUCTURES, TUMOR, VESSEL

if TYPE_CHECKING:
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkRenderingCore import vtkRenderer, vtkRenderWindow


class OffscreenRenderingError(RuntimeError):
    """VTK cannot render without a screen here (no working EGL, OSMesa or X OpenGL)."""


def render_surfaces_png(
    surfaces: Mapping[str, vtkPolyData], path: Path | str, *, size_px: tuple[int, int] = (720, 720),
    lines_lps: Sequence[tuple[Sequence[float], Sequence[float]]] = (),
) -> Path:
    """Render the surfaces off screen, seen from the front (patient's right on the image's left).

    The liver is translucent so vessels and tumors show through it. Off-screen OpenGL can crash the
    process outright when the system lacks a driver (VTK's OSMesa window without libOSMesa
    segfaults), so a tiny render is first tried in a child process.

    Args:
        surfaces: name -> LPS surface ("liver", "vessels", "tumors"; others drawn grey).
        path: PNG file to write.
        size_px: (width, height) of the image.
        lines_lps: segments (two LPS end points each, e.g. lesions' longest axial diameters) drawn on
            top of the surfaces: a diameter lies inside its opaque tumor and would otherwise be hidden.

    Returns:
        ``path``.

    Raises:
        OffscreenRenderingError: when off-screen rendering is unavailable or drew nothing.
    """
    if not surfaces:
        raise ValueError("no surface to render")
    check_offscreen_rendering()
    window = _offscreen_render_window()
    window.SetSize(*size_px)
    renderer = _front_view_renderer(surfaces)
    window.AddRenderer(renderer)
    if lines_lps:
        window.SetNumberOfLayers(2)
        window.AddRenderer(_overlay_renderer(lines_lps, renderer))
    png = _grab_png(window)
    window.Finalize()
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(png)
    return path


_PROBE = (
    "from lvt.measure.surface_view import _offscreen_render_window\n"
    "w = _offscreen_render_window(); w.SetSize(8, 8); w.Render(); print(w.GetClassName())\n"
)


class _OffscreenCheck:
    """The child-process probe, run at most once per process and startable ahead of need.

    The probe is a fresh Python that imports VTK and renders 8x8 pixels: about 0.7 s of wall time,
    as much as a sixth of everything after inference on a 512 x 512 x 119 CT. Started before
    inference it runs while the CT is read and segmented; and once it has passed, a cohort or the
    Slicer module's worker does not pay it again for every case. A failure is not remembered: the
    next render probes again (a driver may have been installed meanwhile).
    """

    def __init__(self) -> None:
        self._running: subprocess.Popen[str] | None = None
        self._working_window: str | None = None

    def start(self) -> None:
        if self._working_window is None and self._running is None:
            with contextlib.suppress(OSError):  # reported by result(), which starts it again
                self._running = self._spawn()

    def result(self, timeout_s: float) -> str:
        if self._working_window is not None:
            return self._working_window
        probe, self._running = self._running, None
        try:
            probe = probe or self._spawn()
            out, err = probe.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            probe.kill()
            probe.communicate()
            raise OffscreenRenderingError(f"off-screen rendering test did not finish: {error}") from error
        except OSError as error:
            raise OffscreenRenderingError(f"off-screen rendering test did not start: {error}") from error
        if probe.returncode != 0:
            detail = (err.strip().splitlines() or ["no message"])[-1]
            raise OffscreenRenderingError(
                f"VTK cannot render off screen (exit code {probe.returncode}: {detail}); on Linux install "
                "an EGL driver (apt install libegl1 libgl1-mesa-dri) or OSMesa (apt install libosmesa6)"
            )
        self._working_window = out.strip()
        return self._working_window

    @staticmethod
    def _spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


_OFFSCREEN_CHECK = _OffscreenCheck()


def start_offscreen_check() -> None:
    """Start :func:`check_offscreen_rendering`'s probe now, in the background (a caller about to run inference)."""
    _OFFSCREEN_CHECK.start()


def check_offscreen_rendering(timeout_s: float = 120.0) -> str:
    """Render 8x8 pixels in a child process (once per process, when it works); return the VTK window class.

    Raises:
        OffscreenRenderingError: naming what to install when the child fails or crashes.
    """
    return _OFFSCREEN_CHECK.result(timeout_s)


def _offscreen_render_window() -> vtkRenderWindow:
    """An off-screen render window: EGL on a Linux machine without a display, VTK's default otherwise.

    VTK's default on Linux tries X first and logs a warning when there is no X server before it
    falls back to EGL; asking for EGL directly keeps logs clean on servers.
    """
    import vtkmodules.vtkRenderingOpenGL2 as opengl
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    window = opengl.vtkEGLRenderWindow() if headless and hasattr(opengl, "vtkEGLRenderWindow") else None
    window = window if window is not None else vtkRenderWindow()
    window.SetOffScreenRendering(1)
    return window


_OPACITY = {"liver": 0.35, "vessels": 1.0, "tumors": 1.0}
_COLOUR = {"liver": STRUCTURES[LIVER].color_float, "vessels": STRUCTURES[VESSEL].color_float,
           "tumors": STRUCTURES[TUMOR].color_float}


def _front_view_renderer(surfaces: Mapping[str, vtkPolyData]) -> vtkRenderer:
    """Renderer with one actor per surface and a camera looking from anterior, superior up."""
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper, vtkRenderer

    renderer = vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.SetBackground2(0.86, 0.86, 0.88)  # near-grey background: any coloured pixel is a surface
    renderer.GradientBackgroundOn()
    # no depth peeling: VTK's default order-independent transparency draws the translucent liver,
    # depth peeling drew nothing of it with Mesa's EGL (llvmpipe)
    for name, polydata in surfaces.items():
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(polydata)
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*_COLOUR.get(name, (0.7, 0.7, 0.7)))
        actor.GetProperty().SetOpacity(_OPACITY.get(name, 1.0))
        actor.GetProperty().SetSpecular(0.2)
        renderer.AddActor(actor)
    camera = renderer.GetActiveCamera()
    # LPS: anterior is -P, so a camera in front of the patient sits at -y and looks towards +y;
    # the screen's right is then +x = patient left, as on a frontal radiograph.
    camera.SetFocalPoint(0.0, 0.0, 0.0)
    camera.SetPosition(0.0, -1.0, 0.0)
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    return renderer


LINE_COLOUR = (0.85, 0.0, 0.0)  # red: stands out on the liver, vessel and tumor colours and on the background


def _overlay_renderer(lines_lps: Sequence[tuple[Sequence[float], Sequence[float]]], base: vtkRenderer) -> vtkRenderer:
    """A renderer in layer 1 that shares ``base``'s camera, so its lines are drawn over every surface."""
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper, vtkRenderer

    points, cells = vtkPoints(), vtkCellArray()
    for start, end in lines_lps:
        cells.InsertNextCell(2, (points.InsertNextPoint(*start), points.InsertNextPoint(*end)))
    polydata = vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetLines(cells)
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*LINE_COLOUR)
    actor.GetProperty().SetLineWidth(5.0)
    actor.GetProperty().LightingOff()  # flat colour: a line has no surface to shade
    overlay = vtkRenderer()
    overlay.SetLayer(1)
    overlay.SetActiveCamera(base.GetActiveCamera())
    overlay.AddActor(actor)
    return overlay


def _grab_png(window: vtkRenderWindow) -> bytes:
    """Render the window (once: the grab renders it) and return its pixels as PNG bytes.

    Raises when the render left only the background.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    rgb = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())[:, :3].astype(int)
    coloured = (rgb.max(axis=1) - rgb.min(axis=1)) > 25
    if coloured.mean() < 1e-3:
        raise OffscreenRenderingError("off-screen rendering produced an empty image")
    writer = vtkPNGWriter()
    writer.SetInputConnection(grab.GetOutputPort())
    writer.WriteToMemoryOn()
    writer.Write()
    return bytes(vtk_to_numpy(writer.GetResult()))
