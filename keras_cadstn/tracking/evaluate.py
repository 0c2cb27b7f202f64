"""The tracker over labelled data: a split with the labelled centre or the localiser's, and real
frames annotated by eye (fingertips and wrist in the image, at the palm's depth)."""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from keras_cadstn.data.real_frames import JOINTS, AnnotatedFrame, annotated_joints_uv
from keras_cadstn.errors import ConfigError
from keras_cadstn.tracking.tracker import HandTracker


def track_split(tracker: HandTracker, split, centre: str = "localiser", progress: bool = True):
    """Run the tracker over an imported split (frames in order, state reset at each new sequence).

    ``centre``: 'labelled' (the reference joint of the labels, as papers evaluate) or 'localiser'
    (depth only, as a deployed tracker). Returns (gt (N, K, 3), pred (N, K, 3) with NaN where no
    hand was found, info dict naming the mode and counts).
    """
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


FOUND_MM = 40.0  # a hand counts as found when the crop centre lies this near the annotated palm


def real_frame_errors(tracker: HandTracker, frame: AnnotatedFrame, centre: str = "localiser") -> dict:
    """One annotated real frame through the tracker, from a fresh state (the frames need not be
    consecutive). ``centre``: 'localiser' (label-free, as deployed) or 'palm' (the annotated palm
    given as the crop's centre). Returns whether the hand was found, the crop centre's distance to
    the palm (mm, 3D) and each annotated joint's image error in mm at the palm's depth (NaN where
    no hand was found)."""
    if centre not in ("localiser", "palm"):
        raise ConfigError(f"centre must be 'localiser' or 'palm', got {centre!r}")
    tracker.reset()
    result = tracker.update(frame.raw, center_uvd=frame.palm_uvd if centre == "palm" else None)
    errors = dict.fromkeys(JOINTS, float("nan"))
    centre_mm = float("inf")
    if result.found:
        palm = frame.camera.uvd_to_xyz(frame.palm_uvd)
        centre_mm = float(np.linalg.norm(frame.camera.uvd_to_xyz(result.center_uvd) - palm))
        predicted = annotated_joints_uv(result.joints_mm, tracker.bundle.spec.name, frame.camera)
        for joint, uv in predicted.items():
            errors[joint] = frame.image_mm(np.linalg.norm(uv - frame.joints_uv[joint]))
    return {"frame": frame.name, "centre": centre, "found": centre_mm <= FOUND_MM, "centre_mm": centre_mm,
            "joints_mm": errors}


def summarise_real_frames(rows: list) -> dict:
    """Frames found and the median / mean joint error over all frames' annotated joints (a frame
    without a hand counts as missing, not as zero)."""
    errors = np.array([e for r in rows for e in r["joints_mm"].values()], np.float64)
    valid = errors[np.isfinite(errors)]
    return {"frames": len(rows), "found": int(sum(r["found"] for r in rows)),
            "centre_median_mm": float(np.median([r["centre_mm"] for r in rows])) if rows else float("nan"),
            "joint_median_mm": float(np.median(valid)) if valid.size else float("nan"),
            "joint_mean_mm": float(np.mean(valid)) if valid.size else float("nan"),
            "joints_missing": int(errors.size - valid.size)}
