"""Real-time tracking: raw depth frames in, 3D joints in camera mm out, one frame at a time.

Per frame: find the hand from the depth alone (detection, then the centre of mass around the reference
joint the networks predicted in the last frame; or from a given centre), move that centre to the
hand's reference joint with the bundle's centre refiner where it has one (``keras_cadstn.tracking.refiner``),
crop and normalise it as in training (the bundle's camera, cube and crop size), run one streaming
CADSTN step (spatial network, temporal LSTM step with the state carried from the previous frame,
gate, fusion) and map the joints back to mm. A frame without a hand returns ``found=False`` and
resets the LSTM state.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.config import BACKENDS
from keras_cadstn.data.preprocessing import (centre_motion, check_depth_image, crop_and_normalize, hand_center, joints_to_mm,
                                             turn_crop, turn_joints_back, turn_matrix, upright_turn)
from keras_cadstn.errors import ConfigError, DataError, NoHandError, is_positive_int
from keras_cadstn.tracking.detector import detector_for
from keras_cadstn.tracking.localiser import HandLocaliser
from keras_cadstn.tracking.refiner import refine_centre
from keras_cadstn.tracking.runtime import RUNNERS, KerasFunction, artifact_path, as_refiner, as_step, check_fc_rank


@dataclasses.dataclass(frozen=True)
class TrackResult:
    found: bool
    joints_mm: np.ndarray | None  # (K, 3) camera coordinates, mm
    center_uvd: np.ndarray | None
    mode: str  # 'given' | 'tracked' | 'detected' | 'no hand'
    crop: np.ndarray | None = None  # (M, M) the normalised crop the networks saw


# ----------------------------------------------------------------------------- backends

def make_runner(bundle, which: str = "step", backend: str = "keras", precision: str = "float32",
                path: str | None = None, num_threads: int | None = None, fc_rank: int | None = None):
    """A NumPy callable of one of the bundle's models on the chosen backend: ``which`` 'step'
    (crop (1, M, M, 1), h, c, centre motion (1, 3)) -> (joints (1, 3K), h', c'), or 'refine' (the centre refiner:
    crop (1, S, S, 1) -> offset (1, 3)). ``fc_rank``: the bundle's step with low-rank fc layers of
    that rank (``bundle.add_low_rank_step``, ``cadstn compress``; the refiner is always full rank).

    TFLite/ONNX run an exported model: ``path``, or the bundle's entry in the cache that
    ``keras_cadstn.export.tracker.export_for_tracker(bundle, backend, precision, fc_rank=...)`` (or
    ``cadstn track``) writes.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if which == "refine" and bundle.refiner is None:
        raise ConfigError(f"{bundle.path}: the bundle has no centre refiner")
    fc_rank = check_fc_rank(fc_rank) if which == "step" else None
    if backend == "keras":
        fn = KerasFunction(bundle.refiner if which == "refine" else bundle.step_model(fc_rank))
        return as_step(fn) if which == "step" else as_refiner(fn)
    if backend == "onnx" and precision != "float32":
        raise ConfigError("the ONNX backend is float32 (use TensorRT for reduced precision on a GPU)")
    path = path or artifact_path(bundle, backend, precision, which, fc_rank)
    if not os.path.isfile(path):
        rank = "" if fc_rank is None else f", fc_rank={fc_rank}"
        raise ConfigError(f"no {backend} {precision} {which} model at {path}: export it first with "
                          f"keras_cadstn.export.tracker.export_for_tracker(bundle, {backend!r}, {precision!r}{rank}) "
                          f"or `cadstn export --bundle {bundle.path} --out DIR` and pass its path")
    runner = RUNNERS[backend](path, num_threads)
    return as_step(runner) if which == "step" else as_refiner(runner)


# ----------------------------------------------------------------------------- tracker

# ours: tracked frames between the detector's checks that the tracked point is still a hand (a hand
# that left the view, a crop that slid onto the body); one 32x32 pass each time; 4: validation, decisions.md
VERIFY_EVERY = 4
# ours: turn each crop so the hand's axis lies on the nearest crop axis, where the training hands point
# (8 real frames: 28.1 -> 17.6 mm median; decisions.md); by default for the datasets whose recipe
# trains with the paper's +-90/180 degree copies (NYU's; ICVL's has none: a sideways axis is new to it)
UPRIGHT_DATASETS = ("nyu",)

