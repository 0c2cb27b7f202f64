"""The procedural hand of the synthetic data: a palm of spheres and fingers of capsules, posed by a grasp
signal, and its motion over a sequence."""
from __future__ import annotations

import numpy as np

from keras_cadstn.config import SynthConfig

# Finger order as in NYU's labels: pinky, ring, middle, index (then thumb, then palm).
FINGERS = ("pinky", "ring", "middle", "index")


# Bone lengths in mm (proximal, middle, distal), human adult averages.
BONES = {"pinky": (32.0, 19.0, 17.0), "ring": (40.0, 26.0, 19.0), "middle": (44.0, 28.0, 20.0),
         "index": (40.0, 24.0, 18.0), "thumb": (38.0, 32.0, 26.0)}


# Metacarpo-phalangeal joints on the palm's top edge (hand frame: x across, y towards the wrist,
# z away from the camera; the palm faces the camera in the neutral pose).
KNUCKLES = {"pinky": (-30.0, -38.0), "ring": (-11.0, -45.0), "middle": (9.0, -47.0), "index": (28.0, -43.0)}


FINGER_RADIUS = {"pinky": 7.0, "ring": 8.0, "middle": 8.5, "index": 8.5, "thumb": 9.5}


THUMB_BASE = (30.0, 25.0)


WRIST_Y = 45.0


# Joint limits in degrees: flexion of MCP, PIP, DIP (DIP follows PIP at 2/3, as in real hands).
FLEX_LIMITS = (85.0, 100.0, 67.0)


SPREAD = {"pinky": -14.0, "ring": -5.0, "middle": 0.0, "index": 7.0}


# 'grasp_spread': each finger's own spread up to about its knuckle's abduction limit (index ~20°,
# little finger ~30° from the middle finger), where SPREAD fans the whole hand by a third of that
SPREAD_WIDE = {"pinky": -30.0, "ring": -12.0, "middle": 0.0, "index": 20.0}


def rotation(roll, yaw, pitch):
    cr, sr, cy, sy, cp, sp = np.cos(roll), np.sin(roll), np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def _finger_points(base, lengths, spread_deg, flex_deg):
    """Base + three bones; flexion bends towards the camera (-z), spread rotates in the palm plane."""
    a = np.radians(spread_deg)
    points, p, phi = [np.asarray(base, float)], np.asarray(base, float), 0.0
    for length, f in zip(lengths, flex_deg):
        phi += np.radians(f)
        d = np.array([np.sin(a) * np.cos(phi), -np.cos(a) * np.cos(phi), -np.sin(phi)])
        p = p + length * d
        points.append(p)
    return points  # MCP, PIP, DIP, tip


def capsule_spheres(a, b, r0, r1, spacing: float = 0.5) -> tuple:
    """Spheres along a segment (centres (N, 3), radii (N,)), radius r0 -> r1, ``spacing`` x radius
    apart: a limb for ``render_depth``."""
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / (spacing * min(r0, r1)))) + 1)
    t = np.linspace(0, 1, n)[:, None]
    return a + t * (b - a), r0 + t[:, 0] * (r1 - r0)


