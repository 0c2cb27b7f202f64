"""Finding the hand in a raw depth frame without labels: the nearest blobs' palms, checked and moved to the
palm by the learned detector, then followed from frame to frame."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from keras_cadstn.data.preprocessing import hand_center
from keras_cadstn.errors import NoHandError
from keras_cadstn.tracking.detector import DETECTOR_PATH, load_detector


@dataclasses.dataclass(frozen=True)
class HandLocaliser:
    """The hand centre from depth alone, no labels.

    Real scenes have the person behind the hand (forearm, head and torso 150-400 mm behind it), so
    the centre of mass of everything near the camera is the body. Detection (``find_palm``):
    1. the nearest depth d0 (a low percentile, so a few flying pixels do not count);
    2. the connected components of the pixels within ``near_band_mm`` of d0 (a hand's depth
       extent; the body lies behind it), nearest first;
    3. the arm's end: where the component meets the image border or runs out of the band (deeper
       pixels), the arm continues; the hand lies within ``reach_mm`` of the component's pixel
       farthest from there (the whole component if nothing touches the border or the band's edge);
    4. the palm: the point of that part farthest from its outline (the centre of the largest
       inscribed circle); a component whose circle is not palm-sized (``palm_radius_mm``: larger is
       a head, a torso or furniture, smaller is noise) is skipped, and without one there is no hand;
    5. with the learned detector (default; ``keras_cadstn.tracking.detector``): instead of step 4's choice,
       the nearest proposals (palm-sized first) are moved to the palm by a small CNN and kept where
       it finds a hand; none kept: no hand. ``detector_path=None`` stops at step 4.
    ``detect`` then centres the crop as the training pre-processing does (centre of mass in the
    cube, repeated once) from the palm, with pixels deeper than d0 + near band + 30 mm left out.
    ``track``: the same refinement from a point of the previous frame (HandTracker gives the hand's
    reference joint as its networks predicted it), pixels deeper than it + ``near_band_mm`` left
    out; detection again when that cube is empty or, asked to ``verify``, when the detector finds
    no hand at the point (detecting in every frame follows occluders passing in front of the hand
    and costs the detector's passes). Detection looks at every ``step``-th pixel.
    Measured: docs/results.md, "Finding the hand".
    """
    band_mm: tuple = (100.0, 1500.0)
    nearest_percentile: float = 0.5
    min_pixels: int = 50  # fewer valid pixels than this near the camera: no hand
    step: int = 2
    near_band_mm: float = 120.0
    reach_mm: float = 150.0  # fingertips to palm centre is 50-130 mm
    palm_radius_mm: tuple = (12.0, 55.0)  # inscribed circle of a palm (adult: about 35-45 mm)
    # the learned detector that checks and moves the proposals (``keras_cadstn.tracking.detector``; default:
    # the one shipped with the package); None: geometric detection alone
    detector_path: str | None = DETECTOR_PATH

    def palm_candidates(self, depth_mm: np.ndarray, camera) -> tuple:
        """(proposals, the nearest depth d0): steps 1-4 above without the size test. ``proposals``
        yields (palm uvd, palm-sized) of the blobs near the camera, nearest first, each computed as
        it is asked for (the geometric detection stops at the first palm-sized one)."""
        s = self.step
        d = depth_mm[::s, ::s]
        valid = (d > self.band_mm[0]) & (d < self.band_mm[1])
        if np.count_nonzero(valid) * s ** 2 < self.min_pixels:
            return iter(()), None
        d0 = float(np.percentile(d[valid], self.nearest_percentile))
        near = valid & (d <= d0 + self.near_band_mm)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8), connectivity=8)
        big = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] * s ** 2 >= self.min_pixels]
        return self._proposals(d, labels, big, d0, camera), d0

    def _proposals(self, d, labels, big, d0, camera):
        s = self.step
        for k in sorted(big, key=lambda k: np.percentile(d[labels == k], 5)):
            component = labels == k
            vs, us = np.nonzero(component)
            zs = d[component].astype(np.float64)
            uvd = np.stack([us * float(s), vs * float(s), zs], axis=-1)
            root = component & (d >= d0 + self.near_band_mm - 25.0)
            root[[0, -1], :] |= component[[0, -1], :]
            root[:, [0, -1]] |= component[:, [0, -1]]
            hand = np.ones(len(zs), bool)
            if root.any() and not root.all():
                to_root = cv2.distanceTransform((~root).astype(np.uint8), cv2.DIST_L2, 5)[component]
                end = int(np.argmax(to_root * zs))  # pixels -> mm at each pixel's depth (x s / f: a constant)
                xyz = camera.uvd_to_xyz(uvd)
                hand = np.linalg.norm(xyz - xyz[end], axis=1) < self.reach_mm
            mask = np.zeros(component.shape, np.uint8)
            mask[vs[hand], us[hand]] = 1
            inner_mm = cv2.distanceTransform(mask, cv2.DIST_L2, 5)[vs, us] * s * zs / camera.fx
            best = int(np.argmax(inner_mm * hand))
            yield uvd[best], bool(self.palm_radius_mm[0] <= inner_mm[best] <= self.palm_radius_mm[1])

    def find_palm(self, depth_mm: np.ndarray, camera) -> tuple | None:
        """(palm uvd, nearest depth d0) or None. With the learned detector: the proposals, palm-sized
        first, checked and moved by it; without: the first palm-sized proposal."""
        proposals, d0 = self.palm_candidates(depth_mm, camera)
        if self.detector_path is None:
            palm = next((c for c, sized in proposals if sized), None)
            return None if palm is None else (palm, d0)
        candidates = list(proposals)
        if not candidates:
            return None
        ordered = [c for c, sized in candidates if sized] + [c for c, sized in candidates if not sized]
        found = load_detector(self.detector_path)(depth_mm, camera, ordered)
        return None if found is None else (found[0], d0)

    def detect(self, depth_mm: np.ndarray, cube, camera) -> np.ndarray | None:
        """The crop centre (uvd) of the hand found in this frame alone, or None."""
        return self.centre_from_palm(depth_mm, self.find_palm(depth_mm, camera), cube, camera)

    def centre_from_palm(self, depth_mm: np.ndarray, found, cube, camera) -> np.ndarray | None:
        """The crop centre (uvd) around ``find_palm``'s result (None: no hand), or None."""
        if found is None:
            return None
        palm, d0 = found
        try:
            return hand_center(depth_mm, palm, cube, camera, coarse_step=self.step,
                               far_limit=d0 + self.near_band_mm + 30.0)
        except NoHandError:
            return None

    def is_hand(self, depth_mm: np.ndarray, point_uvd, camera) -> bool:
        """Whether the learned detector sees a hand at ``point_uvd`` (without it: True, unchecked)."""
        if self.detector_path is None:
            return True
        detector = load_detector(self.detector_path)
        return detector.probability(depth_mm, camera, point_uvd) >= detector.config.threshold

    def track(self, depth_mm: np.ndarray, previous_uvd, cube, camera, verify: bool = False) -> tuple:
        """(centre uvd or None, 'tracked' | 'detected'). ``verify``: where the detector sees no hand at
        ``previous_uvd`` and finds one elsewhere, that one (a hand briefly hidden behind an
        occluder is found nowhere, and stays tracked)."""
        if previous_uvd is None:
            return self.detect(depth_mm, cube, camera), "detected"
        searched = verify and not self.is_hand(depth_mm, previous_uvd, camera)
        if searched:
            detected = self.detect(depth_mm, cube, camera)
            if detected is not None:
                return detected, "detected"
        try:
            return hand_center(depth_mm, previous_uvd, cube, camera, coarse_step=self.step,
                               far_limit=previous_uvd[2] + self.near_band_mm), "tracked"
        except NoHandError:
            return (None if searched else self.detect(depth_mm, cube, camera)), "detected"