class HandTracker:
    """Feed raw depth frames (the sensor's full image, in the bundle camera's depth unit).

    ``refine``: move the label-free centre with the bundle's centre refiner (default: when the
    bundle has one whose ``RefinerConfig.default_on`` is set, i.e. measured to help on real frames);
    ``model_path`` / ``refiner_path``: the exported step / refiner for TFLite and ONNX
    (``export.export_for_tracker`` gives both); ``fc_rank``: run the bundle's step with low-rank
    fc layers of that rank (``bundle.add_low_rank_step``, ``cadstn compress``: less weight memory to
    read per frame; measure its error on validation data; default: the trained layers).
    ``centre_step``: the centre of mass around the refined joint looks at every centre_step-th pixel
    in both its passes (1: the last at full resolution, as the training crops' centre).
    ``upright``: turn each crop so that the hand's principal axis lies on the crop's nearest axis
    before the networks see it, and the joints back (``preprocessing.upright_turn``); default: on
    for bundles of ``UPRIGHT_DATASETS``.

    >>> tracker = HandTracker(load_bundle("bundle"), backend="tflite")
    >>> result = tracker.update(depth)   # result.joints_mm: (K, 3), or result.found False
    """
    def __init__(self, bundle, backend: str = "keras", precision: str = "float32", model_path: str | None = None,
                 localiser: HandLocaliser | None = None, num_threads: int | None = None,
                 reset_every: int | None = None, refine: bool | None = None, refiner_path: str | None = None,
                 fc_rank: int | None = None, centre_step: int = 2, upright: bool | None = None):
        if not is_positive_int(centre_step):
            raise ConfigError(f"centre_step must be an integer >= 1, got {centre_step!r}")
        self.bundle = bundle
        self.camera = bundle.camera
        self.cube = np.asarray(bundle.spec.cube, np.float64)
        self.centre_cube = bundle.spec.centre_cube()  # the training crops' centre of mass is taken in this
        self.size = bundle.image_size
        self.units = bundle.config.lstm_units
        # default: the bundle's own detector (a preset's), else the package's
        self.localiser = localiser or HandLocaliser(detector_path=detector_for(bundle.path))
        self.step = make_runner(bundle, "step", backend, precision, model_path, num_threads, fc_rank)
        # the label-free centre moved by the bundle's centre refiner (default: when its config says so)
        refine = bundle.refiner is not None and bundle.refiner_config.default_on if refine is None else refine
        # one thread for the refiner: a 32x32 network gains nothing from a second, whose wake-up costs more
        self.refiner = make_runner(bundle, "refine", backend, precision, refiner_path, 1) if refine else None
        self.backend = backend
        # ours: 2, the localiser's step: the same validation error as every pixel, 0.10 ms less per frame
        self.centre_step = int(centre_step)
        # ours: None carries the LSTM state for the whole stream; an int restarts it every N frames
        # (the temporal network was trained on clips of T; track_split reports which was used)
        self.reset_every = reset_every
        self.upright = bundle.spec.name in UPRIGHT_DATASETS if upright is None else bool(upright)
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames: zero LSTM state, no previous centre."""
        self.h = np.zeros((1, self.units), np.float32)
        self.c = np.zeros((1, self.units), np.float32)
        self.previous_uvd = None
        # the hand's reference joint in the last frame (uvd): the refiner's, else the pose network's
        self.previous_reference = None
        self.tracked = 0  # frames tracked since the detector last looked
        self.since_reset = 0

    def update(self, depth, center_uvd=None) -> TrackResult:
        """One frame -> joints (K, 3) mm. ``center_uvd`` (pixels, pixels, mm) skips the localiser."""
        depth_mm = self.camera.to_mm(check_depth_image(depth, self.camera, f"frame {self.frames}"))
        self.frames += 1
        if center_uvd is not None:
            center_uvd = np.asarray(center_uvd, np.float64)
            if center_uvd.shape != (3,) or not np.isfinite(center_uvd).all():
                raise DataError(f"frame {self.frames - 1}: center_uvd must be 3 finite numbers (u px, v px, "
                                f"d mm), got shape {center_uvd.shape}")
            try:
                center, mode = hand_center(depth_mm, center_uvd, self.centre_cube, self.camera), "given"
            except NoHandError:
                center, mode = None, "given"
        elif self.refiner is not None:
            center, mode = self.refined_centre(depth_mm)
        else:
            # from the reference joint the networks predicted in the last frame: the previous crop
            # centre's own centre of mass drifts down the forearm (docs/results.md, "Finding the hand")
            verify = self.tracked >= VERIFY_EVERY
            center, mode = self.localiser.track(depth_mm, self.previous_reference, self.centre_cube, self.camera,
                                                verify=verify)
            self.tracked = 0 if verify or mode == "detected" else self.tracked + 1
        if center is None:
            self.reset()
            return TrackResult(False, None, None, "no hand")
        if self.reset_every and self.since_reset >= self.reset_every:
            self.h, self.c = np.zeros_like(self.h), np.zeros_like(self.c)
            self.since_reset = 0
        crop, _ = crop_and_normalize(depth_mm, center, self.cube, self.camera, self.size)
        turn = upright_turn(crop) if self.upright else 0.0
        if turn:
            crop = turn_crop(crop, turn)
        center_xyz = self.camera.uvd_to_xyz(center)
        # the crop centre's move since the last frame (turned with the crop); zero where the LSTM
        # state starts afresh, as at the first frame of every training clip
        motion = (centre_motion([self.camera.uvd_to_xyz(self.previous_uvd), center_xyz], self.cube)[1:]
                  if self.since_reset and self.previous_uvd is not None else np.zeros((1, 3), np.float32))
        if turn:
            motion[:, :2] = motion[:, :2] @ turn_matrix(turn).T
        joints, self.h, self.c = self.step(crop[None, :, :, None], self.h, self.c, motion)
        self.previous_uvd = center
        self.since_reset += 1
        joints_mm = joints_to_mm(np.asarray(joints)[0], center_xyz, self.cube)
        if turn:
            joints_mm = turn_joints_back(joints_mm, turn, center, self.cube, self.camera, self.size)
        if self.refiner is None:
            reference = joints_mm[self.bundle.spec.reference_joint]
            # a joint predicted at or behind the camera is no point to track from: detect next frame
            self.previous_reference = self.camera.xyz_to_uvd(reference) if reference[2] > 0 else None
        return TrackResult(True, joints_mm, center, mode, crop)

    def refined_centre(self, depth_mm) -> tuple:
        """(crop centre uvd or None, mode) with the centre refiner: refine from the previous frame's
        refined reference joint ('tracked', ``refiner_config.tracked_iterations`` passes; the hand
        moves little between frames, while the localiser's centre of mass would follow an occluder
        passing in front of the hand; on the demo's validation split this also tracked better than
        starting from the previous crop centre) or, without one or when that fails, from the
        localiser's detection ('detected', ``refiner_config.iterations`` passes); then the training
        pre-processing's centre of mass around the refined joint, as labelled centres give (its last
        pass on every ``centre_step``-th pixel)."""
        starts = [(self.previous_reference, "tracked")] if self.previous_reference is not None else []
        for start, mode in starts + [(None, "detected")]:
            if start is None:
                start = self.localiser.detect(depth_mm, self.cube, self.camera)
                if start is None:
                    break
            config = self.bundle.refiner_config
            reference = refine_centre(self.refiner, depth_mm, start, self.cube, self.camera, config,
                                      config.tracked_iterations if mode == "tracked" else config.iterations)
            try:
                # the first of the two passes on every ``step``-th pixel, as the localiser's (on the
                # demo's validation split the same error as at full resolution); the last on every
                # ``centre_step``-th
                center = hand_center(depth_mm, reference, self.centre_cube, self.camera, coarse_step=self.localiser.step,
                                     final_step=self.centre_step)
            except NoHandError:
                continue
            self.previous_reference = reference
            return center, mode
        return None, "detected"


# ----------------------------------------------------------------------------- streams
