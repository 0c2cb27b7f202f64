import hashlib

import numpy as np
import pytest

from keras_cadstn.camera import NYU_CAMERA
from keras_cadstn.config import SynthConfig
from keras_cadstn.errors import ConfigError
from keras_cadstn.data import nyu
from keras_cadstn.data.synthetic import SequenceRenderer, write_synthetic_nyu
from keras_cadstn.data.synthetic_hand import FINGERS, SPREAD_WIDE, HandModel, MotionGenerator
from keras_cadstn.data.synthetic_scene import render_ellipsoid


@pytest.mark.slow
def test_deterministic_for_a_seed_in_one_process_or_several(tmp_path):
    for name, workers in (("a", 1), ("b", 2)):
        write_synthetic_nyu(str(tmp_path / name), frames_per_sequence=3, train_sequences=2,
                            test_sequences=1, seed=5, progress=False, workers=workers)
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    for i in range(6):
        assert digest(nyu.depth_path(str(tmp_path / "a" / "train"), i)) == \
            digest(nyu.depth_path(str(tmp_path / "b" / "train"), i))
    for name in ("occlusion.txt", "sequence_starts.txt"):
        assert digest(str(tmp_path / "a" / "train" / name)) == digest(str(tmp_path / "b" / "train" / name))
    # joint_data.mat's header carries its creation time: compare the labels it holds
    a, b = (nyu.load_nyu(str(tmp_path / name), "train") for name in ("a", "b"))
    np.testing.assert_array_equal([f.joints_uvd for f in a.frames], [f.joints_uvd for f in b.frames])
    d0 = nyu.read_depth(nyu.depth_path(str(tmp_path / "a" / "train"), 0))
    d1 = nyu.read_depth(nyu.depth_path(str(tmp_path / "a" / "test"), 0))
    assert not np.array_equal(d0, d1)  # other sequences move differently


@pytest.mark.slow
def test_nyu_importer_reads_synthetic_and_joints_lie_on_the_hand(synth_root):
    split = nyu.load_nyu(synth_root, "train")
    assert len(split) == 80 and split.num_sequences == 2
    hits = total = 0
    for f in split.frames[::7]:
        depth = nyu.read_depth(f.path)
        for (u, v, d) in f.joints_uvd:
            patch = depth[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3]
            hand = patch[(patch > 0) & (patch < 1200)]
            total += 1
            # a joint lies on the bone's axis: the visible surface within a finger's radius in front
            # of it (or an occluding finger, closer still)
            hits += bool(hand.size and hand.min() <= d + 5 and hand.min() > d - 120)
    assert hits / total > 0.9, (hits, total)


def test_motion_is_smooth_and_within_range():
    r = SequenceRenderer(seed=11)
    palms = np.array([r.render(t)[1][32] for t in range(30)])
    steps = np.linalg.norm(np.diff(palms, axis=0), axis=1)
    assert steps.max() < 25.0  # mm per frame at 30 fps
    assert (palms[:, 2] > 400).all() and (palms[:, 2] < 800).all()
    uvd = NYU_CAMERA.xyz_to_uvd(palms)
    assert ((uvd[:, 0] > 0) & (uvd[:, 0] < 640) & (uvd[:, 1] > 0) & (uvd[:, 1] < 480)).all()


def test_grasp_wide_spreads_the_grasp_from_open_to_closed():
    """'grasp_wide': g = clip(0.5 + 0.8 s) of the same grasp signal s where 'grasp' has 0.5 + 0.5 s, so
    its hands are fully open (g < 0.1) far more often; the other parameters are the same."""
    open_share = {}
    for poses in ("grasp", "grasp_wide"):
        g = []
        for seed in range(20):
            m = MotionGenerator(np.random.default_rng(seed), SynthConfig(poses=poses))
            for frame in range(0, 160, 4):
                s = m._signal("grasp", frame / 30.0)
                p = m.params(frame)
                expected = 0.5 + 0.5 * s if poses == "grasp" else min(max(0.5 + 0.8 * s, 0.0), 1.0)
                # thumb flex = g + 0.3 * its wave: g recovered by hand
                assert p["thumb_flex"] - 0.3 * m._signal("wave4", frame / 30.0) == pytest.approx(expected)
                assert p["thumb_abduction"] == pytest.approx(0.5 + 0.5 * m._signal("thumb_abduction", frame / 30.0))
                g.append(expected)
        open_share[poses] = np.mean(np.asarray(g) < 0.1)
    assert open_share["grasp"] < 0.06 and open_share["grasp_wide"] > 0.09


