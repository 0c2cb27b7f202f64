"""Procedural depth-hand sequences written in the NYU on-disk format.

An articulated right hand (palm, five 3-bone fingers with human bone lengths and joint limits, a
forearm) moves smoothly (grasp/open, finger waves, spread, wrist rotation and translation). It is
rendered by z-buffered sphere splatting through a pinhole camera (NYU's by default) with sensor
effects: depth noise growing with distance, missing pixels at depth edges, random drop-outs, a
background wall, and integer-mm quantisation. Self-occlusion comes from the z-buffer.

Labels follow NYU's 36-joint layout; the 14 evaluated joints are placed on the skeleton, the others
at plausible points of the same bones.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.camera import NYU_CAMERA, Camera
from keras_cadstn.data.frames import NYU_EVAL_JOINTS

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


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """How the synthetic sequences look; defaults mimic NYU (hand 450-750 mm from a Kinect)."""

    camera: Camera = NYU_CAMERA
    hand_scale: float = 1.0
    depth_range: tuple = (450.0, 750.0)
    wall_depth: tuple = (1300.0, 1900.0)
    noise_mm: float = 1.5  # at 500 mm, grows with depth squared (structured-light sensors)
    edge_dropout: float = 0.5
    random_dropout: float = 0.01
    fps: float = 30.0
    # What single frames cannot resolve and past frames can (ours, for the temporal network):
    # objects passing between camera and hand, bursts of missing depth over part of the hand,
    # fingers closer than the sensor's near limit, and faster motion in some sequences.
    events: bool = False
    occluders_per_100_frames: float = 1.0  # each 8-40 frames, 60-200 mm in front of the palm
    dropout_bursts_per_100_frames: float = 1.5  # each 2-10 frames, a disc of 15-35 mm over a joint
    near_limit_per_100_frames: float = 0.5  # each 10-30 frames, depth nearer than palm - 30 mm lost
    speeds: tuple = (1.0, 1.0, 2.0, 3.0)  # motion speed of a sequence, drawn once
    # The person behind the hand, as in NYU and ICVL recordings (ours, for the localiser): torso and
    # head ``person_behind_mm`` behind the palm, the upper arm joining the forearm to the shoulder,
    # the other arm hanging or (in a fraction of sequences) raised, and in some sequences an object
    # at the hand's depth or nearer, beside it.
    person: bool = False
    person_behind_mm: tuple = (150.0, 400.0)
    other_arm_raised: float = 0.3
    furniture: float = 0.3


def _rotation(roll, yaw, pitch):
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
            spread = SPREAD[name] * p["spread"]
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
        self.waves = {n: (rng.uniform(0.03, 0.4, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.3, 1, 3))
                      for n in names}

    def _signal(self, name, t):
        freq, phase, amp = self.waves[name]
        return float(np.sum(amp * np.sin(2 * np.pi * freq * t + phase)) / np.sum(amp))  # [-1, 1]

    def params(self, frame: int) -> dict:
        t = frame / self.config.fps
        g = 0.5 + 0.5 * self._signal("grasp", t)
        flex = [g + 0.35 * self._signal(f"wave{k}", t) for k in range(4)]
        z0, z1 = self.config.depth_range
        return {"flex": flex, "spread": (0.5 + 0.5 * self._signal("spread", t)) * (1 - g),
                "thumb_flex": g + 0.3 * self._signal("wave4", t),
                "thumb_abduction": 0.5 + 0.5 * self._signal("thumb_abduction", t),
                "roll": np.radians(40) * self._signal("roll", t), "yaw": np.radians(35) * self._signal("yaw", t),
                "pitch": np.radians(30) * self._signal("pitch", t),
                "translation": np.array([80 * self._signal("x", t), 50 * self._signal("y", t),
                                         (z0 + z1) / 2 + (z1 - z0) / 2 * self._signal("z", t)])}


def render_depth(centres: np.ndarray, radii: np.ndarray, camera: Camera, background: np.ndarray) -> np.ndarray:
    """Z-buffer the spheres (camera mm) over ``background`` (mm): the nearest surface per pixel.

    Spheres are grouped by patch size so each group's surfaces are computed in one vectorised step;
    the per-sphere loop only takes the minimum into a padded buffer (no bounds checks needed).
    """
    h, w = background.shape
    u = centres[:, 0] * camera.fx / centres[:, 2] + camera.cx
    v = centres[:, 1] * camera.fy / centres[:, 2] + camera.cy
    r_px = radii * camera.fx / centres[:, 2]
    size = 8 * (np.ceil((2 * r_px + 2) / 8).astype(np.int64))  # patch edge, rounded to few groups
    pad = int(size.max()) if len(size) else 0
    depth = np.full((h + 2 * pad, w + 2 * pad), np.inf, np.float32)
    depth[pad:pad + h, pad:pad + w] = background
    visible = (u > -pad / 2) & (u < w + pad / 2) & (v > -pad / 2) & (v < h + pad / 2) & (centres[:, 2] > 0)
    for p in np.unique(size[visible]):
        idx = np.nonzero(visible & (size == p))[0]
        u0 = np.floor(u[idx] - p / 2).astype(np.int64) + 1
        v0 = np.floor(v[idx] - p / 2).astype(np.int64) + 1
        grid = np.arange(p, dtype=np.float32)
        du = ((u0[:, None] - u[idx, None]).astype(np.float32) + grid) / r_px[idx, None].astype(np.float32)
        dv = ((v0[:, None] - v[idx, None]).astype(np.float32) + grid) / r_px[idx, None].astype(np.float32)
        q = 1.0 - (dv[:, :, None] ** 2 + du[:, None, :] ** 2)
        surface = centres[idx, 2, None, None].astype(np.float32) - radii[idx, None, None].astype(np.float32) * np.sqrt(np.maximum(q, 0.0))
        surface[q <= 0] = np.inf
        for k, (a, b) in enumerate(zip(v0 + pad, u0 + pad)):
            view = depth[a:a + p, b:b + p]
            np.minimum(view, surface[k], out=view)
    return depth[pad:pad + h, pad:pad + w].copy()


def render_ellipsoid(centre, semi_axes, camera: Camera, depth: np.ndarray) -> np.ndarray:
    """The nearest surface of an axis-aligned ellipsoid (camera mm) over ``depth``, in place.

    Only the pixels inside the projection of the ellipsoid's bounding box are computed (a ray that
    meets the ellipsoid meets the box): the torso covers a fifth of the frame, and the whole-frame
    version made a person scene 8x slower to render than a scene without one."""
    h, w = depth.shape
    centre, semi_axes = np.asarray(centre, float), np.asarray(semi_axes, float)
    u0, u1, v0, v1 = 0, w, 0, h
    if centre[2] - semi_axes[2] > 0:  # the box lies in front of the camera: its corners bound the image region
        corners = centre + semi_axes * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        u = camera.cx + camera.fx * corners[:, 0] / corners[:, 2]
        v = camera.cy + camera.fy * corners[:, 1] / corners[:, 2]
        u0, u1 = int(np.clip(np.floor(u.min()), 0, w)), int(np.clip(np.ceil(u.max()) + 1, 0, w))
        v0, v1 = int(np.clip(np.floor(v.min()), 0, h)), int(np.clip(np.ceil(v.max()) + 1, 0, h))
        if u0 >= u1 or v0 >= v1:
            return depth
    vv, uu = np.mgrid[v0:v1, u0:u1]
    ray = np.stack([(uu - camera.cx) / camera.fx, (vv - camera.cy) / camera.fy, np.ones(uu.shape)], -1)
    a, c = ray / semi_axes, centre / semi_axes  # t * ray on the surface: |t a - c| = 1
    qa, qb, qc = (a * a).sum(-1), -2.0 * (a[..., 0] * c[0] + a[..., 1] * c[1] + a[..., 2] * c[2]), c @ c - 1.0
    disc = qb * qb - 4 * qa * qc
    t = np.where(disc >= 0, (-qb - np.sqrt(np.maximum(disc, 0.0))) / (2 * qa), np.inf)
    region = depth[v0:v1, u0:u1]
    np.minimum(region, np.where(t > 0, t, np.inf).astype(np.float32), out=region)
    return depth


@dataclasses.dataclass(frozen=True)
class Person:
    """One sequence's person: where the body sits relative to the hand and what else is in view."""

    behind: float  # torso front behind the palm, mm
    offset: np.ndarray  # torso centre relative to the hand's mean position (x, y), mm
    side: float  # +1: the tracked hand's shoulder on +x
    raised: bool  # the other arm raised beside the head
    furniture: tuple | None  # (depth relative to the palm, lateral distance, width, height) mm

    @classmethod
    def draw(cls, rng: np.random.Generator, config: SynthConfig) -> "Person":
        furniture = None
        if rng.random() < config.furniture:
            furniture = (rng.uniform(-120.0, 40.0), rng.choice([-1.0, 1.0]) * rng.uniform(200.0, 320.0),
                         rng.uniform(150.0, 350.0), rng.uniform(150.0, 400.0))
        return cls(rng.uniform(*config.person_behind_mm), np.array([rng.uniform(-80, 80), rng.uniform(180, 300)]),
                   rng.choice([-1.0, 1.0]), bool(rng.random() < config.other_arm_raised), furniture)

    def scene(self, palm: np.ndarray, elbow: np.ndarray | None, camera: Camera, wall: np.ndarray) -> np.ndarray:
        """The depth (mm) behind and beside the hand: wall, torso, head, arms, furniture.
        ``elbow``: where the hand's forearm ends (None: no hand in view; both arms hang)."""
        depth = wall.copy()
        torso_depth = 110.0
        torso = np.array([self.offset[0], palm[1] + self.offset[1], palm[2] + self.behind + torso_depth])
        render_ellipsoid(torso, np.array([170.0, 260.0, torso_depth]), camera, depth)
        centres, radii = [], []

        def capsule(a, b, r0, r1):
            c, r = capsule_spheres(a, b, r0, r1)
            centres.append(c)
            radii.append(r)
        centres.append(torso[None] + [[0.0, -370.0, -torso_depth + 95.0]])  # head, its face at the chest's depth
        radii.append(np.array([95.0]))
        for side in (self.side, -self.side):
            shoulder = torso + [side * 165.0, -210.0, -40.0]
            if side == self.side and elbow is not None:
                capsule(shoulder, elbow, 50.0, 42.0)
            elif side != self.side and self.raised:
                hand_up = shoulder + [side * 90.0, -420.0, -80.0]
                capsule(shoulder, hand_up, 45.0, 32.0)
            else:
                elbow_down = shoulder + [side * 25.0, 290.0, -10.0]
                capsule(shoulder, elbow_down, 45.0, 40.0)
                capsule(elbow_down, elbow_down + [0.0, 260.0, -60.0], 40.0, 30.0)
        depth = render_depth(np.concatenate(centres), np.concatenate(radii), camera, depth)
        if self.furniture is not None:  # a box face beside the hand, at its depth or nearer
            dz, dx, width, height = self.furniture
            z = palm[2] + dz
            x0, y0 = palm[0] + dx - width / 2, palm[1] - height / 3
            u0, u1 = (int(np.clip(camera.cx + camera.fx * x / z, 0, camera.width)) for x in (x0, x0 + width))
            v0, v1 = (int(np.clip(camera.cy + camera.fy * y / z, 0, camera.height)) for y in (y0, y0 + height))
            np.minimum(depth[v0:v1, u0:u1], np.float32(z), out=depth[v0:v1, u0:u1])
        return np.rint(depth)


