"""Typed frames and dataset specifications shared by the importers."""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from keras_cadstn.camera import ICVL_CAMERA, NYU_CAMERA, Camera
from keras_cadstn.data.preprocessing import check_cube
from keras_cadstn.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything that ties a trained model to its data: camera, cube, joint layout."""
    name: str
    camera: Camera
    cube: tuple  # mm (x, y, z), full edge lengths
    joint_names: tuple
    reference_joint: int  # index (in joint_names) of the joint the hand crop is centred on
    # ours: the crop's centre of mass is taken in the cube scaled by this (1: the paper's whole cube;
    # smaller keeps the forearm and the body behind the hand out of it, docs/decisions.md)
    centre_scale: float = 1.0

    def __post_init__(self):
        check_cube(self.cube)
        if not 0 < float(self.centre_scale) <= 1:
            raise ConfigError(f"{self.name}: centre_scale must be in (0, 1], got {self.centre_scale!r}")
        if not 0 <= int(self.reference_joint) < len(self.joint_names):
            raise ConfigError(f"{self.name}: reference joint {self.reference_joint} is not one of the "
                              f"{len(self.joint_names)} joints")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["camera"] = self.camera.to_dict()
        d["cube"], d["joint_names"] = list(self.cube), list(self.joint_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        missing = [k for k in ("name", "camera", "cube", "joint_names", "reference_joint") if k not in d]
        if missing:
            raise DataError(f"dataset spec lacks {missing}")
        return cls(name=d["name"], camera=Camera.from_dict(d["camera"]), cube=tuple(d["cube"]),
                   joint_names=tuple(d["joint_names"]), reference_joint=int(d["reference_joint"]),
                   centre_scale=float(d.get("centre_scale", 1.0)))  # written before the option: the paper's

    def centre_cube(self, cube=None) -> np.ndarray:
        """The cube (this frame's, default the spec's) the crop's centre of mass is taken in."""
        return np.asarray(self.cube if cube is None else cube, np.float64) * float(self.centre_scale)

    def with_camera(self, camera: Camera) -> "DatasetSpec":
        return dataclasses.replace(self, camera=camera)


# NYU: the 14 evaluated of the 36 labelled joints, in the order public comparisons use.
NYU_EVAL_JOINTS = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)
NYU_JOINT_NAMES = ("pinky_tip", "pinky_mid", "ring_tip", "ring_mid", "middle_tip", "middle_mid",
                   "index_tip", "index_mid", "thumb_tip", "thumb_mid", "thumb_root", "wrist_1",
                   "wrist_2", "palm_center")
ICVL_JOINT_NAMES = ("palm",) + tuple(f"{f}_{p}" for f in ("thumb", "index", "middle", "ring", "pinky")
                                     for p in ("root", "mid", "tip"))

NYU = DatasetSpec("nyu", NYU_CAMERA, (300.0, 300.0, 300.0), NYU_JOINT_NAMES,
                  reference_joint=NYU_JOINT_NAMES.index("palm_center"))
ICVL = DatasetSpec("icvl", ICVL_CAMERA, (200.0, 200.0, 200.0), ICVL_JOINT_NAMES,
                   reference_joint=ICVL_JOINT_NAMES.index("palm"))
DATASETS = {"nyu": NYU, "icvl": ICVL}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


@dataclasses.dataclass(frozen=True)
class Frame:
    """One labelled depth frame of a split, in sequence order."""
    path: str
    joints_uvd: np.ndarray  # (K, 3) pixels, pixels, mm
    joints_xyz: np.ndarray  # (K, 3) mm, camera coordinates, y down
    sequence_id: int
    frame_index: int  # position in the split
    cube: tuple  # mm, this frame's cube (NYU's second test subject uses a smaller one)
    occlusion: float = 0.0  # fraction of the hand hidden or missing, where the data set says (synthetic)


@dataclasses.dataclass(frozen=True)
class DatasetSplit:
    """A split of a dataset as an importer returns it: frames in order plus how to read them."""
    spec: DatasetSpec
    split: str
    frames: Sequence[Frame]
    read_depth: Callable[[str], np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_sequences(self) -> int:
        return len({f.sequence_id for f in self.frames})


def hold_out(split: DatasetSplit, sequences: int | None = None, fraction: float = 0.1) -> tuple:
    """(train, validation): the last ``sequences`` whole sequences of a training split, or (None)
    the last ``fraction`` of its frames (NYU's training set is one long sequence: its tail is held
    out as a contiguous block, so no validation frame has a neighbour in training but one)."""
    ids = sorted({f.sequence_id for f in split.frames})
    if sequences is not None:
        if not 1 <= sequences < len(ids):
            raise ConfigError(f"{split.split}: cannot hold out {sequences} of its {len(ids)} sequences "
                              f"(at least one must stay for training)")
        held = set(ids[-sequences:])
        cut = [f.sequence_id in held for f in split.frames]
    else:
        if not 0 < fraction < 1:
            raise ConfigError(f"fraction must lie in (0, 1), got {fraction}")
        n_val = max(1, int(round(len(split.frames) * fraction)))
        cut = [i >= len(split.frames) - n_val for i in range(len(split.frames))]
    train = [f for f, c in zip(split.frames, cut) if not c]
    val = [f for f, c in zip(split.frames, cut) if c]
    return (dataclasses.replace(split, frames=train), dataclasses.replace(split, split="val", frames=val))


def check_labels(joints_uvd: np.ndarray, camera: Camera, where: Callable[[int], str]) -> None:
    """Raise DataError naming the first frame whose joints are NaN or outside the image."""
    bad_nan = ~np.isfinite(joints_uvd).all(axis=(1, 2))
    if bad_nan.any():
        i = int(np.argmax(bad_nan))
        raise _label_error(where(i), "has NaN/inf joint coordinates")
    u, v, d = joints_uvd[..., 0], joints_uvd[..., 1], joints_uvd[..., 2]
    outside = ((u < 0) | (u >= camera.width) | (v < 0) | (v >= camera.height) | (d <= 0)).any(axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        raise _label_error(where(i), f"has joints outside the {camera.width}x{camera.height} image "
                                     f"or with depth <= 0 (expected 0 <= u < {camera.width}, "
                                     f"0 <= v < {camera.height}, d > 0)")


def _label_error(where: str, what: str):
    return DataError(f"{where} {what}")
