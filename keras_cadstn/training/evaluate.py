"""The paper's metrics, the results text format of public hand-pose comparisons, and plots.

Results files: one frame per line, K x 3 numbers (uvd: pixels and mm, or xyz: mm), optionally led by
the image name; NYU files may hold all 36 labelled joints, reduced here to the 14 evaluated ones.
"""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn.data.metrics import mean_error, per_frame_error
from keras_cadstn.data.preprocessing import centre_motion, joints_to_mm
from keras_cadstn.data.splits import read_test_split
from keras_cadstn.models import gate_weights_model, spatial_inference_model, uses_centre_motion


def sequence_segments(sequence_id, frame_index) -> list:
    """(start, stop) of each run of consecutive frames of one sequence, in recorded order."""
    sequence_id, frame_index = np.asarray(sequence_id).ravel(), np.asarray(frame_index).ravel()
    cut = np.flatnonzero((sequence_id[1:] != sequence_id[:-1]) | (frame_index[1:] != frame_index[:-1] + 1)) + 1
    bounds = np.concatenate([[0], cut, [len(sequence_id)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def clip_starts(length: int, seq_len: int) -> list:
    """Non-overlapping windows of T covering a segment; the last one is aligned to its end (it
    overlaps the one before) so every frame is predicted without padding. Shorter segments: [0]."""
    if length <= seq_len:
        return [0]
    starts = list(range(0, length - seq_len + 1, seq_len))
    return starts + [length - seq_len] if starts[-1] + seq_len < length else starts


def predict_sequence(model, crops: np.ndarray, seq_len: int, batch_size: int = 8,
                     motion: np.ndarray | None = None) -> np.ndarray:
    """A clip model over one sequence's crops (N, M, M, 1) -> (N, 3K), LSTM state reset per clip as
    the authors evaluated. Frames of a window already predicted by an earlier one keep the earlier
    prediction; a sequence shorter than T is padded by repeating its last frame.

    ``motion`` (N, 3): the crop centres' motion (``preprocessing.centre_motion``) for a model that
    reads it; zero at each clip's first frame, as in training (the LSTM has no past there)."""
    n = len(crops)
    if n < seq_len:
        crops = np.concatenate([crops, np.repeat(crops[-1:], seq_len - n, axis=0)])
        if motion is not None:
            motion = np.concatenate([motion, np.zeros((seq_len - n, 3), motion.dtype)])
    starts = clip_starts(len(crops), seq_len)
    clips = np.stack([crops[s:s + seq_len] for s in starts])
    if motion is not None:
        windows = np.stack([motion[s:s + seq_len] for s in starts])
        windows[:, 0] = 0.0
        clips = [clips, windows]
    out = predict_batched(model, clips, batch_size)
    pred = np.empty((len(crops), out.shape[-1]), np.float32)
    for s, p in zip(starts[::-1], out[::-1]):  # earlier windows win where the last one overlaps
        pred[s:s + seq_len] = p
    return pred[:n]


def predict_split(models: dict, pattern: str, seq_len: int, batch_size: int = 128):
    """Ground truth, every model's predictions (N, K, 3) mm and the records' metadata over a whole
    split, per frame in recorded order, with the labelled hand centre the records were cropped with
    (as papers evaluate). Frame models (input (B, M, M, 1)) see every frame; clip models
    (B, T, M, M, 1) see each sequence as in ``predict_sequence``."""
    crops, meta = read_test_split(pattern)
    return ground_truth(meta), predictions_mm(models, crops, meta, seq_len, batch_size), meta


def ground_truth(meta) -> np.ndarray:
    """(N, K, 3) float64 joints in mm of records read with ``read_test_split``."""
    return meta["joints_xyz"].reshape(len(meta["joints_xyz"]), -1, 3).astype(np.float64)


def predictions_mm(models: dict, crops, meta, seq_len: int, batch_size: int = 128) -> dict:
    """{name: (N, K, 3) mm} of every model over crops read with ``read_test_split``."""
    return {name: joints_to_mm(predict_frames_or_clips(model, crops, meta, seq_len, batch_size),
                               meta["center_xyz"], meta["cube"]) for name, model in models.items()}


def predict_frames_or_clips(model, crops, meta, seq_len: int, batch_size: int = 128) -> np.ndarray:
    """A frame model on every crop, or a clip model on each sequence's clips: (N, out)."""
    if len(model.inputs[0].shape) == 5:
        motion = centre_motion(meta["center_xyz"], meta["cube"]) if uses_centre_motion(model) else None
        return np.concatenate([predict_sequence(model, crops[a:b], seq_len,
                                                motion=None if motion is None else motion[a:b])
                               for a, b in sequence_segments(meta["sequence_id"], meta["frame_index"])])
    return predict_batched(model, crops, batch_size)


FIXED_WEIGHTS = tuple(round(w, 1) for w in np.linspace(0, 1, 11))


def fixed_weight_sweep(gt, j_temporal, j_spatial) -> dict:
    """Table V: mean error of J = w * J_temp + (1 - w) * J_spa for fixed w in 0, 0.1, ..., 1."""
    return {w: mean_error(gt, w * j_temporal + (1 - w) * j_spatial) for w in FIXED_WEIGHTS}


def evaluate_stages(trained: dict, records_dir: str, seq_len: int) -> dict:
    """The ablation of one training run: every stage's predictions on the validation and test
    splits, the fixed fusion weight chosen on validation (never on test) applied to test, and the
    gate's temporal weight w1 per test frame (mean over coordinates)."""
    models = {"Baseline": trained["baseline"], "Sliced 3D": trained["sliced3d"],
              "Spatial": spatial_inference_model(trained["spatial"]), "Temporal": trained["temporal"],
              "CADSTN": trained["fusion"]}
    out = {}
    val = os.path.join(records_dir, "val", "*.tfrecord")
    gt_v, pred_v, meta_v = predict_split({k: models[k] for k in ("Baseline", "Spatial", "Temporal")}, val, seq_len)
    sweep_val = fixed_weight_sweep(gt_v, pred_v["Temporal"], pred_v["Spatial"])
    w_val = min(sweep_val, key=sweep_val.get)
    crops, meta = read_test_split(os.path.join(records_dir, "test", "*.tfrecord"))
    gt = ground_truth(meta)
    pred = predictions_mm(models, crops, meta, seq_len)
    pred["Fixed w (val)"] = w_val * pred["Temporal"] + (1 - w_val) * pred["Spatial"]
    out["test"] = {"gt": gt, "pred": pred, "meta": meta,
                   "errors": {k: mean_error(gt, v) for k, v in pred.items()},
                   "frame_errors": {k: per_frame_error(gt, v) for k, v in pred.items()},
                   "gate_w1": predict_frames_or_clips(gate_weights_model(trained["fusion"]), crops, meta, seq_len).mean(axis=1),
                   "sweep": fixed_weight_sweep(gt, pred["Temporal"], pred["Spatial"])}
    out["val_sweep"], out["w_val"] = sweep_val, w_val
    # the validation split's errors of the networks it did not train (choices between network
    # variants are made here, never on test): all frames and those with occlusion >= 0.1
    errors_v = {k: per_frame_error(gt_v, v) for k, v in pred_v.items()}
    occluded_v = meta_v["occlusion"] >= 0.1
    out["val_errors"] = {k: {"all": float(e.mean()), "occluded": float(e[occluded_v].mean()) if occluded_v.any()
                             else float("nan")} for k, e in errors_v.items()}
    return out


def predict_batched(model, x, batch_size: int) -> np.ndarray:
    """The model's joints over ``x`` (an array, or a list of arrays for a model with several
    inputs) in batches, the last one padded to the same size (one traced function per model
    instead of one per distinct batch shape)."""
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    outs = []
    for i in range(0, len(arrays[0]), batch_size):
        chunks = [a[i:i + batch_size] for a in arrays]
        n = len(chunks[0])
        if n < batch_size:
            chunks = [np.concatenate([c, np.repeat(c[-1:], batch_size - n, axis=0)]) for c in chunks]
        out = model.predict_on_batch(chunks if len(chunks) > 1 else chunks[0])
        outs.append(np.asarray(out["joints"] if isinstance(out, dict) else out)[:n])
    return np.concatenate(outs)
