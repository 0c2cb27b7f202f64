"""A z-buffer rasteriser for triangle meshes on the CPU (numba): the nearest surface per pixel.

Pixel (row v, column u) samples the image point (u, v), as ``render_depth``'s spheres do; depth is
the camera's z in mm, interpolated perspective-correctly (1/z is linear in the image), so a planar
triangle gives the exact depth of its plane along every pixel's ray.
"""
from __future__ import annotations

import numba
import numpy as np

from keras_cadstn.camera import Camera


@numba.njit(cache=True, nogil=True)
def _rasterise(u, v, z, faces, depth):  # pragma: no cover - compiled
    h, w = depth.shape
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if z[a] <= 0 or z[b] <= 0 or z[c] <= 0:
            continue
        area = (u[b] - u[a]) * (v[c] - v[a]) - (u[c] - u[a]) * (v[b] - v[a])
        if abs(area) < 1e-12:
            continue
        x0 = max(int(np.ceil(min(u[a], u[b], u[c]))), 0)
        x1 = min(int(np.floor(max(u[a], u[b], u[c]))), w - 1)
        y0 = max(int(np.ceil(min(v[a], v[b], v[c]))), 0)
        y1 = min(int(np.floor(max(v[a], v[b], v[c]))), h - 1)
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                w0 = ((u[b] - x) * (v[c] - y) - (u[c] - x) * (v[b] - y)) / area
                w1 = ((u[c] - x) * (v[a] - y) - (u[a] - x) * (v[c] - y)) / area
                w2 = 1.0 - w0 - w1
                if w0 < 0 or w1 < 0 or w2 < 0:
                    continue
                d = 1.0 / (w0 / z[a] + w1 / z[b] + w2 / z[c])
                if d < depth[y, x]:
                    depth[y, x] = d


def render_mesh(vertices: np.ndarray, faces: np.ndarray, camera: Camera, depth: np.ndarray) -> np.ndarray:
    """Z-buffer the triangles (vertices (V, 3) in camera mm, faces (F, 3) indices) into ``depth``
    (H, W) float32 mm, in place; returns it. Triangles with a vertex behind the camera are left out."""
    vertices = np.asarray(vertices, np.float64)
    z = vertices[:, 2]
    safe = np.where(z > 0, z, 1.0)
    u = vertices[:, 0] * camera.fx / safe + camera.cx
    v = vertices[:, 1] * camera.fy / safe + camera.cy
    _rasterise(u, v, z, np.ascontiguousarray(faces, np.int64), depth)
    return depth
