"""Real-time tracking: raw depth frames in, 3D joints in camera mm out, one frame at a time.

Per frame: find the hand from the depth alone (or from a given centre), move that centre to the
hand's reference joint with the bundle's centre refiner where it has one (``keras_cadstn.refine``),
crop and normalise it as in training (the bundle's camera, cube and crop size), run one streaming
CADSTN step (spatial network, temporal LSTM step with the state carried from the previous frame,
gate, fusion) and map the joints back to mm. A frame without a hand returns ``found=False`` and
resets the LSTM state.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.detect import DETECTOR_PATH, load_detector
from keras_cadstn.errors import ConfigError, DataError, NoHandError, is_positive_int
from keras_cadstn.preprocessing import centre_motion, check_depth_image, crop_and_normalize, hand_center, joints_to_mm
from keras_cadstn.refine import refine_centre
from keras_cadstn.runtime import RUNNERS, KerasFunction, artifact_path, as_refiner, as_step, check_fc_rank

BACKENDS = ("keras", "tflite", "onnx")


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
    5. with the learned detector (default; ``keras_cadstn.detect``): instead of step 4's choice,
       the nearest proposals (palm-sized first) are moved to the palm by a small CNN and kept where
       it finds a hand; none kept: no hand. ``detector_path=None`` stops at step 4.
    ``detect`` then centres the crop as the training pre-processing does (centre of mass in the
    cube, repeated once) from the palm, with pixels deeper than d0 + near band + 30 mm left out.
    ``track``: the same refinement from the previous frame's centre, pixels deeper than it +
    ``near_band_mm`` left out; detection again when that cube is empty. (Detecting in every frame
    instead avoids the drift down the arm measured on scenes with a person behind the hand, but on
    the demo's test split, with occluders passing in front of the hand, it raised the tracker's error
    from 23.7 to 40.4 mm: benchmarks/bench_localiser.py, README.) Detection looks at every
    ``step``-th pixel. On the 8 real RealSense frames of tests/data/real_frames the palm found lies
    within 40 mm (geometric) / 52 mm (learned) of the annotated one and the crop centre within 60 mm
    in 8 / 7 of them (tested); with a person behind the hand in synthetic scenes, 83.6% / 99.2% of the
    palms within 50 mm and "no hand" in 82.9% / 100% of the frames without one (bench_localiser.py).
    """

    band_mm: tuple = (100.0, 1500.0)
    nearest_percentile: float = 0.5
    min_pixels: int = 50  # fewer valid pixels than this near the camera: no hand
    step: int = 2
    near_band_mm: float = 120.0
    reach_mm: float = 150.0  # fingertips to palm centre is 50-130 mm
    palm_radius_mm: tuple = (12.0, 55.0)  # inscribed circle of a palm (adult: about 35-45 mm)
    # the learned detector that checks and moves the proposals (``keras_cadstn.detect``; default:
    # the one shipped with the package); None: geometric detection alone
    detector_path: str | None = DETECTOR_PATH

    def palm_candidates(self, depth_mm: np.ndarray, camera) -> tuple:
        """(proposals, the nearest depth d0): steps 1-4 above without the size test. ``proposals``
        yields (palm uvd, palm-sized) of the blobs near the camera, nearest first, each computed as
        it is asked for (the geometric detection stops at the first palm-sized one)."""
        import cv2
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
        import cv2
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

    def track(self, depth_mm: np.ndarray, previous_uvd, cube, camera) -> tuple:
        """(centre uvd or None, 'tracked' | 'detected')."""
        if previous_uvd is not None:
            try:
                return hand_center(depth_mm, previous_uvd, cube, camera, coarse_step=self.step,
                                   far_limit=previous_uvd[2] + self.near_band_mm), "tracked"
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

