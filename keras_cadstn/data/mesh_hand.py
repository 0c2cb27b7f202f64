"""A skinned triangle-mesh hand posed by linear blend skinning: the WebXR generic hand (MIT,
Copyright (c) 2019 Amazon; ``keras_cadstn/assets/hands``, made by tools/convert_webxr_hand.py).

Hand frame as the procedural hand's: mm, the palm's centre at the origin, fingers along -y, the
thumb toward +x, the palm facing -z. 20 degrees of freedom (``DOFS``), radians, each within
``LIMITS``: per finger the knuckle's flexion and spread and the two outer joints' flexion; the
thumb's base flexion (across the palm) and abduction (away from it), and its two outer joints. A
joint turns about its own axes from the mesh (OpenXR: -z along the bone, +y the back of the hand),
in the rest pose, and carries every joint after it. Shape: an overall scale, the palm's width and
each finger's length. Labels follow NYU's 36-joint layout (``nyu_joints``).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "hands", "webxr_right.npz")
FINGERS = ("index", "middle", "ring", "pinky")
DOFS = tuple(f"{f}_{d}" for f in FINGERS for d in ("mcp", "spread", "pip", "dip")) + (
    "thumb_cmc", "thumb_abduction", "thumb_mcp", "thumb_ip")
# anatomical ranges (degrees): flexion positive toward the palm
_FINGER_LIMITS = {"mcp": (-20.0, 90.0), "spread": (-20.0, 20.0), "pip": (0.0, 110.0), "dip": (0.0, 80.0)}
_THUMB_LIMITS = {"thumb_cmc": (-15.0, 50.0), "thumb_abduction": (-10.0, 60.0), "thumb_mcp": (-10.0, 60.0),
                 "thumb_ip": (-15.0, 80.0)}
LIMITS = np.radians([_FINGER_LIMITS[d.split("_", 1)[1]] if not d.startswith("thumb") else _THUMB_LIMITS[d]
                     for d in DOFS])
# spread is signed per finger: positive moves the index toward the thumb and the others away from the middle
SPREAD_SIGN = {"index": 1.0, "middle": 0.3, "ring": -0.6, "pinky": -1.0}


def _chain(finger: str) -> tuple:
    if finger == "thumb":
        return ("thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal", "thumb-tip")
    return tuple(f"{finger}-finger-{p}" for p in ("metacarpal", "phalanx-proximal", "phalanx-intermediate",
                                                  "phalanx-distal", "tip"))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: the rotation by ``angle`` about the unit ``axis``."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


@dataclasses.dataclass(frozen=True)
class HandShape:
    """How one hand differs from the mesh: overall scale, palm width, each finger's length."""

    scale: float = 1.0
    palm_width: float = 1.0
    finger_lengths: tuple = (1.0, 1.0, 1.0, 1.0, 1.0)  # thumb, index, middle, ring, pinky

    @classmethod
    def draw(cls, rng: np.random.Generator, scale: float = 1.0) -> "HandShape":
        return cls(scale * rng.uniform(0.85, 1.15), rng.uniform(0.9, 1.1), tuple(rng.uniform(0.92, 1.08, 5)))


