"""ICVL Hand Posture Dataset importer.

On-disk format: 16-bit PNG depth in mm (240x320); label files whose lines are
``relative/path.png`` followed by 16 x 3 uvd values (joint order: palm, then thumb, index, middle,
ring, pinky, each root, mid, tip). Training: ``Training/labels.txt`` with images under
``Training/Depth/``; test: ``Testing/test_seq_1.txt`` and ``Testing/test_seq_2.txt`` with images
under ``Testing/Depth/``. A sequence is one image directory (the path's first component).
"""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn.data.frames import ICVL, DatasetSplit, Frame, check_labels
from keras_cadstn.data.png import read_png
from keras_cadstn.errors import DataError

LABEL_FILES = {"train": ("Training", ["labels.txt"]),
               "test": ("Testing", ["test_seq_1.txt", "test_seq_2.txt"])}


def read_depth(path: str) -> np.ndarray:
    """Full 240x320 depth image in mm as float32 (0 where the sensor has no reading)."""
    return read_png(path, (ICVL.camera.height, ICVL.camera.width), np.uint16).astype(np.float32)


def parse_labels(path: str, num_joints: int = 16):
    """Lines ``name u1 v1 d1 ... u16 v16 d16`` -> (names, (N, 16, 3) uvd)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: label file not found")
    names, rows = [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 1 + 3 * num_joints:
                raise DataError(f"{path}:{line_no}: {len(tokens) - 1} values, expected "
                                f"{3 * num_joints} ({num_joints} joints x uvd) after the image name")
            try:
                rows.append([float(t) for t in tokens[1:]])
            except ValueError as e:
                raise DataError(f"{path}:{line_no}: {e}") from None
            names.append(tokens[0])
    return names, np.asarray(rows, dtype=np.float64).reshape(-1, num_joints, 3)


def load_icvl(root: str, split: str = "train") -> DatasetSplit:
    """Read one ICVL split: frames in label-file order, a sequence id per image directory."""
    if split not in LABEL_FILES:
        raise ValueError(f"split must be one of {sorted(LABEL_FILES)}, got {split!r}")
    folder, label_names = LABEL_FILES[split]
    split_dir = os.path.join(root, folder)
    image_dir = os.path.join(split_dir, "Depth")
    frames, seq_of = [], {}
    for label_name in label_names:
        label_path = os.path.join(split_dir, label_name)
        names, uvd = parse_labels(label_path)
        check_labels(uvd, ICVL.camera, lambda i: f"{label_path}: frame {i} ({names[i]})")
        xyz = ICVL.camera.uvd_to_xyz(uvd)
        for name, j_uvd, j_xyz in zip(names, uvd, xyz):
            path = os.path.join(image_dir, name)
            if not os.path.isfile(path):
                raise DataError(f"{path}: depth image listed in {label_path} not found")
            seq = seq_of.setdefault(name.replace("\\", "/").split("/")[0], len(seq_of))
            frames.append(Frame(path=path, joints_uvd=j_uvd, joints_xyz=j_xyz, sequence_id=seq,
                                frame_index=len(frames), cube=ICVL.cube))
    if not frames:
        raise DataError(f"{split_dir}: the label files {', '.join(label_names)} list no frames")
    return DatasetSplit(spec=ICVL, split=split, frames=frames, read_depth=read_depth)
