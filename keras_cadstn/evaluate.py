"""The paper's metrics, the results text format of public hand-pose comparisons, and plots.

Results files: one frame per line, K x 3 numbers (uvd: pixels and mm, or xyz: mm), optionally led by
the image name; NYU files may hold all 36 labelled joints, reduced here to the 14 evaluated ones.
"""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn.data.frames import NYU_EVAL_JOINTS, get_spec
from keras_cadstn.errors import DataError
from keras_cadstn.preprocessing import denormalize_joints


def load_results(path: str, dataset: str = "nyu", fmt: str = "uvd") -> np.ndarray:
    """Read a results file -> (N, K, 3) float64 xyz in mm (camera coordinates, y down)."""
    if fmt not in ("uvd", "xyz"):
        raise ValueError(f"fmt must be 'uvd' or 'xyz', got {fmt!r}")
    spec = get_spec(dataset)
    k = spec.num_joints
    rows = []
    with open(path, newline=None) as f:  # universal newlines: CRLF is fine
        for line_no, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                float(tokens[0])
            except ValueError:
                tokens = tokens[1:]  # leading image name
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
    return spec.camera.uvd_to_xyz(joints) if fmt == "uvd" else joints


def save_results(path: str, joints_xyz, dataset: str = "nyu", fmt: str = "uvd") -> None:
    """Write (N, K, 3) xyz mm as a results file (uvd by default, as public comparisons use)."""
    spec = get_spec(dataset)
    joints = np.asarray(joints_xyz, np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (spec.num_joints, 3):
        raise ValueError(f"expected (N, {spec.num_joints}, 3) joints, got {joints.shape}")
    out = spec.camera.xyz_to_uvd(joints) if fmt == "uvd" else joints
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for frame in out:
            f.write(" ".join(f"{v:.4f}" for v in frame.ravel()) + "\n")
    os.replace(tmp, path)


def _check(gt, pred):
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[-1] != 3:
        raise ValueError(f"ground truth {gt.shape} and predictions {pred.shape} must both be (N, K, 3)")
    return np.linalg.norm(gt - pred, axis=-1)  # (N, K) mm


def per_joint_error(gt, pred) -> np.ndarray:
    """(K,) mean over frames of each joint's 3D distance (mm)."""
    return _check(gt, pred).mean(axis=0)


def mean_error(gt, pred) -> float:
    """Mean over joints of the per-joint errors (mm)."""
    return float(per_joint_error(gt, pred).mean())


def success_rate(gt, pred, thresholds=np.arange(0, 81)) -> np.ndarray:
    """Fraction of frames whose largest joint error is <= each threshold (mm)."""
    worst = _check(gt, pred).max(axis=1)
    return (worst[None, :] <= np.asarray(thresholds, np.float64)[:, None]).mean(axis=1)


def predictions_to_mm(pred_norm, meta) -> np.ndarray:
    """Cube-normalised predictions (N, 3K) + the records' centre/cube -> (N, K, 3) mm."""
    pred = np.asarray(pred_norm, np.float64).reshape(len(pred_norm), -1, 3)
    return denormalize_joints(pred, np.asarray(meta["center_xyz"], np.float64)[:, None, :],
                              np.asarray(meta["cube"], np.float64)[:, None, :])


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
