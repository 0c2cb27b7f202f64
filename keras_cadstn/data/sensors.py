"""What each family of depth sensor does to a clean depth image (mm, 0 = no reading), as options of
the synthetic generator (``SynthConfig.sensor``):

- ``kinect1`` (structured light, NYU's sensor): the projector's shadow, a band without depth beside
  the near side of every depth edge, as wide as the disparity jump; disparity quantised to 1/8 px,
  so depth comes in steps that grow with distance squared; ragged (blocky) silhouette edges.
- ``sr300`` (coded light, SR300 / SR305): nothing beyond about 1.2 m; thin silhouettes (a pixel
  lost along every edge); little noise.
- ``d400`` (active stereo): flying pixels between a near and a far surface along depth edges; holes
  where the stereo match fails; noise growing with distance squared.

``apply_sensor`` picks the family per sequence for ``"mixed"``. Every parameter is drawn from a
range so that no single sensor's numbers are learned.
"""
from __future__ import annotations

import numpy as np

from keras_cadstn.camera import Camera
from keras_cadstn.config import SENSORS
from keras_cadstn.errors import ConfigError

FAMILIES = SENSORS[1:4]
KINECT_BASELINE_MM = 75.0
EDGE_MM = 40.0  # a depth edge: neighbours this much apart
NO_READING = 1e9  # no reading counts as very far (finite: no inf - inf)


def _edges(depth: np.ndarray) -> tuple:
    """(near side of a jump to the right, near side of a jump to the left): pixels whose right /
    left neighbour lies more than EDGE_MM further away (or has no reading)."""
    d = np.where(depth > 0, depth, NO_READING)
    right = np.zeros(depth.shape, bool)
    left = np.zeros(depth.shape, bool)
    right[:, :-1] = (d[:, 1:] - d[:, :-1] > EDGE_MM) & (depth[:, :-1] > 0)
    left[:, 1:] = (d[:, :-1] - d[:, 1:] > EDGE_MM) & (depth[:, 1:] > 0)
    return right, left


def projector_shadow(depth: np.ndarray, camera: Camera, baseline_mm: float = KINECT_BASELINE_MM) -> np.ndarray:
    """The far surface right of every near edge loses the pixels the projector cannot light: as many
    as the disparity jump, baseline * fx * (1/z_near - 1/z_far) (projector right of the camera)."""
    out = depth.copy()
    right, _ = _edges(depth)
    v, u = np.nonzero(right)
    near = depth[v, u]
    far = np.where(depth[v, u + 1] > 0, depth[v, u + 1], np.inf)
    width = np.rint(baseline_mm * camera.fx * (1.0 / near - 1.0 / far)).astype(np.int64)
    for k in range(1, int(width.max(initial=0)) + 1):  # one step right of every edge at a time
        sel = (width >= k) & (u + k < depth.shape[1])
        vs, us = v[sel], u[sel] + k
        shadowed = depth[vs, us] > near[sel] + EDGE_MM  # only the far surface is in shadow
        out[vs[shadowed], us[shadowed]] = 0.0
    return out


def quantise_disparity(depth: np.ndarray, camera: Camera, baseline_mm: float = KINECT_BASELINE_MM,
                       subpixel: int = 8) -> np.ndarray:
    """Depth from disparity rounded to 1/``subpixel`` px: steps of about z^2 / (b f subpixel) mm."""
    out = depth.copy()
    valid = depth > 0
    bf = baseline_mm * camera.fx
    disparity = np.round(bf / depth[valid] * subpixel) / subpixel
    out[valid] = bf / disparity
    return out


def erode_silhouettes(depth: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Each pixel on the near side of a depth edge lost with probability ``share``."""
    right, left = _edges(depth)
    up = np.zeros(depth.shape, bool)
    down = np.zeros(depth.shape, bool)
    dt = np.where(depth > 0, depth, NO_READING)
    down[:-1, :] = (dt[1:, :] - dt[:-1, :] > EDGE_MM) & (depth[:-1, :] > 0)
    up[1:, :] = (dt[:-1, :] - dt[1:, :] > EDGE_MM) & (depth[1:, :] > 0)
    edge = right | left | up | down
    out = depth.copy()
    out[edge & (rng.random(depth.shape) < share)] = 0.0
    return out


def flying_pixels(depth: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Pixels on the far side of a depth edge take a depth between the two surfaces."""
    out = depth.copy()
    right, left = _edges(depth)
    for mask, step in ((right, 1), (left, -1)):
        v, u = np.nonzero(mask)
        keep = rng.random(len(v)) < share
        v, u = v[keep], u[keep]
        far = depth[v, u + step]
        ok = far > 0
        t = rng.uniform(0.2, 0.8, ok.sum())
        out[v[ok], u[ok] + step] = depth[v[ok], u[ok]] * (1 - t) + far[ok] * t
    return out


def holes(depth: np.ndarray, rng: np.random.Generator, count: int, radius_px: tuple) -> np.ndarray:
    """``count`` round holes without depth at random places."""
    out = depth.copy()
    h, w = depth.shape
    vv, uu = np.ogrid[0:h, 0:w]
    for _ in range(count):
        u, v, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(*radius_px)
        out[(uu - u) ** 2 + (vv - v) ** 2 <= r * r] = 0.0
    return out


def apply_sensor(depth: np.ndarray, family: str, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A clean depth image (mm) as ``family`` would see it (a new array)."""
    if family == "basic":
        return depth.copy()
    if family == "kinect1":
        out = projector_shadow(depth, camera, KINECT_BASELINE_MM * rng.uniform(0.9, 1.1))
        out = erode_silhouettes(out, rng, rng.uniform(0.2, 0.5))
        return quantise_disparity(out, camera)
    if family == "sr300":
        out = erode_silhouettes(depth, rng, rng.uniform(0.6, 1.0))
        out[out > rng.uniform(1000.0, 1300.0)] = 0.0
        return out
    if family == "d400":
        out = flying_pixels(depth, rng, rng.uniform(0.3, 0.8))
        out = holes(out, rng, int(rng.integers(0, 4)), (3.0, 12.0))
        valid = out > 0
        out[valid] += rng.normal(0.0, 1.0, valid.sum()) * rng.uniform(1.0, 3.0) * (out[valid] / 1000.0) ** 2
        return out
    raise ConfigError(f"sensor must be one of {SENSORS}, got {family!r}")
