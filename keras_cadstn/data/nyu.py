"""NYU Hand Pose Dataset importer (and writer, used by the synthetic generator).

On-disk format: ``<root>/<split>/depth_<kinect>_<frame:07d>.png`` (frames numbered from 1) whose
depth in mm is G * 256 + B (R unused), and ``<root>/<split>/joint_data.mat`` with ``joint_uvd`` and
``joint_xyz`` of shape (kinect, frame, 36, 3). We use camera 1 and the 14 evaluated joints.

Joint xyz are computed from ``joint_uvd`` with the NYU camera in this library's convention (y down);
the file's ``joint_xyz`` has y pointing up and is not used.
"""
from __future__ import annotations

import glob
import os
import re

import h5py
import numpy as np
import scipy.io

from keras_cadstn import fileio
from keras_cadstn.data.frames import NYU, NYU_EVAL_JOINTS, DatasetSplit, Frame, check_labels
from keras_cadstn.data.png import read_png, write_png_atomic
from keras_cadstn.errors import DataError

NUM_LABELLED_JOINTS = 36
NUM_KINECTS = 3
# The real test split: subject 1 then subject 2 from frame 2441 (index 2440), whose hand is smaller.
NYU_TEST_FRAMES, NYU_TEST_SUBJECT2_START, NYU_TEST_SUBJECT2_CUBE_SCALE = 8252, 2440, 0.83
SEQUENCE_STARTS_FILE = "sequence_starts.txt"
OCCLUSION_FILE = "occlusion.txt"  # ours: per-frame fraction of the hand lost (synthetic data writes it)


def depth_path(split_dir: str, index: int, kinect: int = 1) -> str:
    return os.path.join(split_dir, f"depth_{kinect}_{index + 1:07d}.png")


def read_depth(path: str) -> np.ndarray:
    """Full 480x640 depth image in mm as float32 (0 where the sensor has no reading)."""
    return decode_depth(read_png(path, (NYU.camera.height, NYU.camera.width, 3), np.uint8))


def decode_depth(bgr: np.ndarray) -> np.ndarray:
    """NYU's colour encoding (as OpenCV reads it, B G R) -> depth G * 256 + B as float32."""
    return bgr[..., 1].astype(np.float32) * 256.0 + bgr[..., 0].astype(np.float32)


def write_depth(path: str, depth_mm: np.ndarray) -> None:
    """Write depth in mm (rounded, 0..65535) in NYU's G*256+B encoding."""
    d = np.clip(np.rint(depth_mm), 0, 65535).astype(np.uint16)
    bgr = np.zeros(d.shape + (3,), np.uint8)
    bgr[..., 0] = d & 0xFF
    bgr[..., 1] = d >> 8
    write_png_atomic(path, bgr)


def _load_mat(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path}: label file not found")
    try:
        return scipy.io.loadmat(path, variable_names=["joint_uvd", "joint_xyz"])
    except NotImplementedError:  # MATLAB v7.3 files are HDF5, axes reversed
        with h5py.File(path, "r") as f:
            return {k: np.transpose(f[k][()]) for k in ("joint_uvd", "joint_xyz") if k in f}
    except Exception as e:
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from e