def sensor_effects(depth: np.ndarray, background: np.ndarray, box, rng: np.random.Generator,
                   config: SynthConfig) -> np.ndarray:
    """Noise, drop-outs at depth edges and random drop-outs on the hand's pixels inside ``box``;
    the wall stays clean (it lies outside every hand cube). Rounds the box to whole mm, in place."""
    v0, v1, u0, u1 = box
    patch = depth[v0:v1, u0:u1]
    hand = patch < background[v0:v1, u0:u1] - 1.0
    jump = np.zeros(patch.shape, bool)  # depth edges, found before the noise is added
    jump[:, 1:] |= np.abs(np.diff(patch, axis=1)) > 25.0
    jump[1:, :] |= np.abs(np.diff(patch, axis=0)) > 25.0
    z = patch[hand]
    z += rng.normal(0.0, 1.0, z.shape) * config.noise_mm * (z / 500.0) ** 2
    z[rng.random(z.shape) < config.random_dropout] = 0.0
    patch[hand] = z
    patch[jump & hand & (rng.random(patch.shape) < config.edge_dropout)] = 0.0
    np.rint(patch, out=patch)  # the background is already whole mm
    return depth


@dataclasses.dataclass(frozen=True)
class ContextEvent:
    kind: str  # "occluder" | "dropout" | "near_limit"
    start: int
    length: int
    params: tuple = ()

    def active(self, frame: int) -> bool:
        return self.start <= frame < self.start + self.length

    def progress(self, frame: int) -> float:
        return (frame - self.start) / max(self.length - 1, 1)


