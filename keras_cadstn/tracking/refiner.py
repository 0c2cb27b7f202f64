"""Learned hand-centre refinement: its training crops, its training stage, and applying it.

At test time there is no label, so the pose crop's centre comes from the depth alone
(``tracking.HandLocaliser``), and that centre is where the arm's and the body's pixels pull it: tens
of millimetres from where training centred the crops (the reference joint, refined by the centre
of mass). The refiner (``models.refiner``) looks at a coarse crop around the localiser's centre and
regresses the offset to the reference joint; the tracker then cuts the pose crop around that point
with the training pre-processing, so the pose networks see crops like the ones they were trained on.

Training crops are cut from the raw frames of an imported split around centres perturbed as the
localiser's are at test time: the localiser's own detection on that frame, and normal offsets around
the reference joint (``RefinerConfig.perturb_mm``, at most ``max_offset_mm``).
"""
from __future__ import annotations

import numpy as np

from keras_cadstn.config import RefinerConfig
from keras_cadstn.data.preprocessing import crop_and_normalize


def refiner_crop(depth_mm, centre_uvd, cube, camera, config: RefinerConfig) -> np.ndarray:
    """The refiner's input around ``centre_uvd``: (S, S, 1), normalised like the pose crops
    (``config``: any settings with an ``image_size``, the hand detector's too)."""
    crop, _ = crop_and_normalize(depth_mm, centre_uvd, cube, camera, config.image_size)
    return crop[:, :, None]


def move_centre(centre_uvd, offset_normalized, cube, camera) -> np.ndarray:
    """``centre_uvd`` moved by a cube-normalised xyz offset (the refiner's output): new uvd."""
    xyz = camera.uvd_to_xyz(np.asarray(centre_uvd, np.float64))
    return camera.xyz_to_uvd(xyz + np.asarray(offset_normalized, np.float64) * np.asarray(cube, np.float64) / 2.0)


# half the side of the window (pixels) whose depths give the surface at a point: 11 x 11 pixels,
# about 1 cm at arm's length, a patch of palm rather than one noisy pixel
SURFACE_WINDOW_PX = 5


def surface_depth(depth_mm, uvd, within_mm: float) -> float | None:
    """Median depth (mm) of the valid pixels around ``uvd``'s pixel that lie within ``within_mm``
    of its depth (the surface seen there), or None where there are none."""
    h, w = depth_mm.shape
    u, v = int(round(float(uvd[0]))), int(round(float(uvd[1])))
    r = SURFACE_WINDOW_PX
    window = depth_mm[max(v - r, 0):min(v + r + 1, h), max(u - r, 0):min(u + r + 1, w)]
    near = window[(window > 0) & (np.abs(window - uvd[2]) < within_mm)]
    return float(np.median(near)) if near.size else None


def keep_inside_hand(depth_mm, uvd, cube, config: RefinerConfig) -> np.ndarray:
    """``uvd`` (a reference joint) with its depth put ``config.behind_surface_mm`` behind the
    surface seen at its pixel where it lies more than ``config.max_behind_surface_mm`` behind it;
    unchanged otherwise, without a surface there (within the cube's half depth) or when the check
    is off."""
    if config.max_behind_surface_mm is None:
        return uvd
    surface = surface_depth(depth_mm, uvd, float(np.asarray(cube, np.float64)[2]) / 2.0)
    if surface is None or uvd[2] - surface <= config.max_behind_surface_mm:
        return uvd
    return np.array([uvd[0], uvd[1], surface + config.behind_surface_mm])


def refine_centre(refiner, depth_mm, centre_uvd, cube, camera, config: RefinerConfig,
                  iterations: int | None = None) -> np.ndarray:
    """Apply ``refiner`` (crop (1, S, S, 1) -> offset (1, 3), any backend) ``iterations`` times
    (default ``config.iterations``, the passes from a detection) from ``centre_uvd``, each result
    checked by ``keep_inside_hand`` (off unless the config sets ``max_behind_surface_mm``); returns
    the estimated reference joint (uvd). A step that would leave the camera's front (depth <= 0) is
    not taken."""
    centre = np.asarray(centre_uvd, np.float64)
    for _ in range(config.iterations if iterations is None else iterations):
        offset = np.asarray(refiner(refiner_crop(depth_mm, centre, cube, camera, config)[None]), np.float64)[0]
        if not np.all(np.isfinite(offset)) or centre[2] + offset[2] * cube[2] / 2.0 <= 0:
            break
        centre = keep_inside_hand(depth_mm, move_centre(centre, offset, cube, camera), cube, config)
    return centre