def _sequence_starts(split_dir: str, split: str, n: int) -> list:
    """Where sequences begin: from ``sequence_starts.txt`` if present (our synthetic data writes
    it), else the real dataset's layout (train: one sequence; test: two subjects)."""
    path = os.path.join(split_dir, SEQUENCE_STARTS_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            starts = [int(tok) for tok in f.read().split()]
        if not starts or starts[0] != 0 or sorted(set(starts)) != starts or starts[-1] >= n:
            raise DataError(f"{path}: expected increasing 0-based frame indices starting at 0, "
                            f"below {n}; got {starts[:10]}")
        return starts
    if split == "test" and n == NYU_TEST_FRAMES:
        return [0, NYU_TEST_SUBJECT2_START]
    return [0]


def _occlusion(split_dir: str, n: int) -> np.ndarray:
    """Per-frame occlusion fractions from ``occlusion.txt`` if present, else zeros."""
    path = os.path.join(split_dir, OCCLUSION_FILE)
    if not os.path.isfile(path):
        return np.zeros(n)
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as e:
        raise DataError(f"{path}: expected one number per frame ({e})") from None
    if values.shape != (n,) or not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise DataError(f"{path}: expected {n} fractions in [0, 1], one per frame; got {values.size} values")
    return values


def load_nyu(root: str, split: str = "train", kinect: int = 1) -> DatasetSplit:
    """Read one NYU split: frames in order with sequence ids, the 14 evaluated joints."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir}: NYU split folder not found (expected <root>/{split}/)")
    mat_path = os.path.join(split_dir, "joint_data.mat")
    mat = _load_mat(mat_path)
    if "joint_uvd" not in mat:
        raise DataError(f"{mat_path}: has no 'joint_uvd' array")
    uvd_all = np.asarray(mat["joint_uvd"], dtype=np.float64)
    if uvd_all.ndim != 4 or uvd_all.shape[2:] != (NUM_LABELLED_JOINTS, 3) or uvd_all.shape[0] < kinect:
        raise DataError(f"{mat_path}: joint_uvd has shape {uvd_all.shape}, expected "
                        f"(kinects >= {kinect}, frames, {NUM_LABELLED_JOINTS}, 3)")
    uvd = uvd_all[kinect - 1][:, NYU_EVAL_JOINTS, :]
    n = len(uvd)

    pattern = re.compile(rf"depth_{kinect}_(\d{{7}})\.png$")
    found = sorted(int(m.group(1)) for p in glob.glob(os.path.join(split_dir, f"depth_{kinect}_*.png"))
                   if (m := pattern.search(os.path.basename(p))))
    if len(found) != n:
        missing = sorted(set(range(1, n + 1)) - set(found))[:3]
        raise DataError(f"{split_dir}: {len(found)} depth_{kinect}_*.png images but {n} labelled "
                        f"frames in {mat_path}" + (f"; missing e.g. {[depth_path(split_dir, i - 1, kinect) for i in missing]}" if missing else ""))
    if found and (found[0] != 1 or found[-1] != n):
        raise DataError(f"{split_dir}: images must be numbered 1..{n}, found {found[0]}..{found[-1]}")

    check_labels(uvd, NYU.camera, lambda i: f"{mat_path}: frame {i} ({depth_path(split_dir, i, kinect)})")
    xyz = NYU.camera.uvd_to_xyz(uvd)
    starts = _sequence_starts(split_dir, split, n)
    seq_ids = np.searchsorted(starts, np.arange(n), side="right") - 1
    occlusion = _occlusion(split_dir, n)
    frames = []
    for i in range(n):
        cube = NYU.cube
        if split == "test" and n == NYU_TEST_FRAMES and i >= NYU_TEST_SUBJECT2_START:
            cube = tuple(c * NYU_TEST_SUBJECT2_CUBE_SCALE for c in NYU.cube)
        frames.append(Frame(path=depth_path(split_dir, i, kinect), joints_uvd=uvd[i], joints_xyz=xyz[i],
                            sequence_id=int(seq_ids[i]), frame_index=i, cube=cube, occlusion=float(occlusion[i])))
    return DatasetSplit(spec=NYU, split=split, frames=frames, read_depth=read_depth)


def write_labels(split_dir: str, joints_uvd_36: np.ndarray, sequence_starts=None, occlusion=None) -> None:
    """Write ``joint_data.mat`` (all kinects get the same labels) and, optionally, sequence starts
    and per-frame occlusion fractions."""
    uvd = np.asarray(joints_uvd_36, dtype=np.float64)
    xyz = NYU.camera.uvd_to_xyz(uvd)
    xyz[..., 1] *= -1.0  # the file's joint_xyz has y pointing up
    stack = lambda a: np.repeat(a[None], NUM_KINECTS, axis=0)  # noqa: E731
    if sequence_starts is not None:  # before the labels: a folder with joint_data.mat is complete
        fileio.write_text(os.path.join(split_dir, SEQUENCE_STARTS_FILE),
                          "\n".join(str(int(s)) for s in sequence_starts) + "\n")
    if occlusion is not None:
        fileio.write_text(os.path.join(split_dir, OCCLUSION_FILE), "".join(f"{v:.4f}\n" for v in occlusion))
    with fileio.atomic_path(os.path.join(split_dir, "joint_data.mat")) as tmp, open(tmp, "wb") as f:
        scipy.io.savemat(f, {"joint_uvd": stack(uvd), "joint_xyz": stack(xyz)})
