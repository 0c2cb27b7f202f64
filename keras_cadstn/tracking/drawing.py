"""Skeletons drawn on depth images (OpenCV), for looking at tracking results."""
from __future__ import annotations

import cv2
import numpy as np

# bones as (joint, joint) in each dataset's evaluation layout (data/frames.py joint names)
SKELETONS = {
    "nyu": ((0, 1), (1, 13), (2, 3), (3, 13), (4, 5), (5, 13), (6, 7), (7, 13), (8, 9), (9, 10), (10, 13),
            (11, 13), (12, 13)),
    "icvl": tuple((0, 1 + 3 * f) for f in range(5)) + tuple((1 + 3 * f + i, 2 + 3 * f + i) for f in range(5) for i in range(2)),
}


def depth_to_bgr(depth_mm: np.ndarray, center_z: float | None = None, span_mm: float = 400.0) -> np.ndarray:
    """Depth (mm) as a colour image: a window of ``span_mm`` around ``center_z`` (default: nearest
    valid depth + span/2) mapped through a colour map; no reading is black."""
    valid = depth_mm > 0
    if center_z is None:
        center_z = (np.percentile(depth_mm[valid], 1) + span_mm / 2) if valid.any() else 1000.0
    scaled = np.clip((depth_mm - (center_z - span_mm / 2)) / span_mm, 0, 1)
    image = cv2.applyColorMap((255 * (1 - scaled)).astype(np.uint8), cv2.COLORMAP_BONE)
    image[~valid] = 0
    return image


def draw_skeleton(image: np.ndarray, joints_uvd: np.ndarray, dataset: str = "nyu", color=(0, 0, 255),
                  thickness: int = 2) -> np.ndarray:
    """Bones and joints of (K, 3) uvd on a BGR image, in place; returns it."""
    pts = [(int(round(u)), int(round(v))) for u, v in np.asarray(joints_uvd)[:, :2]]
    for a, b in SKELETONS[dataset]:
        cv2.line(image, pts[a], pts[b], color, thickness, cv2.LINE_AA)
    for p in pts:
        cv2.circle(image, p, thickness + 1, color, -1, cv2.LINE_AA)
    return image


def crop_around(image: np.ndarray, center_uv, half: int) -> np.ndarray:
    """A (2*half, 2*half) window of the image around a pixel, padded with black at the borders."""
    pad = np.pad(image, ((half, half), (half, half), (0, 0)))
    u, v = int(round(center_uv[0])) + half, int(round(center_uv[1])) + half
    return pad[v - half:v + half, u - half:u + half]
