"""The paper's metrics, the results text format of public hand-pose comparisons, and plots.

Results files: one frame per line, K x 3 numbers (uvd: pixels and mm, or xyz: mm), optionally led by
the image name; NYU files may hold all 36 labelled joints, reduced here to the 14 evaluated ones.
"""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn.data.frames import NYU_EVAL_JOINTS, get_spec
from keras_cadstn import atomic
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.preprocessing import centre_motion, joints_to_mm


def read_results(path: str, dataset: str = "nyu", fmt: str = "uvd") -> tuple:
    """Read a results file -> (joints (N, K, 3) float64 xyz in mm (camera coordinates, y down),
    image names (N,) or None when the lines carry none)."""
    if fmt not in ("uvd", "xyz"):
        raise ConfigError(f"fmt must be 'uvd' or 'xyz', got {fmt!r}")
    spec = get_spec(dataset)
    k = spec.num_joints
    rows, names = [], []
    if not os.path.isfile(path):
        raise DataError(f"{path}: results file not found")
    try:
        with open(path, newline=None, encoding="utf-8") as f:  # universal newlines: CRLF is fine
            lines = f.readlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text results file (binary content)") from None
    for line_no, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            float(tokens[0])
            names.append(None)
        except ValueError:
            names.append(tokens[0])  # leading image name
            tokens = tokens[1:]
        try:
            values = np.array([float(t) for t in tokens])
        except ValueError as e:
            raise DataError(f"{path}:{line_no}: {e}") from None
        if dataset == "nyu" and values.size == 36 * 3:
            values = values.reshape(36, 3)[list(NYU_EVAL_JOINTS)].ravel()
        if values.size != 3 * k:
            raise DataError(f"{path}:{line_no}: {values.size} numbers, expected {3 * k} "
                            f"({k} {dataset} joints x 3" + (", or 108 for NYU's 36" if dataset == "nyu" else "") + ")")
        rows.append(values.reshape(k, 3))
    if not rows:
        raise DataError(f"{path}: no frames")
    joints = np.stack(rows)
    if not np.isfinite(joints).all():
        raise DataError(f"{path}: contains NaN/inf")
    if any(n is None for n in names) != all(n is None for n in names):
        raise DataError(f"{path}: some lines start with an image name and some do not")
    names = None if names[0] is None else names
    if names is not None and len(set(names)) != len(names):
        raise DataError(f"{path}: image names repeat (e.g. {next(n for n in names if names.count(n) > 1)!r})")
    return (spec.camera.uvd_to_xyz(joints) if fmt == "uvd" else joints), names


def load_results(path: str, dataset: str = "nyu", fmt: str = "uvd") -> np.ndarray:
    """Read a results file -> (N, K, 3) float64 xyz in mm (camera coordinates, y down)."""
    return read_results(path, dataset, fmt)[0]


def align_results(gt, gt_names, pred, pred_names, gt_path: str = "ground truth", pred_path: str = "predictions"):
    """Predictions in the ground truth's frame order: by image name where both files carry names,
    else line by line (then the frame counts must agree)."""
    if gt_names is not None and pred_names is not None:
        index = {n: i for i, n in enumerate(pred_names)}
        missing = [n for n in gt_names if n not in index]
        if missing:
            raise DataError(f"{pred_path}: no line for {len(missing)} image(s) of {gt_path}, e.g. {missing[0]!r}")
        return pred[[index[n] for n in gt_names]]
    if len(pred) != len(gt):
        raise DataError(f"{pred_path}: {len(pred)} frames, ground truth {gt_path} has {len(gt)}")
    return pred


def save_results(path: str, joints_xyz, dataset: str = "nyu", fmt: str = "uvd") -> None:
    """Write (N, K, 3) xyz mm as a results file (uvd by default, as public comparisons use)."""
    spec = get_spec(dataset)
    joints = np.asarray(joints_xyz, np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (spec.num_joints, 3):
        raise ValueError(f"expected (N, {spec.num_joints}, 3) joints, got {joints.shape}")
    out = spec.camera.xyz_to_uvd(joints) if fmt == "uvd" else joints
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, "".join(" ".join(f"{v:.4f}" for v in frame.ravel()) + "\n" for frame in out))


def _check(gt, pred):
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[-1] != 3:
        raise ValueError(f"ground truth {gt.shape} and predictions {pred.shape} must both be (N, K, 3)")
    return np.linalg.norm(gt - pred, axis=-1)  # (N, K) mm