def draw_events(rng: np.random.Generator, config: SynthConfig, horizon: int = 4096) -> list:
    """A sequence's context events over its first ``horizon`` frames (Poisson arrivals)."""
    events = []
    for kind, rate, lengths in (("occluder", config.occluders_per_100_frames, (8, 40)),
                                ("dropout", config.dropout_bursts_per_100_frames, (2, 10)),
                                ("near_limit", config.near_limit_per_100_frames, (10, 30))):
        for _ in range(rng.poisson(rate * horizon / 100.0)):
            start, length = int(rng.integers(0, horizon)), int(rng.integers(lengths[0], lengths[1] + 1))
            if kind == "occluder":  # depth in front of the palm, radius, path angle, offset, joint-free
                params = (rng.uniform(60, 200), rng.uniform(25, 45), rng.uniform(0, np.pi), rng.uniform(-30, 30))
            elif kind == "dropout":  # which joint, radius (mm)
                params = (int(rng.integers(0, 36)), rng.uniform(15, 35))
            else:
                params = (30.0,)
            events.append(ContextEvent(kind, start, length, params))
    return events


class SequenceRenderer:
    """Renders one seeded sequence frame by frame: (depth mm (H, W) float32, 36 joints xyz mm).

    With ``config.events`` the sequence also has context events (``draw_events``);
    ``last_occlusion`` is then the fraction of the hand's pixels (inside its crop box) that the last
    rendered frame lost to an occluder, a drop-out burst or the near limit.
    """

    def __init__(self, seed: int, config: SynthConfig = SynthConfig()):
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.hand = HandModel(config.hand_scale * self.rng.uniform(0.9, 1.1))
        self.motion = MotionGenerator(self.rng, config)
        cam = config.camera
        vv, uu = np.mgrid[0:cam.height, 0:cam.width]
        wall = self.rng.uniform(*config.wall_depth)
        tilt = self.rng.uniform(-0.3, 0.3, 2)
        self.background = np.rint(wall + tilt[0] * (uu - cam.cx) + tilt[1] * (vv - cam.cy)).astype(np.float32)
        # events from their own stream, so the same seed renders the same hand with or without them
        events_rng = np.random.default_rng([seed, 1])
        self.speed = float(events_rng.choice(config.speeds)) if config.events else 1.0
        self.events = draw_events(events_rng, config) if config.events else []
        self.last_occlusion = 0.0
        # the person from a stream of its own too: the same hand with or without a body behind it
        self.person = Person.draw(np.random.default_rng([seed, 2]), config) if config.person else None

    def _occluder(self, event: ContextEvent, frame: int, palm: np.ndarray):
        """Sphere centres and radii of an object crossing the palm's line of sight."""
        depth_ahead, radius, angle, offset = event.params
        direction = np.array([np.cos(angle), np.sin(angle), 0.0])
        side = np.array([-np.sin(angle), np.cos(angle), 0.0])
        travel = (event.progress(frame) - 0.5) * 320.0  # mm, from one side of the hand to the other
        centre = palm + direction * travel + side * offset - np.array([0.0, 0.0, depth_ahead])
        centres = centre + np.outer(np.linspace(-1.2, 1.2, 4), side) * radius  # a short capsule
        return centres, np.full(len(centres), radius)

    def render(self, frame: int, hand: bool = True):
        """(depth, joints) of one frame; ``hand=False``: the same scene with the hand out of view
        (the person's arms hang), for checking that a localiser reports no hand."""
        p = self.motion.params(frame * self.speed)
        joints, centres, radii = self.hand.pose(p)
        rot = _rotation(p["roll"], p["yaw"], p["pitch"])
        joints = joints @ rot.T + p["translation"]
        centres = centres @ rot.T + p["translation"]
        cam = self.config.camera
        shift = self._into_view(joints)  # labels must lie in the image (the importers check it)
        joints, centres = joints + shift, centres + shift
        background = self.background
        if self.person is not None:
            elbow = (np.array([0.0, WRIST_Y + 260.0, 20.0]) * self.hand.scale) @ rot.T + p["translation"] + shift
            background = self.person.scene(joints[32], elbow if hand else None, cam, self.background)
        if not hand:
            return background.copy(), joints
        depth = render_depth(centres, radii, cam, background)
        uvd = cam.xyz_to_uvd(joints)
        margin = 160.0 * cam.fx / p["translation"][2]
        box = (max(int(uvd[32, 1] - margin), 0), min(int(uvd[32, 1] + margin), cam.height),
               max(int(uvd[32, 0] - margin), 0), min(int(uvd[32, 0] + margin), cam.width))
        active = [e for e in self.events if e.active(frame)]
        hand_only = depth.copy() if active else None
        for e in active:
            if e.kind == "occluder":
                oc, orad = self._occluder(e, frame, joints[32])
                np.minimum(depth, render_depth(oc, orad, cam, np.full_like(depth, np.inf)), out=depth)
        depth = sensor_effects(depth, background, box, self.rng, self.config)
        for e in active:
            if e.kind == "dropout":
                joint, radius_mm = e.params
                u, v, d = uvd[joint]
                r = radius_mm * cam.fx / d
                vv, uu = np.ogrid[0:cam.height, 0:cam.width]
                depth[((uu - u) ** 2 + (vv - v) ** 2 <= r * r) & (depth < background - 1.0)] = 0.0
            elif e.kind == "near_limit":
                depth[(depth > 0) & (depth < joints[32, 2] - e.params[0])] = 0.0
        self.last_occlusion = self._occlusion(hand_only, depth, box, background) if active else 0.0
        return depth, joints

    def _into_view(self, joints, margin: float = 12.0) -> np.ndarray:
        """The x/y shift (mm) that brings every joint at least ``margin`` pixels inside the image."""
        cam = self.config.camera
        uvd = cam.xyz_to_uvd(joints)
        shift = np.zeros(3)
        for axis, (size, focal) in enumerate(((cam.width, cam.fx), (cam.height, cam.fy))):
            low, high = np.argmin(uvd[:, axis]), np.argmax(uvd[:, axis])
            if uvd[low, axis] < margin:
                shift[axis] = (margin - uvd[low, axis]) * uvd[low, 2] / focal
            elif uvd[high, axis] > size - 1 - margin:
                shift[axis] = (size - 1 - margin - uvd[high, axis]) * uvd[high, 2] / focal
        return shift

    def _occlusion(self, hand_only, depth, box, background) -> float:
        v0, v1, u0, u1 = box
        hand = hand_only[v0:v1, u0:u1] < background[v0:v1, u0:u1] - 1.0
        if not hand.any():
            return 0.0
        seen = depth[v0:v1, u0:u1]
        lost = hand & ((seen == 0) | (seen < hand_only[v0:v1, u0:u1] - 10.0))
        # the sensor's own random drop-outs are not occlusion: count only what the events removed
        return float(max(lost.sum() / hand.sum() - self.config.random_dropout - 0.02, 0.0))


