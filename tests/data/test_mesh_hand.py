"""The skinned mesh hand, its rasteriser and its poses, against hand-computed values."""
import numpy as np
import pytest

from keras_cadstn.camera import Camera
from keras_cadstn.config import SynthConfig
from keras_cadstn.data.gestures import GESTURES, GestureMotion, grasp_angles
from keras_cadstn.data.mesh_hand import DOFS, LIMITS, HandShape, MeshHand
from keras_cadstn.data.raster import render_mesh
from keras_cadstn.data.synthetic import SequenceRenderer
from keras_cadstn.data.synthetic_hand import rotation
from keras_cadstn.errors import ConfigError

CAM = Camera(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
NYU = {"index_tip": 18, "index_pip": 21, "index_mcp": 23, "thumb_tip": 24, "palm": 32}


def empty():
    return np.full((CAM.height, CAM.width), np.inf, np.float32)


def test_rasteriser_gives_a_tilted_plane_its_exact_depth():
    # the plane z = 500 + 0.5 x; the ray through pixel u meets it at z = 500 / (1 - 0.5 (u - cx) / fx)
    square = np.array([[-100, -100, 450], [100, -100, 550], [100, 100, 550], [-100, 100, 450]], float)
    depth = render_mesh(square, np.array([[0, 1, 2], [0, 2, 3]]), CAM, empty())
    for u in (300, 320, 330, 380):
        assert depth[240, u] == pytest.approx(500 / (1 - 0.5 * (u - 320) / 500), rel=1e-5)
    assert np.isinf(depth[240, 100])  # outside the square (its edge is at u = 320 - 100 * 500 / 450)


def icosphere(radius, level=3):
    t = (1 + 5 ** 0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(level):
        cache, faces = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = faces
    return np.array(v) * radius, np.array(f)


def test_rasteriser_gives_a_sphere_its_near_surface_and_the_nearer_surface_wins():
    vertices, faces = icosphere(50.0)
    depth = render_mesh(vertices + [0, 0, 600], faces, CAM, empty())
    # the centre's ray meets the sphere at 550 mm; facets lie inside it by at most r (1 - cos(edge/2))
    assert 550.0 <= depth[240, 320] <= 551.0
    # a pixel 20 px off the centre: the ray (u/f, 0, 1) meets |p - (0, 0, 600)| = 50 at the root below
    a = 1 + (20 / 500) ** 2
    near = (1200 - np.sqrt(1200 ** 2 - 4 * a * (600 ** 2 - 50 ** 2))) / (2 * a)
    assert near <= depth[240, 340] <= near + 1.5
    render_mesh(vertices * 0.2 + [0, 0, 520], faces, CAM, depth)  # a small sphere in front of it
    assert depth[240, 320] == pytest.approx(510.0, abs=0.5)
    behind = np.array([[0, 0, -10.0], [50, 0, 500.0], [0, 50, 500.0]])
    assert np.isinf(render_mesh(behind, np.array([[0, 1, 2]]), CAM, empty())).all()  # behind the camera: left out


def test_a_bent_finger_turns_about_its_knuckle_by_the_given_angle():
    hand = MeshHand()
    rest, _ = hand.pose(np.zeros(len(DOFS)))
    angles = np.zeros(len(DOFS))
    angles[DOFS.index("index_mcp")] = np.radians(90)
    bent, _ = hand.pose(angles)
    mcp = rest[NYU["index_mcp"]]
    np.testing.assert_allclose(bent[NYU["index_mcp"]], mcp, atol=1e-9)  # the pivot stays
    axis = -hand.axes[hand.index["index-finger-phalanx-proximal"]][:, 0]  # flexion: about the joint's -x
    for joint in ("index_pip", "index_tip"):
        v, w = rest[NYU[joint]] - mcp, bent[NYU[joint]] - mcp
        # a quarter turn about the axis: same length, same component along it, v . w = (v . a)^2
        assert np.linalg.norm(w) == pytest.approx(np.linalg.norm(v))
        assert w @ axis == pytest.approx(v @ axis, abs=1e-9)
        assert v @ w == pytest.approx((v @ axis) ** 2, abs=1e-9 * (v @ v))
        assert np.cross(v, w) @ axis == pytest.approx(np.linalg.norm(v) ** 2 - (v @ axis) ** 2)  # the right way
    assert bent[NYU["index_tip"], 2] < rest[NYU["index_tip"], 2] - 50  # toward the palm's side (-z)
    np.testing.assert_allclose(bent[NYU["thumb_tip"]], rest[NYU["thumb_tip"]])  # the other fingers stay


def test_the_skin_follows_its_joints():
    hand = MeshHand()
    zero = np.zeros(len(DOFS))
    _, vertices = hand.pose(zero)
    np.testing.assert_allclose(vertices, hand.rest_vertices, atol=1e-9)
    angles = GESTURES["fist"]
    joints, posed = hand.pose(angles)
    rot, trans = hand.transforms(angles)
    j = hand.index["index-finger-phalanx-distal"]
    rigid = np.nonzero((hand.skin_joints[:, 0] == j) & (hand.skin_weights[:, 0] > 0.999))[0]
    assert len(rigid) > 10
    np.testing.assert_allclose(posed[rigid], hand.rest_vertices[rigid] @ rot[j].T + trans[j], atol=1e-6)


def test_a_rotated_wrist_turns_every_joint_about_the_palm():
    joints, _ = MeshHand().pose(GESTURES["point"])
    turned = joints @ rotation(np.pi / 2, 0.0, 0.0).T  # the renderer's roll by a quarter turn
    np.testing.assert_allclose(np.linalg.norm(turned, axis=1), np.linalg.norm(joints, axis=1))
    np.testing.assert_allclose(turned[:, 2], joints[:, 2], atol=1e-9)  # in the image plane: depth unchanged
    # in-plane: (x, y) -> (x cos - y sin, x sin + y cos) at 90 degrees = (-y, x)
    np.testing.assert_allclose(turned[:, :2], np.stack([-joints[:, 1], joints[:, 0]], 1), atol=1e-9)


def test_shape_scales_fingers_from_their_knuckles():
    rest, _ = MeshHand().pose(np.zeros(len(DOFS)))
    long, _ = MeshHand(HandShape(finger_lengths=(1.0, 1.1, 1.0, 1.0, 1.0))).pose(np.zeros(len(DOFS)))
    before = np.linalg.norm(rest[NYU["index_tip"]] - rest[NYU["index_mcp"]])
    after = np.linalg.norm(long[NYU["index_tip"]] - long[NYU["index_mcp"]])
    assert after == pytest.approx(1.1 * before)
    np.testing.assert_allclose(long[NYU["thumb_tip"]], rest[NYU["thumb_tip"]])


def test_gestures_and_their_motion_stay_within_the_joint_limits_and_turn_the_hand_every_way():
    for name, angles in GESTURES.items():
        assert np.all(angles >= LIMITS[:, 0] - 1e-9) and np.all(angles <= LIMITS[:, 1] + 1e-9), name
    rolls, yaws = [], []
    for seed in range(40):
        motion = GestureMotion(np.random.default_rng(seed), SynthConfig(hand="mesh", poses="gestures"))
        for frame in (0, 37, 200):
            p = motion.params(frame)
            assert np.all(p["angles"] >= LIMITS[:, 0]) and np.all(p["angles"] <= LIMITS[:, 1])
        rolls.append(motion.roll)
        yaws.append(motion.yaw)
    assert min(rolls) < -2.0 and max(rolls) > 2.0  # any in-plane rotation
    assert {0.0, np.pi}.issubset(set(yaws)) and any(abs(y) == np.pi / 2 for y in yaws)  # palm, back, side
    grasp = grasp_angles({"flex": [1, 1, 1, 1], "spread": 0.0, "thumb_flex": 1.0, "thumb_abduction": 0.0})
    assert grasp[DOFS.index("index_mcp")] == pytest.approx(np.radians(85))


def test_mesh_scenes_render_the_hand_where_its_labels_are():
    cfg = SynthConfig(hand="mesh", poses="gestures", person=True)
    a, b = SequenceRenderer(5, cfg), SequenceRenderer(5, cfg)
    for frame in (0, 30):
        depth, joints = a.render(frame)
        again, _ = b.render(frame)
        np.testing.assert_array_equal(depth, again)  # seeded
        uvd = cfg.camera.xyz_to_uvd(joints)
        assert np.all((uvd[:, 0] >= 0) & (uvd[:, 0] < 640) & (uvd[:, 1] >= 0) & (uvd[:, 1] < 480))
        u, v, d = np.round(uvd[32]).astype(int)
        window = depth[v - 3:v + 4, u - 3:u + 4]
        seen = window[window > 0]
        # the palm's joint lies inside the hand: the surface seen there is a little in front of it
        assert seen.size and abs(np.median(seen) - uvd[32, 2]) < 60
    with pytest.raises(ConfigError, match="needs hand='mesh'"):
        SynthConfig(poses="gestures")


def test_a_left_hand_is_the_right_one_mirrored():
    right = SequenceRenderer(2, SynthConfig(hand="mesh", poses="gestures"))
    left = SequenceRenderer(2, SynthConfig(hand="mesh", poses="gestures", left_hands=1.0))
    assert left.left and not right.left
    p = right.motion.params(0)
    _, r = right.render(0)
    _, m = left.render(0)
    # the same pose mirrored before the hand is turned and placed: palm-relative joints mirror through
    # the turned hand frame, so their distances to the palm stay and the thumb swaps sides
    np.testing.assert_allclose(np.linalg.norm(m - m[32], axis=1), np.linalg.norm(r - r[32], axis=1), atol=1e-6)
    rot = rotation(p["roll"], p["yaw"], p["pitch"])
    r_hand, m_hand = (r - r[32]) @ rot, (m - m[32]) @ rot  # back in the hand frame
    np.testing.assert_allclose(m_hand[:, 0], -r_hand[:, 0], atol=1e-6)
    np.testing.assert_allclose(m_hand[:, 1:], r_hand[:, 1:], atol=1e-6)
