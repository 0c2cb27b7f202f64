"""The paper's metrics on joint arrays (mean and per-joint error, success rate), their tables and plots, and
the statistics over seeds and paired runs."""
from __future__ import annotations

import os

import numpy as np
from scipy import stats


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


def spread(values) -> dict:
    """Mean and sample standard deviation of per-seed results."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": int(len(v))}


def paired_difference(a, b) -> dict:
    """Mean of a - b over paired samples (per seed, or per frame) with a 95% t interval."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}
