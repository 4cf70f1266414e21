"""Chains of rounded cones (vessels, bowel, pancreas) and their distance field on the canvas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvt.phantom.canvas import FAR_MM, Canvas, Grid, Region
from lvt.phantom.shapes import capsule_sdf


@dataclass(frozen=True, eq=False)
class Tubes:
    """Chains of rounded cones: vessels, bowel, pancreas. Rows are segments."""

    starts: np.ndarray  # (N, 3) LPS mm
    ends: np.ndarray  # (N, 3)
    radii: np.ndarray  # (N, 2) radius at start and end
    tags: np.ndarray  # (N,) float attribute carried to the voxels nearest each segment

    def bounds(self, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
        reach = self.radii.max() + margin_mm
        both = np.concatenate([self.starts, self.ends])
        return both.min(axis=0) - reach, both.max(axis=0) + reach


def chain(points: list[np.ndarray] | np.ndarray, radii: list[float] | np.ndarray,
           tags: list[float] | np.ndarray | float = 0.0) -> Tubes:
    """A chain through ``points`` with a radius per point and a tag per segment."""
    points = np.asarray(points, float)
    radii = np.asarray(radii, float)
    count = len(points) - 1
    tag_array = np.broadcast_to(np.asarray(tags, float), (count,)).copy()
    return Tubes(points[:-1], points[1:], np.stack([radii[:-1], radii[1:]], axis=1), tag_array)


def tubes_distance(tubes: Tubes, points: np.ndarray) -> np.ndarray:
    """(P,) distance from a few hundred (P, 3) points to the nearest segment."""
    axis = (tubes.ends - tubes.starts)[None]
    relative = points[:, None, :] - tubes.starts[None]
    t = np.clip(np.sum(relative * axis, axis=-1) / np.maximum(np.sum(axis * axis, axis=-1), 1e-6), 0.0, 1.0)
    radius = tubes.radii[:, 0] + t * (tubes.radii[:, 1] - tubes.radii[:, 0])
    return (np.linalg.norm(relative - t[..., None] * axis, axis=-1) - radius).min(axis=1)


def join_tubes(*tubes: Tubes) -> Tubes:
    """All segments of several chains as one set."""
    return Tubes(*(np.concatenate([getattr(t, name) for t in tubes]) for name in ("starts", "ends", "radii", "tags")))


def tube_field(canvas: Canvas, tubes: Tubes) -> tuple[Region, np.ndarray, np.ndarray] | None:
    """Distance to the nearest segment and that segment's tag, over the tubes' bounding box.

    Each segment is evaluated only in its own index box, out to where its anti-aliased edge ends.
    Large segments (bowel) are evaluated box by box on broadcast coordinates; the many small ones
    (vessel branches) are enumerated all at once, in chunks, to avoid a Python loop per branch.
    """
    margin_mm = 0.5 * canvas.grid.edge_mm + 0.5
    region = canvas.region(*tubes.bounds(margin_mm))
    if region is None:
        return None
    shape = region.tex.shape
    distance = np.full(int(np.prod(shape)), FAR_MM, np.float32)
    tag = np.zeros(distance.size, np.float32)
    reach = tubes.radii.max(axis=1)[:, None] + margin_mm
    start, stop = canvas.grid.index_boxes(np.minimum(tubes.starts, tubes.ends) - reach,
                                          np.maximum(tubes.starts, tubes.ends) + reach)
    base = np.array([s.start for s in region.sl[::-1]])  # region origin in (i, j, k)
    start = np.clip(start - base, 0, shape[::-1])
    stop = np.clip(stop - base, 0, shape[::-1])
    counts = np.prod(np.maximum(stop - start, 0), axis=1)
    for n in np.flatnonzero(counts > 4096):
        _carve_segment(canvas.grid, tubes, n, start[n], stop[n], base, distance.reshape(shape), tag.reshape(shape))
    small = np.flatnonzero((counts > 0) & (counts <= 4096))
    for chunk in np.array_split(small, max(1, int(counts[small].sum()) // 1_000_000 + 1)):
        _splat_segments(canvas.grid, tubes, chunk, start, stop, counts, base, shape, distance, tag)
    return region, distance.reshape(shape), tag.reshape(shape)


def _carve_segment(grid: Grid, tubes: Tubes, n: int, start: np.ndarray, stop: np.ndarray, base: np.ndarray,
                   distance: np.ndarray, tag: np.ndarray) -> None:
    """Evaluate one large segment over its box (broadcast coordinates); keep the nearest per voxel."""
    local = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
    x, y, z = grid.points(tuple(np.arange(s.start, s.stop) + b for s, b in zip(local, base[::-1], strict=True)))
    d = capsule_sdf(x, y, z, tubes.starts[n], tubes.ends[n], *tubes.radii[n])
    closer = d < distance[local]
    distance[local] = np.where(closer, d, distance[local])
    tag[local] = np.where(closer, np.float32(tubes.tags[n]), tag[local])


def _splat_segments(grid: Grid, tubes: Tubes, chunk: np.ndarray, start: np.ndarray, stop: np.ndarray,
                    counts: np.ndarray, base: np.ndarray, shape: tuple[int, ...], distance: np.ndarray,
                    tag: np.ndarray) -> None:
    """Evaluate segments ``chunk`` on every voxel of their boxes; keep the nearest per voxel (flat arrays)."""
    segment = np.repeat(chunk.astype(np.int32), counts[chunk])
    if segment.size == 0:
        return
    offsets = (np.cumsum(counts[chunk]) - counts[chunk]).astype(np.int32)
    local = np.arange(segment.size, dtype=np.int32) - np.repeat(offsets, counts[chunk])
    size = np.maximum(stop - start, 1).astype(np.int32)
    size_i, size_ij = size[segment, 0], size[segment, 0] * size[segment, 1]
    ijk = (local % size_i + start[segment, 0], (local % size_ij) // size_i + start[segment, 1],
           local // size_ij + start[segment, 2])
    index = [(c + np.int32(b)).astype(np.float32) for c, b in zip(ijk, base, strict=True)]
    matrix, origin = grid.matrix.astype(np.float32), grid.origin.astype(np.float32)
    starts, axes = tubes.starts.astype(np.float32), (tubes.ends - tubes.starts).astype(np.float32)
    relative, along = [], []
    for row in range(3):
        point = origin[row] + matrix[row, 0] * index[0] + matrix[row, 1] * index[1] + matrix[row, 2] * index[2]
        relative.append(point - starts[segment, row])
        along.append(axes[segment, row])
    length2 = np.maximum(along[0] ** 2 + along[1] ** 2 + along[2] ** 2, np.float32(1e-6))
    t = np.clip((relative[0] * along[0] + relative[1] * along[1] + relative[2] * along[2]) / length2, 0.0, 1.0)
    radii = tubes.radii.astype(np.float32)
    radius = radii[segment, 0] + t * (radii[segment, 1] - radii[segment, 0])
    d = np.sqrt(sum((r - t * a) ** 2 for r, a in zip(relative, along, strict=True))) - radius
    flat = (ijk[2] * shape[1] + ijk[1]) * shape[2] + ijk[0]
    np.minimum.at(distance, flat, d)
    winner = d <= distance[flat]
    tag[flat[winner]] = tubes.tags[segment[winner]]