def make_runner(bundle, which: str = "step", backend: str = "keras", precision: str = "float32",
                path: str | None = None, num_threads: int | None = None, fc_rank: int | None = None):
    """A NumPy callable of one of the bundle's models on the chosen backend: ``which`` 'step'
    (crop (1, M, M, 1), h, c, centre motion (1, 3)) -> (joints (1, 3K), h', c'), or 'refine' (the centre refiner:
    crop (1, S, S, 1) -> offset (1, 3)). ``fc_rank``: the bundle's step with low-rank fc layers of
    that rank (``bundle.add_low_rank_step``, ``cadstn compress``; the refiner is always full rank).

    TFLite/ONNX run an exported model: ``path``, or the bundle's entry in the cache that
    ``keras_cadstn.export.export_for_tracker(bundle, backend, precision, fc_rank=...)`` (or
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
                          f"keras_cadstn.export.export_for_tracker(bundle, {backend!r}, {precision!r}{rank}) "
                          f"or `cadstn export --bundle {bundle.path} --out DIR` and pass its path")
    runner = RUNNERS[backend](path, num_threads)
    return as_step(runner) if which == "step" else as_refiner(runner)


# ----------------------------------------------------------------------------- tracker

class HandTracker:
    """Feed raw depth frames (the sensor's full image, in the bundle camera's depth unit).

    ``refine``: move the label-free centre with the bundle's centre refiner (default: when the
    bundle has one); ``model_path`` / ``refiner_path``: the exported step / refiner for TFLite and
    ONNX (``export.export_for_tracker`` gives both); ``fc_rank``: run the bundle's step with low-rank
    fc layers of that rank (``bundle.add_low_rank_step``, ``cadstn compress``: less weight memory to
    read per frame; what it does to the error: ``benchmarks/bench_low_rank.py``; default: the
    trained layers). ``centre_step``: the centre of mass around the refined joint looks at every
    centre_step-th pixel in both its passes (1: the last at full resolution, as the training crops'
    centre).

    >>> tracker = HandTracker(load_bundle("bundle"), backend="tflite")
    >>> result = tracker.update(depth)   # result.joints_mm: (K, 3), or result.found False
    """

    def __init__(self, bundle, backend: str = "keras", precision: str = "float32", model_path: str | None = None,
                 localiser: HandLocaliser = HandLocaliser(), num_threads: int | None = None,
                 reset_every: int | None = None, refine: bool | None = None, refiner_path: str | None = None,
                 fc_rank: int | None = None, centre_step: int = 2):
        if not is_positive_int(centre_step):
            raise ConfigError(f"centre_step must be an integer >= 1, got {centre_step!r}")
        self.bundle = bundle
        self.camera = bundle.camera
        self.cube = np.asarray(bundle.spec.cube, np.float64)
        self.size = bundle.image_size
        self.units = bundle.config.lstm_units
        self.localiser = localiser
        self.step = make_runner(bundle, "step", backend, precision, model_path, num_threads, fc_rank)
        # the label-free centre moved by the bundle's centre refiner (default: when it has one)
        refine = bundle.refiner is not None if refine is None else refine
        # one thread for the refiner: a 32x32 network gains nothing from a second, whose wake-up costs
        # more (bench_tracking.py, TFLite dynamic_int8: 0.045 instead of 0.059 ms a pass)
        self.refiner = make_runner(bundle, "refine", backend, precision, refiner_path, 1) if refine else None
        self.backend = backend
        # ours: 2 (the localiser's default step), chosen on the demo's validation split (tracker
        # error, every pixel - every 2nd pixel in the last pass: -0.01 mm, 95% interval -0.12 to
        # +0.11 over blocks of 16 frames; benchmarks/bench_tracker_accuracy.py --split val
        # --centre-steps 2 1): a full-resolution pass over the cube's pixels cost 0.10 ms more per
        # frame in bench_tracking.py's paired row, three times the refiner network's pass
        self.centre_step = int(centre_step)
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
        self.previous_reference = None  # the refiner's reference joint in the last frame (uvd)
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
        elif self.refiner is not None:
            center, mode = self.refined_centre(depth_mm)
        else:
            center, mode = self.localiser.track(depth_mm, self.previous_uvd, self.cube, self.camera)
        if center is None:
            self.reset()
            return TrackResult(False, None, None, "no hand")
        if self.reset_every and self.since_reset >= self.reset_every:
            self.h, self.c = np.zeros_like(self.h), np.zeros_like(self.c)
            self.since_reset = 0
        crop, _ = crop_and_normalize(depth_mm, center, self.cube, self.camera, self.size)
        center_xyz = self.camera.uvd_to_xyz(center)
        # the crop centre's move since the last frame; zero where the LSTM state starts afresh, as
        # at the first frame of every training clip
        motion = (centre_motion([self.camera.uvd_to_xyz(self.previous_uvd), center_xyz], self.cube)[1:]
                  if self.since_reset and self.previous_uvd is not None else np.zeros((1, 3), np.float32))
        joints, self.h, self.c = self.step(crop[None, :, :, None], self.h, self.c, motion)
        self.previous_uvd = center
        self.since_reset += 1
        joints_mm = joints_to_mm(np.asarray(joints)[0], center_xyz, self.cube)
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
                center = hand_center(depth_mm, reference, self.cube, self.camera, coarse_step=self.localiser.step,
                                     final_step=self.centre_step)
            except NoHandError:
                continue
            self.previous_reference = reference
            return center, mode
        return None, "detected"


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


# ----------------------------------------------------------------------------- streams

class FrameRate:
    """Frames per second over the last ``window`` frames."""

    def __init__(self, window: int = 30):
        self.times, self.window = [], window

    def tick(self, now: float) -> float:
        self.times = (self.times + [now])[-self.window:]
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 1 and \
            self.times[-1] > self.times[0] else 0.0


def track_stream(tracker: HandTracker, frames, jsonl: str | None = None, video: str | None = None,
                 show: bool = False, max_frames: int | None = None, progress: bool = True) -> dict:
    """Track every frame of a source; write ``jsonl`` (one line per frame: frame, timestamp,
    sensor_clock, found, mode, joints_mm in camera mm or null), ``video`` (depth with the skeleton,
    fps and found/lost) and/or a live window. Ctrl-C ends the stream; the files written so far are
    complete (both are written under a temporary name and renamed at the end; an error leaves
    nothing). Returns counts and per-frame latency percentiles."""
    import json
    import time

    from tqdm.auto import tqdm

    from keras_cadstn import atomic
    from keras_cadstn.drawing import depth_to_bgr, draw_skeleton
    cv2 = None
    if video or show:
        import cv2
    if show:
        try:
            cv2.namedWindow("cadstn track", cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise ConfigError("--show needs OpenCV with a GUI (pip install opencv-python, not -headless) and a "
                              "display") from None
    camera, dataset = tracker.camera, tracker.bundle.spec.name
    tmp_jsonl = atomic.temporary_path(jsonl, ".jsonl") if jsonl else None
    tmp_video = atomic.temporary_path(video, os.path.splitext(video)[1]) if video else None
    out, writer, rate = (open(tmp_jsonl, "w") if jsonl else None), None, FrameRate()
    latencies, found, count, interrupted = [], 0, 0, False
    bar = tqdm(total=max_frames, unit="frame", disable=not progress, desc="tracking")
    try:
        try:
            for frame in frames:
                if max_frames is not None and count >= max_frames:
                    break
                start = time.perf_counter()
                result = tracker.update(frame.depth)
                latencies.append(time.perf_counter() - start)
                count += 1
                found += bool(result.found)
                fps = rate.tick(time.perf_counter())
                bar.update(1)
                if out is not None:
                    out.write(json.dumps({"frame": frame.index, "timestamp": frame.timestamp,
                                          "sensor_clock": frame.sensor_clock, "found": bool(result.found),
                                          "mode": result.mode, "joints_mm": None if not result.found else
                                          np.round(result.joints_mm, 2).tolist()}) + "\n")
                if video or show:
                    image = depth_to_bgr(camera.to_mm(frame.depth))
                    if result.found:
                        draw_skeleton(image, camera.xyz_to_uvd(result.joints_mm), dataset, (0, 0, 255), 2)
                    cv2.putText(image, f"{fps:5.1f} fps  {'found' if result.found else 'lost'}", (8, 20),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
                    if video:
                        if writer is None:
                            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if video.lower().endswith(".avi") else "mp4v"))
                            writer = cv2.VideoWriter(tmp_video, fourcc, 30.0, (image.shape[1], image.shape[0]))
                            if not writer.isOpened():
                                raise ConfigError(f"{video}: OpenCV cannot write this video format (use .mp4 or .avi)")
                        writer.write(image)
                    if show:
                        cv2.imshow("cadstn track", image)
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            break
        except KeyboardInterrupt:  # Ctrl-C: stop reading, keep what was tracked
            interrupted = True
    except BaseException:  # an error: no output at all rather than a part presented as the whole
        if out is not None:
            out.close()
        if writer is not None:
            writer.release()
        for tmp in (tmp_jsonl, tmp_video):
            if tmp:
                atomic.remove(tmp)
        raise
    finally:
        bar.close()
    if out is not None:
        out.close()
        atomic.publish(tmp_jsonl, jsonl)
    if writer is not None:
        writer.release()
        atomic.publish(tmp_video, video)
    if show:
        cv2.destroyAllWindows()
    ms = 1000 * np.asarray(latencies) if latencies else np.zeros(1)
    return {"frames": count, "found": found, "interrupted": interrupted, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}
