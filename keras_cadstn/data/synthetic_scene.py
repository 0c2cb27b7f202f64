"""What surrounds the synthetic hand and how a sensor sees it: sphere and ellipsoid rendering into a depth
image, the person behind the hand, sensor noise and drop-outs."""
from __future__ import annotations

import dataclasses

import numpy as np

from keras_cadstn.camera import Camera
from keras_cadstn.config import SCENES, SynthConfig
from keras_cadstn.data.synthetic_hand import capsule_spheres


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
    kind: str = "behind"  # one of config.SCENES

    @classmethod
    def draw(cls, rng: np.random.Generator, config: SynthConfig) -> "Person":
        furniture = None
        if rng.random() < config.furniture:
            furniture = (rng.uniform(-120.0, 40.0), rng.choice([-1.0, 1.0]) * rng.uniform(200.0, 320.0),
                         rng.uniform(150.0, 350.0), rng.uniform(150.0, 400.0))
        person = cls(rng.uniform(*config.person_behind_mm), np.array([rng.uniform(-80, 80), rng.uniform(180, 300)]),
                     rng.choice([-1.0, 1.0]), bool(rng.random() < config.other_arm_raised), furniture)
        if config.scenes == (1.0, 0.0, 0.0, 0.0):
            return person  # drawn as before the other scenes existed: the same person for the same seed
        kind = SCENES[int(rng.choice(len(SCENES), p=np.asarray(config.scenes) / sum(config.scenes)))]
        if kind == "beside_head":  # the hand raised beside the head, at the body's depth
            behind, offset = rng.uniform(-40, 60), [person.side * -rng.uniform(200, 260), rng.uniform(330, 410)]
        elif kind == "in_front_of_face":
            behind, offset = rng.uniform(60, 200), [rng.uniform(-30, 30), rng.uniform(340, 400)]
        elif kind == "touching_torso":
            behind, offset = rng.uniform(-10, 25), [rng.uniform(-60, 60), rng.uniform(80, 200)]
        else:
            return person
        return dataclasses.replace(person, behind=behind, offset=np.array(offset), kind=kind)

    def scene(self, palm: np.ndarray, elbow: np.ndarray | None, camera: Camera, wall: np.ndarray) -> np.ndarray:
        """The depth (mm) behind and beside the hand: wall, torso, head, arms, furniture.
        ``elbow``: where the hand's forearm ends (None: no hand in view; both arms hang)."""
        depth = wall.copy()
        torso_depth = 110.0
        x = self.offset[0] + (palm[0] if self.kind != "behind" else 0.0)  # the other scenes sit relative to the hand
        torso = np.array([x, palm[1] + self.offset[1], palm[2] + self.behind + torso_depth])
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