def write_synthetic_nyu(out_dir: str, frames_per_sequence: int = 256, train_sequences: int = 4,
                        test_sequences: int = 2, seed: int = 0, config: SynthConfig = SynthConfig(),
                        progress: bool = True, workers: int | None = None) -> dict:
    """Write ``<out>/train`` and ``<out>/test`` in the NYU format (a split of 0 sequences is not
    written); returns frame counts.

    Besides NYU's files each split gets ``sequence_starts.txt`` and ``occlusion.txt`` (the fraction
    of the hand lost per frame; all 0 without ``config.events``), which the NYU importer reads.
    Seeded and deterministic: each sequence has its own seed, so ``workers`` processes (default:
    one per CPU) write the same files as one. Resumable: a PNG already present is kept (PNGs are
    written atomically), and the labels are written last, so a folder with ``joint_data.mat`` is
    complete.
    """
    from keras_cadstn.data import nyu

    counts = {}
    splits = {name: seqs for name, seqs in (("train", range(train_sequences)),
                                            ("test", range(train_sequences, train_sequences + test_sequences)))
              if len(seqs)}
    workers = min(workers or os.cpu_count() or 1, max(train_sequences, test_sequences, 1))
    pool = None
    if workers > 1:
        import concurrent.futures
        import multiprocessing
        # spawn: the caller may have started TensorFlow's threads, which a fork would copy half-way
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for split, seqs in splits.items():
            split_dir = os.path.join(out_dir, split)
            os.makedirs(split_dir, exist_ok=True)
            n = frames_per_sequence * len(seqs)
            joints_uvd, occlusion = np.zeros((n, 36, 3)), np.zeros(n)
            bar = _progress(n, f"synth {split}", progress)
            jobs = [(split_dir, seed * 1000 + seq, k * frames_per_sequence, frames_per_sequence, config)
                    for k, seq in enumerate(seqs)]
            done = pool.map(_write_sequence, jobs) if pool else (_write_sequence(job) for job in jobs)
            for (_, _, first, count, _), (uvd, occ) in zip(jobs, done):
                joints_uvd[first:first + count], occlusion[first:first + count] = uvd, occ
                bar.update(count)
            bar.close()
            nyu.write_labels(split_dir, joints_uvd, [k * frames_per_sequence for k in range(len(seqs))], occlusion)
            counts[split] = n
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return counts