def test_grasp_spread_fans_each_finger_up_to_its_own_limit():
    """'grasp_spread': finger k's spread is SPREAD_WIDE[k] (1 - g) clip(fan + 0.3 w_k) with the fan
    stretched like g; the posed finger's direction in the palm plane shows that angle (hand-computed
    from its MCP and PIP joints, flexion bends it only towards the camera). 'grasp_wide' draws the
    same motion as before: its parameters have no per-finger spread and match a fresh generator."""
    spread_max = []
    for seed in range(10):
        m = MotionGenerator(np.random.default_rng(seed), SynthConfig(poses="grasp_spread"))
        wide = MotionGenerator(np.random.default_rng(seed), SynthConfig(poses="grasp_wide"))
        for frame in range(0, 160, 8):
            t, p = frame / 30.0, m.params(frame)
            g = min(max(0.5 + 0.8 * m._signal("grasp", t), 0.0), 1.0)
            fan = min(max(0.5 + 0.8 * m._signal("spread", t), 0.0), 1.0)
            for k, finger in enumerate(FINGERS):
                w = min(max(fan + 0.3 * m._signal(f"spread{k}", t), 0.0), 1.0)
                assert p["spread_deg"][k] == pytest.approx(SPREAD_WIDE[finger] * (1 - g) * w)
            joints, _, _ = HandModel().pose(p)
            for k in range(4):
                mcp, pip = joints[6 * k + 5], joints[6 * k + 3]  # NYU order: tip, .., PIP, .., MCP
                d = pip - mcp
                # the palm frame's "up" is -y; spread turns the finger towards +x
                assert np.degrees(np.arctan2(d[0], -d[1])) == pytest.approx(p["spread_deg"][k], abs=1e-6)
            spread_max.append(max(abs(a) for a in p["spread_deg"]))
            assert "spread_deg" not in wide.params(frame)
    assert max(spread_max) > 25  # the little finger reaches past the old fan's 14 degrees
    with pytest.raises(ConfigError, match="needs hand='spheres'"):
        SynthConfig(hand="mesh", poses="grasp_spread")


def test_a_person_behind_the_hand():
    """person=True: the same hand (its own random stream), a body 150-400 mm behind the palm, and the
    scene without the hand for "no hand" checks."""
    checked = 0
    for seed in range(20):
        alone, scene = SequenceRenderer(seed, SynthConfig()), SequenceRenderer(seed, SynthConfig(person=True))
        person = scene.person
        assert person is not None and 150.0 <= person.behind <= 400.0
        if person.furniture is not None or person.raised:
            continue  # an object or the raised arm may come nearer than the torso
        for t in (0, 30):
            _, joints = alone.render(t)
            depth, joints_p = scene.render(t)
            np.testing.assert_allclose(joints_p, joints)
            palm = joints[32]
            empty, _ = scene.render(t, hand=False)
            body = empty[empty < 1200]
            assert body.size > 20000  # torso, head and arms fill a good part of the image
            assert body.min() >= palm[2] + 150.0 - 1.0 and np.percentile(body, 1) <= palm[2] + 400.0 + 60.0
            u, v, _ = NYU_CAMERA.xyz_to_uvd(palm)
            assert depth[int(v), int(u)] < palm[2] + 50.0  # the hand in front of it
        checked += 1
    assert checked >= 3


def test_ellipsoid_rendered_in_its_box_equals_every_pixel_solved():
    """render_ellipsoid computes only inside the projection of the ellipsoid's bounding box; every
    pixel solved on its own (ray t*(x, y, 1) against the ellipsoid) must give the same image,
    also for an ellipsoid cut by the image border and one reaching behind the camera."""
    cam = NYU_CAMERA
    vv, uu = np.mgrid[0:cam.height, 0:cam.width]
    x, y = (uu - cam.cx) / cam.fx, (vv - cam.cy) / cam.fy
    for centre, axes in (([30.0, 250.0, 1100.0], [170.0, 260.0, 110.0]),  # the torso, bottom cut off
                         ([-600.0, 0.0, 900.0], [300.0, 100.0, 80.0]),  # mostly left of the image
                         ([40.0, 0.0, 90.0], [30.0, 30.0, 100.0])):  # box reaching behind the camera: whole frame
        got = render_ellipsoid(centre, np.array(axes), cam, np.full((cam.height, cam.width), 5000.0, np.float32))
        # |t r / s - c / s|^2 = 1 with r = (x, y, 1): a quadratic in t, the nearest positive root
        c, s = np.asarray(centre), np.asarray(axes)
        a = [x / s[0], y / s[1], np.full_like(x, 1.0 / s[2])]
        qa = sum(ai * ai for ai in a)
        qb = -2.0 * sum(ai * ci for ai, ci in zip(a, c / s))
        qc = float(((c / s) ** 2).sum() - 1.0)
        disc = qb * qb - 4 * qa * qc
        t = np.where(disc >= 0, (-qb - np.sqrt(np.maximum(disc, 0.0))) / (2 * qa), np.inf)
        want = np.minimum(5000.0, np.where(t > 0, t, np.inf)).astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert (got < 5000.0).sum() > 100  # the ellipsoid is in view