def per_joint_error(gt, pred) -> np.ndarray:
    """(K,) mean over frames of each joint's 3D distance (mm)."""
    return _check(gt, pred).mean(axis=0)


def per_frame_error(gt, pred) -> np.ndarray:
    """(N,) mean over joints of each frame's 3D distances (mm)."""
    return _check(gt, pred).mean(axis=1)


def mean_error(gt, pred) -> float:
    """Mean over joints of the per-joint errors (mm)."""
    return float(per_joint_error(gt, pred).mean())


def error_parts(gt, pred) -> dict:
    """Per frame: ``offset``, the length of the mean over joints of pred - gt (mm: where the whole
    hand is placed), and ``articulation``, the mean joint error once that offset is removed (mm: the
    pose itself). ``articulation`` <= the mean joint error, by the triangle inequality."""
    _check(gt, pred)
    diff = np.asarray(pred, np.float64) - np.asarray(gt, np.float64)
    shift = diff.mean(axis=1, keepdims=True)
    return {"offset": np.linalg.norm(shift[:, 0], axis=-1), "articulation": np.linalg.norm(diff - shift, axis=-1).mean(axis=1)}


def success_rate(gt, pred, thresholds=np.arange(0, 81)) -> np.ndarray:
    """Fraction of frames whose largest joint error is <= each threshold (mm)."""
    worst = _check(gt, pred).max(axis=1)
    return (worst[None, :] <= np.asarray(thresholds, np.float64)[:, None]).mean(axis=1)


def comparison_table(gt, results: dict) -> str:
    """Markdown table: method, mean error, fraction of frames within 20/40/80 mm."""
    lines = ["| method | mean error (mm) | frames <= 20 mm | <= 40 mm | <= 80 mm |", "|---|---|---|---|---|"]
    for name, pred in results.items():
        sr = success_rate(gt, pred, [20, 40, 80])
        lines.append(f"| {name} | {mean_error(gt, pred):.2f} | {sr[0]:.3f} | {sr[1]:.3f} | {sr[2]:.3f} |")
    return "\n".join(lines)


def plot_comparison(gt, results: dict, out_dir: str, joint_names=None, title: str = "") -> list:
    """Success-rate curve and per-joint error bars (the paper's Figure 6) as PNGs; returns paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    thresholds = np.arange(0, 81)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pred in results.items():
        ax.plot(thresholds, 100 * success_rate(gt, pred, thresholds), label=name)
    ax.set(xlabel="maximum allowed distance to GT (mm)", ylabel="fraction of frames within distance (%)",
           xlim=(0, 80), ylim=(0, 100), title=title or "success rate")
    ax.grid(alpha=0.3)
    ax.legend()
    curve = os.path.join(out_dir, "success_rate.png")
    fig.savefig(curve, dpi=120, bbox_inches="tight")
    plt.close(fig)

    k = np.asarray(gt).shape[1]
    names = list(joint_names or [str(i) for i in range(k)]) + ["mean"]
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * (k + 1) * len(results)), 4.5))
    width = 0.8 / max(len(results), 1)
    for i, (name, pred) in enumerate(results.items()):
        err = per_joint_error(gt, pred)
        ax.bar(np.arange(k + 1) + i * width, np.append(err, err.mean()), width, label=name)
    ax.set_xticks(np.arange(k + 1) + 0.4 - width / 2, names, rotation=60, ha="right")
    ax.set(ylabel="mean error (mm)", title=title or "per-joint error")
    ax.legend()
    bars = os.path.join(out_dir, "per_joint_error.png")
    fig.savefig(bars, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [curve, bars]


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


def read_test_split(pattern: str):
    """Every record of a split in recorded order: crops (N, M, M, 1) and the metadata dict."""
    from keras_cadstn.data import make_dataset
    crops, metas = [], []
    for x, _, meta in make_dataset(pattern, mode="frames", batch_size=256, include_meta=True):
        crops.append(x.numpy())
        metas.append({k: v.numpy() for k, v in meta.items()})
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    return np.concatenate(crops), meta


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
    from keras_cadstn.models import uses_centre_motion
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
    from keras_cadstn.models import gate_weights_model, spatial_inference_model
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


def spread(values) -> dict:
    """Mean and sample standard deviation of per-seed results."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": int(len(v))}


def paired_difference(a, b) -> dict:
    """Mean of a - b over paired samples (per seed, or per frame) with a 95% t interval."""
    from scipy import stats
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


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