class MeshHand:
    """The mesh, shaped once (``HandShape``), posed per frame (``pose``)."""

    def __init__(self, shape: HandShape = HandShape(), path: str = ASSET):
        data = np.load(path)
        self.names = [str(n) for n in data["joint_names"]]
        self.faces = data["faces"].astype(np.int64)
        self.skin_joints = data["skin_joints"].astype(np.int64)
        weights = data["skin_weights"].astype(np.float64)
        self.skin_weights = weights / weights.sum(axis=1, keepdims=True)  # stored in float32: sum to 1 again
        axes = data["joint_axes"].astype(np.float64)
        self.axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)  # unit columns again after float32
        rest_joints = data["joint_positions"].astype(np.float64)
        self.index = {n: i for i, n in enumerate(self.names)}
        # shape: the palm widened across x, then each finger's joints scaled about its knuckle; every
        # vertex moves with the joints it is bound to, so the skin follows
        widen = np.array([shape.palm_width, 1.0, 1.0])
        wide = rest_joints * widen
        joints = wide.copy()
        for finger, length in zip(("thumb",) + FINGERS, shape.finger_lengths):
            ids = [self.index[n] for n in _chain(finger)]
            joints[ids[1:]] = joints[ids[1]] + length * (joints[ids[1:]] - joints[ids[1]])
        vertices = data["vertices"].astype(np.float64) * widen
        vertices += np.einsum("vk,vkc->vc", self.skin_weights, (joints - wide)[self.skin_joints])
        self.rest_joints = joints * shape.scale
        self.rest_vertices = vertices * shape.scale
        self.scale = shape.scale

    def transforms(self, angles: np.ndarray) -> tuple:
        """Per joint (25) the rotation R and translation t that carry the rest pose to ``angles``."""
        angles = np.clip(np.asarray(angles, np.float64), LIMITS[:, 0], LIMITS[:, 1])
        rot = np.tile(np.eye(3), (len(self.names), 1, 1))
        trans = np.zeros((len(self.names), 3))
        for k, finger in enumerate(FINGERS + ("thumb",)):
            a = angles[4 * k:4 * k + 4]
            if finger == "thumb":
                # base: flexion about the joint's x (toward -y, the palmar side), abduction about its y
                turns = {0: (("x", -a[0]), ("y", a[1])), 1: (("x", -a[2]),), 2: (("x", -a[3]),)}
            else:
                turns = {1: (("y", SPREAD_SIGN[finger] * a[1]), ("x", -a[0])), 2: (("x", -a[2]),), 3: (("x", -a[3]),)}
            chain = [self.index[n] for n in _chain(finger)]
            r, t = np.eye(3), np.zeros(3)
            for position, j in enumerate(chain):
                local = np.eye(3)
                for axis, angle in turns.get(position, ()):
                    local = local @ _rotation(self.axes[j][:, "xyz".index(axis)], angle)
                pivot = self.rest_joints[j]
                # this joint's transform: the parent's, after turning about this joint's pivot
                t = r @ (pivot - local @ pivot) + t
                r = r @ local
                rot[j], trans[j] = r, t
        return rot, trans

    def pose(self, angles: np.ndarray) -> tuple:
        """(36 NYU joints (36, 3), vertices (V, 3)) in the hand frame, mm."""
        rot, trans = self.transforms(angles)
        joints = np.einsum("jab,jb->ja", rot, self.rest_joints) + trans
        per_joint = np.einsum("vkab,vb->vka", rot[self.skin_joints], self.rest_vertices) + trans[self.skin_joints]
        vertices = np.einsum("vk,vka->va", self.skin_weights, per_joint)
        return self.nyu_joints(joints), vertices

    def nyu_joints(self, joints: np.ndarray) -> np.ndarray:
        """The mesh's 25 joints as NYU's 36: per finger tip, distal middle, DIP, PIP, proximal middle,
        MCP (little, ring, middle, index); the thumb's tip, IP, its middle, MCP, CMC, its middle; the
        wrist's two sides, the palm's centre and three palm points."""
        j = {n: joints[i] for n, i in self.index.items()}
        out = np.zeros((36, 3))
        for k, finger in enumerate(("pinky", "ring", "middle", "index")):
            _, mcp, pip, dip, tip = (j[n] for n in _chain(finger))
            out[6 * k:6 * k + 6] = [tip, (dip + tip) / 2, dip, pip, (mcp + pip) / 2, mcp]
        cmc, mcp, ip, tip = (j[n] for n in _chain("thumb"))
        out[24:30] = [tip, ip, (ip + mcp) / 2, mcp, cmc, (cmc + mcp) / 2]
        wrist, side = j["wrist"], np.array([22.0, 0.0, 0.0]) * self.scale
        out[30], out[31] = wrist + side, wrist - side
        out[32] = (wrist + j["middle-finger-phalanx-proximal"]) / 2.0
        out[33] = (wrist + j["index-finger-phalanx-proximal"]) / 2.0
        out[34] = (wrist + j["pinky-finger-phalanx-proximal"]) / 2.0
        out[35] = (out[32] + wrist) / 2.0
        return out
