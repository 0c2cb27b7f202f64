"""Poses real hands make, for the mesh hand (``mesh_hand.DOFS``): common gestures, the moves between
them, fingers moving on their own within their limits, and any view of the hand.

No dataset labels or published predictions are used: the gestures are written down by hand in
degrees of each joint, and the moves between them are smooth random walks.
"""
from __future__ import annotations

import numpy as np

from keras_cadstn.config import SynthConfig
from keras_cadstn.data.mesh_hand import DOFS, FINGERS, LIMITS

OPEN, HALF, FIST, HOOK = (0.0, 0.0, 0.0), (45.0, 60.0, 35.0), (85.0, 100.0, 60.0), (10.0, 95.0, 70.0)
THUMB_OVER = (40.0, 20.0, 40.0, 30.0)  # thumb folded over the fingers


def _gesture(fingers: dict, spread: float, thumb: tuple) -> np.ndarray:
    """Degrees per finger (mcp, pip, dip), the fingers' spread, the thumb (cmc, abduction, mcp, ip)
    -> the 20 DOFs in radians."""
    out = []
    for f in FINGERS:
        mcp, pip, dip = fingers.get(f, OPEN)
        out += [mcp, spread, pip, dip]
    return np.radians(out + list(thumb))


def _all(flex) -> dict:
    return dict.fromkeys(FINGERS, flex)


GESTURES = {
    "open": _gesture(_all(OPEN), 0.0, (0.0, 20.0, 0.0, 0.0)),
    "spread": _gesture(_all(OPEN), 20.0, (-10.0, 45.0, 0.0, 0.0)),
    "relaxed": _gesture(_all((15.0, 20.0, 10.0)), 5.0, (10.0, 25.0, 10.0, 10.0)),
    "fist": _gesture(_all(FIST), 0.0, THUMB_OVER),
    "point": _gesture({**_all(FIST), "index": OPEN}, 0.0, THUMB_OVER),
    "pinch": _gesture({**_all((20.0, 30.0, 15.0)), "index": (50.0, 60.0, 30.0)}, 5.0, (25.0, 45.0, 25.0, 20.0)),
    "ok": _gesture({**_all(OPEN), "index": (55.0, 70.0, 40.0)}, 10.0, (30.0, 45.0, 30.0, 25.0)),
    "v": _gesture({**_all(FIST), "index": OPEN, "middle": OPEN}, 18.0, (45.0, 15.0, 40.0, 35.0)),
    "rock": _gesture({**_all(FIST), "index": OPEN, "pinky": OPEN}, 10.0, THUMB_OVER),
    "thumbs_up": _gesture(_all(FIST), 0.0, (-15.0, 10.0, 0.0, 0.0)),
    "claw": _gesture(_all(HOOK), 10.0, (10.0, 40.0, 20.0, 40.0)),
    "ball": _gesture(_all((35.0, 40.0, 25.0)), 15.0, (10.0, 55.0, 15.0, 15.0)),
    "cylinder": _gesture(_all((55.0, 75.0, 40.0)), 0.0, (25.0, 40.0, 25.0, 20.0)),
    "half": _gesture(_all(HALF), 5.0, (20.0, 30.0, 20.0, 20.0)),
}
# which way the palm faces (yaw, radians) and how often: toward the camera, side on, the back
VIEWS = ((0.0, 0.5), (np.pi / 2, 0.15), (-np.pi / 2, 0.15), (np.pi, 0.2))


class GestureMotion:
    """Per frame: the 20 joint angles (gesture to gesture, each held a while, plus each joint's own
    slow wander), any in-plane rotation, a view (palm, side or back) with wander, and translation;
    the keys of ``MotionGenerator.params`` that the renderer reads (roll, yaw, pitch,
    translation) plus ``angles``."""

    def __init__(self, rng: np.random.Generator, config: SynthConfig, horizon: int = 4096):
        self.rng, self.config = rng, config
        names = list(GESTURES)
        self.keys, t = [], 0.0
        while t < horizon + 200:
            self.keys.append((t, GESTURES[names[int(rng.integers(len(names)))]]))
            t += rng.uniform(15, 60)  # frames from one gesture to the next
        self.times = np.array([k[0] for k in self.keys])
        # each joint's wander (+-10 degrees), the hand's rotation and position: slow sinusoids
        self.waves = rng.uniform(0.03, 0.4, (len(DOFS) + 6, 3)), rng.uniform(0, 2 * np.pi, (len(DOFS) + 6, 3))
        self.roll = rng.uniform(-np.pi, np.pi)
        views, weights = zip(*VIEWS)
        self.yaw = views[int(rng.choice(len(views), p=np.array(weights) / sum(weights)))]

    def _wave(self, i: int, t: float) -> np.ndarray:
        freq, phase = self.waves[0][i], self.waves[1][i]
        return float(np.mean(np.sin(2 * np.pi * freq * t + phase)))

    def params(self, frame: float) -> dict:
        k = int(np.clip(np.searchsorted(self.times, frame, side="right") - 1, 0, len(self.keys) - 2))
        (t0, a), (t1, b) = self.keys[k], self.keys[k + 1]
        s = np.clip((frame - t0) / (t1 - t0), 0.0, 1.0)
        s = s * s * (3 - 2 * s)  # ease in and out
        t = frame / self.config.fps
        wander = np.radians(10.0) * np.array([self._wave(i, t) for i in range(len(DOFS))])
        angles = np.clip((1 - s) * a + s * b + wander, LIMITS[:, 0], LIMITS[:, 1])
        z0, z1 = self.config.depth_range
        n = len(DOFS)
        return {"angles": angles, "roll": self.roll + np.radians(60) * self._wave(n, t),
                "yaw": self.yaw + np.radians(30) * self._wave(n + 1, t),
                "pitch": np.radians(35) * self._wave(n + 2, t),
                "translation": np.array([80 * self._wave(n + 3, t), 50 * self._wave(n + 4, t),
                                         (z0 + z1) / 2 + (z1 - z0) / 2 * self._wave(n + 5, t)])}


def grasp_angles(p: dict) -> np.ndarray:
    """The procedural hand's grasp parameters (``MotionGenerator``) as the mesh hand's angles."""
    flex = dict(zip(("pinky", "ring", "middle", "index"), np.clip(p["flex"], 0, 1)))
    out = []
    for f in FINGERS:
        out += [85.0 * flex[f], 15.0 * p["spread"], 100.0 * flex[f], 67.0 * flex[f]]
    tf, ta = float(np.clip(p["thumb_flex"], 0, 1)), float(np.clip(p["thumb_abduction"], 0, 1))
    return np.clip(np.radians(out + [40.0 * tf, 50.0 * ta, 40.0 * tf, 40.0 * tf]), LIMITS[:, 0], LIMITS[:, 1])
