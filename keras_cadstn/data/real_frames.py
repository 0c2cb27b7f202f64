"""Real depth frames annotated by eye: a folder of 16-bit PNGs with ``camera.json``, ``palms.tsv``
(the palm centre of each frame) and ``joints.tsv`` (fingertips and wrist), as in
``tests/data/real_frames`` (protocol: docs/real_frames.md).

Errors are measured in the image, at the palm's depth: a pixel distance times the palm's depth over
the focal length, in mm. Annotations by eye carry a few pixels of error themselves (about ±5 px at
the tips, ±15 px at the palm and wrist), so these figures are for development, not for a paper.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import cv2
import numpy as np

from keras_cadstn.camera import Camera
from keras_cadstn.errors import DataError

JOINTS = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "little_tip", "wrist")
# each annotated joint as the dataset's joints: one index, or the mean of several
DATASET_JOINTS = {
    "nyu": {"thumb_tip": (8,), "index_tip": (6,), "middle_tip": (4,), "ring_tip": (2,), "little_tip": (0,),
            "wrist": (11, 12)},  # NYU labels the wrist's two sides
    "icvl": {"thumb_tip": (3,), "index_tip": (6,), "middle_tip": (9,), "ring_tip": (12,), "little_tip": (15,)},
}
PALM_WINDOW = 5  # the palm's depth: median of the valid pixels within this many pixels of it


@dataclasses.dataclass(frozen=True)
class AnnotatedFrame:
    name: str
    raw: np.ndarray  # (H, W) the sensor's depth in its camera's unit, 0 where it has no reading
    camera: Camera
    palm_uv: np.ndarray  # (2,)
    joints_uv: dict  # joint name -> (2,) pixel position; absent: not annotated (not visible)

    @property
    def depth_mm(self) -> np.ndarray:
        return self.camera.to_mm(self.raw)

    @property
    def palm_depth_mm(self) -> float:
        u, v = np.round(self.palm_uv).astype(int)
        r = PALM_WINDOW
        window = self.depth_mm[max(v - r, 0):v + r + 1, max(u - r, 0):u + r + 1]
        valid = window[window > 0]
        if not valid.size:
            raise DataError(f"{self.name}: no depth reading within {r} px of the annotated palm ({u}, {v})")
        return float(np.median(valid))

    @property
    def palm_uvd(self) -> np.ndarray:
        return np.array([self.palm_uv[0], self.palm_uv[1], self.palm_depth_mm])

    def image_mm(self, pixels: float) -> float:
        """A distance in the image, in pixels, as mm at the palm's depth."""
        return float(pixels) * self.palm_depth_mm / ((self.camera.fx + self.camera.fy) / 2.0)


def _rows(path: str, columns: tuple) -> list:
    """(line number, row dict) of a tab-separated file whose header names ``columns``."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: annotation file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames is None or tuple(reader.fieldnames) != columns:
            raise DataError(f"{path}: expected the header {' '.join(columns)!r} (tab-separated), "
                            f"got {' '.join(reader.fieldnames or [])!r}")
        rows = []
        for row in reader:
            if None in row or any(v is None or v == "" for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: expected {len(columns)} tab-separated fields")
            rows.append((reader.line_num, row))
    return rows


def _pixel(path: str, line: int, row: dict, keys: tuple, camera: Camera) -> np.ndarray:
    try:
        uv = np.array([float(row[k]) for k in keys])
    except ValueError:
        raise DataError(f"{path}:{line}: {'/'.join(keys)} must be numbers, got "
                        f"{', '.join(row[k] for k in keys)}") from None
    if not (np.all(np.isfinite(uv)) and 0 <= uv[0] < camera.width and 0 <= uv[1] < camera.height):
        raise DataError(f"{path}:{line}: pixel ({row[keys[0]]}, {row[keys[1]]}) is outside the "
                        f"{camera.width}x{camera.height} image")
    return uv


def read_joints(path: str, names: set, camera: Camera) -> dict:
    """``joints.tsv``: frame name -> {joint: (u, v)}; every frame of ``names`` needs every joint."""
    joints = {}
    for line, row in _rows(path, ("file", "joint", "u", "v")):
        if row["file"] not in names:
            raise DataError(f"{path}:{line}: frame {row['file']!r} is not in palms.tsv")
        if row["joint"] not in JOINTS:
            raise DataError(f"{path}:{line}: unknown joint {row['joint']!r}; expected one of {', '.join(JOINTS)}")
        frame = joints.setdefault(row["file"], {})
        if row["joint"] in frame:
            raise DataError(f"{path}:{line}: {row['file']} {row['joint']} is annotated twice")
        frame[row["joint"]] = _pixel(path, line, row, ("u", "v"), camera)
    for name in sorted(names):
        missing = [j for j in JOINTS if j not in joints.get(name, {})]
        if missing:
            raise DataError(f"{path}: {name} lacks {', '.join(missing)}")
    return joints


def read_annotated_frames(folder: str) -> list:
    """Every frame of an annotated folder, in the order of ``palms.tsv``."""
    camera_path = os.path.join(folder, "camera.json")
    if not os.path.isfile(camera_path):
        raise DataError(f"{camera_path}: camera file not found")
    with open(camera_path) as f:
        try:
            camera = Camera.from_dict(json.load(f))
        except (ValueError, TypeError, KeyError) as e:  # bad JSON, missing or malformed fields
            raise DataError(f"{camera_path}: not a camera ({e})") from None
    palms_path = os.path.join(folder, "palms.tsv")
    palms = [(row["file"], _pixel(palms_path, line, row, ("palm_u", "palm_v"), camera))
             for line, row in _rows(palms_path, ("file", "palm_u", "palm_v"))]
    names = {name for name, _ in palms}
    if len(names) != len(palms):
        raise DataError(f"{palms_path}: a frame is listed twice")
    joints = read_joints(os.path.join(folder, "joints.tsv"), names, camera)
    frames = []
    for name, palm in palms:
        raw = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.shape != (camera.height, camera.width):
            raise DataError(f"{os.path.join(folder, name)}: expected a 16-bit {camera.width}x{camera.height} "
                            f"depth PNG")
        frames.append(AnnotatedFrame(name, raw, camera, palm, joints[name]))
    return frames


def annotated_joints_uv(joints_xyz: np.ndarray, dataset: str, camera: Camera) -> dict:
    """A prediction (K, 3) in camera mm as the annotated joints' pixels: {joint: (u, v)}."""
    if dataset not in DATASET_JOINTS:
        raise DataError(f"no annotated-joint mapping for dataset {dataset!r}; expected one of {sorted(DATASET_JOINTS)}")
    out = {}
    for joint, indices in DATASET_JOINTS[dataset].items():
        xyz = np.mean(np.asarray(joints_xyz, np.float64)[list(indices)], axis=0)
        out[joint] = camera.xyz_to_uvd(xyz[None])[0, :2]
    return out
