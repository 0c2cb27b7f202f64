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

import concurrent.futures
import dataclasses
import multiprocessing
import os

import numpy as np
from tqdm.auto import tqdm

from keras_cadstn.config import SYNTH_SPLITS, SynthConfig
from keras_cadstn.data import nyu
from keras_cadstn.data.frames import NYU_EVAL_JOINTS
from keras_cadstn.data.gestures import GestureMotion, grasp_angles
from keras_cadstn.data.mesh_hand import HandShape, MeshHand
from keras_cadstn.data.raster import render_mesh
from keras_cadstn.data.sensors import FAMILIES, apply_sensor
from keras_cadstn.data.synthetic_hand import WRIST_Y, HandModel, MotionGenerator, capsule_spheres, rotation
from keras_cadstn.data.synthetic_scene import Person, render_depth, sensor_effects


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


MIRROR = np.array([-1.0, 1.0, 1.0])


class SequenceRenderer:
    """Renders one seeded sequence frame by frame: (depth mm (H, W) float32, 36 joints xyz mm).

    With ``config.events`` the sequence also has context events (``draw_events``);
    ``last_occlusion`` is then the fraction of the hand's pixels (inside its crop box) that the last
    rendered frame lost to an occluder, a drop-out burst or the near limit.
    """
    def __init__(self, seed: int, config: SynthConfig = SynthConfig()):
        self.config = config
        self.rng = np.random.default_rng(seed)
        if config.hand == "mesh":
            shape_rng = np.random.default_rng([seed, 3])  # the hand's shape from a stream of its own
            self.hand = MeshHand(HandShape.draw(shape_rng, config.hand_scale))
            self.sleeve = bool(shape_rng.uniform() < config.sleeve)
        else:
            self.hand = HandModel(config.hand_scale * self.rng.uniform(0.9, 1.1))
        self.motion = GestureMotion(self.rng, config) if config.poses == "gestures" else MotionGenerator(self.rng, config)
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
        # the sensor family and its noise from streams of their own too
        sensor_rng = np.random.default_rng([seed, 4])
        self.sensor = str(sensor_rng.choice(FAMILIES)) if config.sensor == "mixed" else config.sensor
        self.sensor_rng = sensor_rng
        self.left = bool(np.random.default_rng([seed, 5]).uniform() < config.left_hands)

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
        vertices = None
        if isinstance(self.hand, MeshHand):
            joints, vertices = self.hand.pose(p["angles"] if "angles" in p else grasp_angles(p))
            centres, radii = self._forearm((joints[30] + joints[31]) / 2)
        else:
            joints, centres, radii = self.hand.pose(p)
        if self.left:  # a left hand: the right one mirrored across the hand frame's y-z plane
            joints, centres = joints * MIRROR, centres * MIRROR
            vertices = None if vertices is None else vertices * MIRROR
        rot = rotation(p["roll"], p["yaw"], p["pitch"])
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
            return apply_sensor(background, self.sensor, cam, self.sensor_rng), joints
        depth = render_depth(centres, radii, cam, background)
        if vertices is not None:
            render_mesh(vertices @ rot.T + p["translation"] + shift, self.hand.faces, cam, depth)
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
        if self.sensor != "basic":
            depth = apply_sensor(depth, self.sensor, cam, self.sensor_rng)
        return depth, joints

    def _forearm(self, wrist: np.ndarray) -> tuple:
        """The mesh hand's forearm (hand frame): a capsule from the wrist toward the elbow, thicker
        in a sleeve."""
        s = self.hand.scale
        r0, r1 = (34.0, 40.0) if self.sleeve else (24.0, 30.0)
        start = wrist + np.array([0.0, 12.0 if self.sleeve else 6.0, 4.0]) * s
        return capsule_spheres(start, wrist + np.array([0.0, 260.0, 20.0]) * s, r0 * s, r1 * s, spacing=0.9)

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


def write_synthetic_nyu(out_dir: str, frames_per_sequence: int = SYNTH_SPLITS[0], train_sequences: int = SYNTH_SPLITS[1],
                        test_sequences: int = SYNTH_SPLITS[2], seed: int = 0, config: SynthConfig = SynthConfig(),
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
    counts = {}
    splits = {name: seqs for name, seqs in (("train", range(train_sequences)),
                                            ("test", range(train_sequences, train_sequences + test_sequences)))
              if len(seqs)}
    workers = min(workers or os.cpu_count() or 1, max(train_sequences, test_sequences, 1))
    pool = None
    if workers > 1:
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
