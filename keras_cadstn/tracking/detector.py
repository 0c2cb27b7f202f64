"""Learned hand detection (ours; DeepPrior++'s refinement idea turned into a detector).

With a person behind the hand, the geometric localiser (``tracking.HandLocaliser``: the nearest
blobs, each one's arm end and the largest inscribed circle) proposes the right blob but not always
the palm: where the forearm comes nearer to the camera than the hand, or an object touches it, its
point lands 150-250 mm away, and a palm-sized part of the body or of an object passes for a hand.
The detector (``models.build_hand_detector``: the centre refiner's network with a second output)
looks at a 32x32 crop of a 300 mm cube around each proposal, moves it by the regressed offset to the
palm a few times, and says how likely a hand is at the point it ends on; the most likely point
above ``DetectorConfig.threshold`` is the palm, and without one there is no hand.

It is trained on synthetic scenes (``SynthConfig(person=True)`` and the main job's scenes with
occluders) with crops around the localiser's proposals, around the palm moved by a normal offset, and
around random pixels, in frames with and without the hand, each crop also rotated by a multiple of
90 degrees and mirrored (real arms come from every side: without this, two of the eight real
RealSense frames, an arm raised above the head with the hand hanging down, were lost). The package
ships one trained with ``python tools/train_detector.py``; crops are metric, so it serves any camera.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np

from keras_cadstn.config import DetectorConfig
from keras_cadstn.errors import ConfigError
from keras_cadstn.models.bundle import load_keras_model
from keras_cadstn.tracking.refiner import move_centre, refiner_crop
from keras_cadstn.tracking.runtime import KerasFunction

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")  # keras_cadstn/assets
DETECTOR_PATH = os.path.join(ASSETS, "hand_detector.keras")  # its DetectorConfig: the same name, .json
DETECTOR_FILE = "detector.keras"  # a bundle's own detector (a preset's), its settings beside it as detector.json


def detector_for(bundle_path: str) -> str:
    """The hand detector of a bundle: its own (``DETECTOR_FILE`` in its folder), else the package's."""
    own = os.path.join(bundle_path, DETECTOR_FILE)
    return own if os.path.isfile(own) else DETECTOR_PATH


def detector_crop(depth_mm, centre_uvd, camera, config: DetectorConfig) -> np.ndarray:
    """(S, S, 1): the normalised crop of a ``cube_mm`` cube around ``centre_uvd``."""
    return refiner_crop(depth_mm, centre_uvd, np.full(3, config.cube_mm), camera, config)


class HandDetector:
    """``detector(depth_mm, camera, proposals)`` -> (palm uvd, hand probability) or None.

    ``proposals``: candidate palm points (uvd), e.g. ``HandLocaliser.palm_candidates``."""
    def __init__(self, model, config: DetectorConfig = DetectorConfig()):
        self.model, self.config = model, config
        self.run = KerasFunction(model)

    def predict(self, crops: np.ndarray) -> tuple:
        """crops (N, S, S, 1) -> (offsets (N, 3), hand probabilities (N,))."""
        outputs = self.run(crops.astype(np.float32))
        return (np.asarray(outputs["offset"], np.float64),
                1.0 / (1.0 + np.exp(-np.asarray(outputs["hand"], np.float64)[:, 0])))

    def probability(self, depth_mm, camera, point_uvd) -> float:
        """How likely a hand's palm is at ``point_uvd``, unmoved."""
        return float(self.predict(detector_crop(depth_mm, np.asarray(point_uvd, np.float64), camera,
                                                self.config)[None])[1][0])

    def __call__(self, depth_mm, camera, proposals) -> tuple | None:
        cfg = self.config
        cube = np.full(3, cfg.cube_mm)
        points = [np.asarray(p, np.float64) for p in proposals[:cfg.max_candidates]]
        if not points:
            return None
        for _ in range(cfg.iterations):
            offsets, _ = self.predict(np.stack([detector_crop(depth_mm, p, camera, cfg) for p in points]))
            moved = [move_centre(p, o, cube, camera) for p, o in zip(points, offsets)]
            # a step to a point that is not finite or lies behind the camera is not taken
            points = [m if np.all(np.isfinite(m)) and m[2] > 0 else p for p, m in zip(points, moved)]
        _, hand = self.predict(np.stack([detector_crop(depth_mm, p, camera, cfg) for p in points]))
        best = int(np.argmax(hand))
        return (points[best], float(hand[best])) if hand[best] >= cfg.threshold else None


@functools.lru_cache(maxsize=4)
def load_detector(path: str = DETECTOR_PATH) -> HandDetector:
    """The trained detector at ``path`` (default: the one shipped with the package), loaded once."""
    settings = os.path.splitext(path)[0] + ".json"
    for needed in (path, settings):
        if not os.path.isfile(needed):
            raise ConfigError(f"no hand detector at {needed}: train one with `python tools/train_detector.py "
                              f"--out {path}` or use HandLocaliser(detector_path=None) (geometric detection)")
    with open(settings) as f:
        config = DetectorConfig.from_dict(json.load(f))
    model = load_keras_model(path, compile=False)
    if tuple(model.input.shape[1:]) != (config.image_size, config.image_size, 1):
        raise ConfigError(f"{path}: input {tuple(model.input.shape[1:])} does not match {settings} "
                          f"(image_size {config.image_size})")
    return HandDetector(model, config)


# ----------------------------------------------------------------------------- training
