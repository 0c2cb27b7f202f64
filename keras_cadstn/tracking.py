"""Real-time tracking: raw depth frames in, 3D joints in camera mm out, one frame at a time.

Per frame: find the hand from the depth alone (or from a given centre), crop and normalise it as in
training (the bundle's camera, cube and crop size), run one streaming CADSTN step (spatial network,
temporal LSTM step with the state carried from the previous frame, gate, fusion) and map the joints
back to mm. A frame without a hand returns ``found=False`` and resets the LSTM state.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.errors import ConfigError, DataError, NoHandError
from keras_cadstn.preprocessing import check_depth_image, crop_and_normalize, hand_center, joints_to_mm
from keras_cadstn.runtime import RUNNERS, KerasStep, as_step, step_artifact_path

BACKENDS = ("keras", "tflite", "onnx")


@dataclasses.dataclass(frozen=True)
class HandLocaliser:
    """The hand centre from depth alone, no labels (the question DeepPrior++/V2V/A2J users ask).

    Detection: the hand is the nearest object. Take the valid depths in ``band_mm``, the nearest
    depth d0 (a low percentile, so a few flying pixels do not count), the pixels within
    [d0, d0 + cube_z] and their centre of mass; then the training pre-processing's refinement
    (centre of mass of the pixels in the cube, repeated once). Tracking: from the previous frame's
    centre, the same refinement on the cube's patch only (cheap); if that cube is empty, detect again.
    The refinement's first pass looks at every ``step``-th pixel (a quarter of the work), its last
    at all of them (the demo's localiser error: 18.91 mm with two full passes, 18.92 mm so).
    """

    band_mm: tuple = (100.0, 1500.0)
    nearest_percentile: float = 0.5
    min_pixels: int = 50  # fewer valid pixels than this near the camera: no hand
    step: int = 2  # detection and the first refinement pass look at every step-th pixel

    def detect(self, depth_mm: np.ndarray, cube, camera) -> np.ndarray | None:
        d = depth_mm[::self.step, ::self.step]
        valid = (d > self.band_mm[0]) & (d < self.band_mm[1])
        if np.count_nonzero(valid) * self.step ** 2 < self.min_pixels:
            return None
        values = d[valid]
        d0 = np.percentile(values, self.nearest_percentile)
        near = valid & (d <= d0 + cube[2])
        vs, us = np.nonzero(near)
        if len(vs) * self.step ** 2 < self.min_pixels:
            return None
        seed = np.array([us.mean() * self.step, vs.mean() * self.step, d[near].mean()])
        try:
            return hand_center(depth_mm, seed, cube, camera, coarse_step=self.step)
        except NoHandError:
            return None

    def track(self, depth_mm: np.ndarray, previous_uvd, cube, camera) -> tuple:
        """(centre uvd or None, 'tracked' | 'detected')."""
        if previous_uvd is not None:
            try:
                return hand_center(depth_mm, previous_uvd, cube, camera, coarse_step=self.step), "tracked"
            except NoHandError:
                pass
        return self.detect(depth_mm, cube, camera), "detected"


@dataclasses.dataclass(frozen=True)
class TrackResult:
    found: bool
    joints_mm: np.ndarray | None  # (K, 3) camera coordinates, mm
    center_uvd: np.ndarray | None
    mode: str  # 'given' | 'tracked' | 'detected' | 'no hand'
    crop: np.ndarray | None = None  # (M, M) the normalised crop the networks saw


# ----------------------------------------------------------------------------- backends

def make_step(bundle, backend: str = "keras", precision: str = "float32", path: str | None = None,
              num_threads: int | None = None):
    """A callable (crop (1, M, M, 1), h, c) -> (joints (1, 3K), h', c') on the chosen backend.

    TFLite/ONNX run an exported step model: ``path``, or the bundle's entry in the cache that
    ``keras_cadstn.export.export_step(bundle, backend, precision)`` (or ``cadstn track``) writes.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "keras":
        return KerasStep(bundle.frame_model())
    if backend == "onnx" and precision != "float32":
        raise ConfigError("the ONNX backend is float32 (use TensorRT for reduced precision on a GPU)")
    path = path or step_artifact_path(bundle, backend, precision)
    if not os.path.isfile(path):
        raise ConfigError(f"no {backend} {precision} step model at {path}: export it first with "
                          f"keras_cadstn.export.export_step(bundle, {backend!r}, {precision!r}) "
                          f"or `cadstn export --bundle {bundle.path} --out DIR` and pass model_path")
    return as_step(RUNNERS[backend](path, num_threads))


# ----------------------------------------------------------------------------- tracker

class HandTracker:
    """Feed raw depth frames (the sensor's full image, in the bundle camera's depth unit).

    >>> tracker = HandTracker(load_bundle("bundle"), backend="tflite")
    >>> result = tracker.update(depth)   # result.joints_mm: (K, 3), or result.found False
    """

    def __init__(self, bundle, backend: str = "keras", precision: str = "float32", model_path: str | None = None,
                 localiser: HandLocaliser = HandLocaliser(), num_threads: int | None = None,
                 reset_every: int | None = None):
        self.bundle = bundle
        self.camera = bundle.camera
        self.cube = np.asarray(bundle.spec.cube, np.float64)
        self.size = bundle.image_size
        self.units = bundle.config.lstm_units
        self.localiser = localiser
        self.step = make_step(bundle, backend, precision, model_path, num_threads)
        self.backend = backend
        # ours: None carries the LSTM state for the whole stream; an int restarts it every N frames
        # (the temporal network was trained on clips of T; track_split reports which was used)
        self.reset_every = reset_every
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames: zero LSTM state, no previous centre."""
        self.h = np.zeros((1, self.units), np.float32)
        self.c = np.zeros((1, self.units), np.float32)
        self.previous_uvd = None
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
                center, mode = hand_center(depth_mm, center_uvd, self.cube, self.camera), "given"
            except NoHandError:
                center, mode = None, "given"
        else:
            center, mode = self.localiser.track(depth_mm, self.previous_uvd, self.cube, self.camera)
        if center is None:
            self.reset()
            return TrackResult(False, None, None, "no hand")
        if self.reset_every and self.since_reset >= self.reset_every:
            self.h, self.c = np.zeros_like(self.h), np.zeros_like(self.c)
            self.since_reset = 0
        crop, _ = crop_and_normalize(depth_mm, center, self.cube, self.camera, self.size)
        joints, self.h, self.c = self.step(crop[None, :, :, None], self.h, self.c)
        self.previous_uvd = center
        self.since_reset += 1
        joints_mm = joints_to_mm(np.asarray(joints)[0], self.camera.uvd_to_xyz(center), self.cube)
        return TrackResult(True, joints_mm, center, mode, crop)


def track_split(tracker: HandTracker, split, centre: str = "localiser", progress: bool = True):
    """Run the tracker over an imported split (frames in order, state reset at each new sequence).

    ``centre``: 'labelled' (the reference joint of the labels, as papers evaluate) or 'localiser'
    (depth only, as a deployed tracker). Returns (gt (N, K, 3), pred (N, K, 3) with NaN where no
    hand was found, info dict naming the mode and counts).
    """
    from tqdm.auto import tqdm
    if centre not in ("labelled", "localiser"):
        raise ConfigError(f"centre must be 'labelled' or 'localiser', got {centre!r}")
    spec = split.spec
    gt, pred, lost, previous = [], [], 0, None
    for frame in tqdm(split.frames, desc=f"tracking ({centre} centre)", disable=not progress, unit="frame"):
        if frame.sequence_id != previous:
            tracker.reset()
            previous = frame.sequence_id
        raw = split.read_depth(frame.path)
        ref = frame.joints_uvd[spec.reference_joint] if centre == "labelled" else None
        result = tracker.update(raw, center_uvd=ref)
        gt.append(frame.joints_xyz)
        if result.found:
            pred.append(result.joints_mm)
        else:
            lost += 1
            pred.append(np.full(frame.joints_xyz.shape, np.nan))
    return np.asarray(gt, np.float64), np.asarray(pred, np.float64), {
        "centre": centre, "frames": len(gt), "no_hand_frames": lost, "backend": tracker.backend,
        "reset_every": tracker.reset_every}
