"""Results files (one frame's joints per line, uvd or xyz, the format the NYU/ICVL comparisons use) and
matching them to the ground truth."""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn import fileio
from keras_cadstn.data.frames import NYU_EVAL_JOINTS, get_spec
from keras_cadstn.errors import ConfigError, DataError


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
    behind = np.nonzero((joints[..., 2] <= 0).any(axis=1))[0]
    if behind.size:  # a joint at or behind the camera is no hand pose (uvd: depth; xyz: z)
        raise DataError(f"{path}: frame {behind[0] + 1} (of {len(behind)} such) has a joint with depth <= 0 mm")
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
    fileio.write_text(path, "".join(" ".join(f"{v:.4f}" for v in frame.ravel()) + "\n" for frame in out))