class HandModel:
    """Skeleton and sphere set of one hand pose (hand frame, mm)."""
    def __init__(self, scale: float = 1.0):
        self.scale = scale
        xs, ys = np.meshgrid(np.linspace(-28, 28, 4), np.linspace(-34, 34, 5))
        self.palm = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], -1)
        self.palm_radius = 15.0

    def pose(self, p: dict):
        """Pose parameters -> (36 NYU joints (36, 3), sphere centres (N, 3), radii (N,)) in hand frame."""
        s = self.scale
        joints = np.zeros((36, 3))
        centres, radii = [self.palm * s], [np.full(len(self.palm), self.palm_radius * s)]

        def capsule(a, b, r0, r1, spacing=0.5):
            c, r = capsule_spheres(a, b, r0, r1, spacing)
            centres.append(c)
            radii.append(r)

        for k, name in enumerate(FINGERS):
            flex = np.clip(p["flex"][k], 0, 1)
            angles = (FLEX_LIMITS[0] * flex, FLEX_LIMITS[1] * flex, FLEX_LIMITS[2] * flex)
            spread = p["spread_deg"][k] if "spread_deg" in p else SPREAD[name] * p["spread"]
            kx, ky = KNUCKLES[name]
            mcp, pip, dip, tip = _finger_points(np.array([kx, ky, 0.0]) * s, np.array(BONES[name]) * s,
                                                spread, angles)
            r = FINGER_RADIUS[name] * s
            capsule(mcp, pip, r, 0.92 * r)
            capsule(pip, dip, 0.92 * r, 0.85 * r)
            capsule(dip, tip, 0.85 * r, 0.8 * r)
            o = 6 * k  # tip, distal mid, DIP, PIP ("mid"), proximal mid, MCP
            joints[o:o + 6] = [tip, (dip + tip) / 2, dip, pip, (mcp + pip) / 2, mcp]

        # Thumb: from its carpometacarpal joint, swinging across the palm as it flexes.
        flex_t = np.clip(p["thumb_flex"], 0, 1)
        cmc = np.array([THUMB_BASE[0], THUMB_BASE[1], 0.0]) * s
        a = np.radians(40.0 + 25.0 * p["thumb_abduction"] + 30.0 * flex_t)
        pts = [cmc]
        phi = np.radians(10.0)
        for length, f in zip(np.array(BONES["thumb"]) * s, (25.0, 35.0, 45.0)):
            phi += np.radians(f * flex_t)
            d = np.array([np.cos(a) * np.cos(phi), -np.sin(a) * np.cos(phi), -np.sin(phi)])
            pts.append(pts[-1] + length * d)
        cmc, mcp, ip, tip = pts
        r = FINGER_RADIUS["thumb"] * s
        capsule(cmc, mcp, 1.2 * r, r)
        capsule(mcp, ip, r, 0.9 * r)
        capsule(ip, tip, 0.9 * r, 0.8 * r)
        joints[24:30] = [tip, ip, (ip + mcp) / 2, mcp, cmc, (cmc + mcp) / 2]

        wrist = np.array([0.0, WRIST_Y, 0.0]) * s
        capsule(wrist, wrist + np.array([0.0, 260.0, 20.0]) * s, 26.0 * s, 32.0 * s, spacing=0.9)  # forearm: coarse, mostly outside the crop
        joints[30] = wrist + np.array([22.0, 0, 0]) * s
        joints[31] = wrist + np.array([-22.0, 0, 0]) * s
        joints[32] = np.array([0.0, 0.0, 0.0])  # palm centre
        joints[33] = np.array([20.0, 10.0, 0.0]) * s
        joints[34] = np.array([-20.0, 10.0, 0.0]) * s
        joints[35] = np.array([0.0, 30.0, 0.0]) * s
        return joints, np.concatenate(centres), np.concatenate(radii)


class MotionGenerator:
    """Smooth random motion: each parameter a sum of a few slow random sinusoids."""
    def __init__(self, rng: np.random.Generator, config: SynthConfig):
        self.rng, self.config = rng, config
        names = ["grasp", "spread", "thumb_abduction", "roll", "yaw", "pitch", "x", "y", "z"] + \
                [f"wave{k}" for k in range(5)]
        if config.poses == "grasp_spread":  # drawn after the others: the other modes' motion stays as it was
            names += [f"spread{k}" for k in range(4)]
        self.waves = {n: (rng.uniform(0.03, 0.4, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.3, 1, 3))
                      for n in names}

    def _signal(self, name, t):
        freq, phase, amp = self.waves[name]
        return float(np.sum(amp * np.sin(2 * np.pi * freq * t + phase)) / np.sum(amp))  # [-1, 1]

    def params(self, frame: int) -> dict:
        t = frame / self.config.fps
        # a sum of sinusoids dwells near its middle: 'grasp' opens the hand fully (g < 0.1) in 3% of
        # frames; 'grasp_wide' and 'grasp_spread' stretch it to about even over open to closed (12% open)
        wide = self.config.poses in ("grasp_wide", "grasp_spread")
        g = float(np.clip(0.5 + (0.8 if wide else 0.5) * self._signal("grasp", t), 0, 1))
        flex = [g + 0.35 * self._signal(f"wave{k}", t) for k in range(4)]
        z0, z1 = self.config.depth_range
        spread = {}
        if self.config.poses == "grasp_spread":  # the hand's fan stretched like g, each finger off it by its own wave
            fan = np.clip(0.5 + 0.8 * self._signal("spread", t), 0, 1)
            spread["spread_deg"] = [SPREAD_WIDE[f] * (1 - g) * float(np.clip(fan + 0.3 * self._signal(f"spread{k}", t), 0, 1))
                                    for k, f in enumerate(FINGERS)]
        return {**spread, "flex": flex, "spread": (0.5 + 0.5 * self._signal("spread", t)) * (1 - g),
                "thumb_flex": g + 0.3 * self._signal("wave4", t),
                "thumb_abduction": 0.5 + 0.5 * self._signal("thumb_abduction", t),
                "roll": np.radians(40) * self._signal("roll", t), "yaw": np.radians(35) * self._signal("yaw", t),
                "pitch": np.radians(30) * self._signal("pitch", t),
                "translation": np.array([80 * self._signal("x", t), 50 * self._signal("y", t),
                                         (z0 + z1) / 2 + (z1 - z0) / 2 * self._signal("z", t)])}