def _write_sequence(job) -> tuple:
    """Render one sequence into NYU PNGs numbered from ``first``; returns (joints uvd, occlusion)."""
    from keras_cadstn.data import nyu
    split_dir, sequence_seed, first, count, config = job
    renderer = SequenceRenderer(sequence_seed, config)
    joints_uvd, occlusion = np.zeros((count, 36, 3)), np.zeros(count)
    for t in range(count):
        depth, joints = renderer.render(t)  # rendered even when the PNG exists: keeps the RNG in step
        joints_uvd[t] = config.camera.xyz_to_uvd(joints)
        occlusion[t] = renderer.last_occlusion
        path = nyu.depth_path(split_dir, first + t)
        if not os.path.isfile(path):
            nyu.write_depth(path, depth / config.camera.depth_unit_mm)
    return joints_uvd, occlusion


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled)


# The synthetic skeleton is NYU's 36-joint layout; these pick each dataset's evaluated joints from it.
# ICVL: palm, then thumb, index, middle, ring, pinky as (root = MCP, mid = PIP / thumb IP, tip).
_NYU36_FINGER = {"pinky": 0, "ring": 6, "middle": 12, "index": 18}  # tip, ., DIP, PIP, ., MCP
LAYOUT_FROM_NYU36 = {
    "nyu": NYU_EVAL_JOINTS,
    "icvl": (32, 27, 25, 24) + tuple(_NYU36_FINGER[f] + i for f in ("index", "middle", "ring", "pinky")
                                      for i in (5, 3, 0)),
}


def render_reference_frames(spec, num_frames: int, seed: int = 0, config: SynthConfig | None = None):
    """Yield ``(depth_mm (H, W), joints_xyz (K, 3) in spec's joint layout, reference uvd)`` of one
    synthetic sequence seen through ``spec.camera``: what exports, the tracker examples and the
    benchmarks feed when no recorded data is given."""
    if spec.name not in LAYOUT_FROM_NYU36:
        raise ValueError(f"no synthetic joint layout for dataset {spec.name!r}; known: {sorted(LAYOUT_FROM_NYU36)}")
    layout = list(LAYOUT_FROM_NYU36[spec.name])
    renderer = SequenceRenderer(seed, config or SynthConfig(camera=spec.camera))
    for t in range(num_frames):
        depth_mm, joints36 = renderer.render(t)
        joints = joints36[layout]
        yield depth_mm, joints, spec.camera.xyz_to_uvd(joints[spec.reference_joint])
