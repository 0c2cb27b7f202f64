"""Each depth sensor family's artefact where it is expected, against hand-computed sizes."""
import numpy as np
import pytest

from keras_cadstn.camera import Camera
from keras_cadstn.config import SynthConfig
from keras_cadstn.data.sensors import (FAMILIES, apply_sensor, erode_silhouettes, flying_pixels, holes,
                                       projector_shadow, quantise_disparity)
from keras_cadstn.data.synthetic import SequenceRenderer
from keras_cadstn.errors import ConfigError

CAM = Camera(fx=480.0, fy=480.0, cx=160.0, cy=120.0, width=320, height=240)


def box_scene():
    """A box face at 500 mm (columns 100-199, rows 80-159) in front of a wall at 1000 mm."""
    depth = np.full((240, 320), 1000.0, np.float32)
    depth[80:160, 100:200] = 500.0
    return depth


def test_the_projector_shadow_lies_right_of_the_near_edge_as_wide_as_the_disparity_jump():
    out = projector_shadow(box_scene(), CAM, baseline_mm=75.0)
    width = 75.0 * 480.0 * (1 / 500 - 1 / 1000)  # 36 px
    assert width == 36.0
    row = out[120]
    assert np.all(row[200:236] == 0) and row[236] == 1000.0  # the wall right of the box, 36 px
    assert np.all(row[100:200] == 500.0) and np.all(row[:100] == 1000.0)  # the box and its left side lit
    np.testing.assert_array_equal(out[:80], box_scene()[:80])  # rows without an edge untouched


def test_quantised_disparity_makes_depth_steps_grow_with_distance_squared():
    for z, step in ((500.0, 500.0 ** 2 / (75 * 480 * 8)), (1000.0, 1000.0 ** 2 / (75 * 480 * 8))):
        ramp = np.linspace(z - 10, z + 10, 2001, dtype=np.float64)[None]
        levels = np.unique(quantise_disparity(ramp, CAM, 75.0, 8))
        assert np.median(np.diff(levels)) == pytest.approx(step, rel=0.02)  # 0.87 mm at 0.5 m, 3.5 mm at 1 m
    assert quantise_disparity(np.zeros((1, 3)), CAM)[0, 0] == 0  # no reading stays none


def test_eroded_silhouettes_lose_only_edge_pixels_and_flying_pixels_lie_between_the_surfaces():
    rng = np.random.default_rng(0)
    eroded = erode_silhouettes(box_scene(), rng, 1.0)
    lost = (eroded == 0)
    assert lost[80, 150] and lost[159, 150] and lost[120, 100] and lost[120, 199]  # the box's four edges
    assert lost.sum() == 2 * 100 + 2 * 80 - 4  # the ring of edge pixels: the four corners lie on two edges each
    assert not lost[120, 150] and not lost[120, 50]  # inside the box, the wall
    flying = flying_pixels(box_scene(), np.random.default_rng(1), 1.0)
    between = (flying > 500.0) & (flying < 1000.0)
    assert between[120, 200] and between[120, 99]  # the far pixel beside each vertical edge
    assert between.sum() == 2 * 80  # nowhere else
    assert (holes(box_scene(), np.random.default_rng(2), 3, (5.0, 5.0)) == 0).sum() >= 3 * 69  # pi 5^2 ~ 69 px each


def test_each_family_in_the_generator():
    with pytest.raises(ConfigError, match="sensor must be one of"):
        SynthConfig(sensor="kinect2")
    with pytest.raises(ConfigError, match="sensor must be one of"):
        apply_sensor(box_scene(), "kinect2", CAM, np.random.default_rng(0))
    # the SR300 family loses everything beyond its range: the wall at 1.3-1.9 m reads nothing
    depth, _ = SequenceRenderer(3, SynthConfig(sensor="sr300")).render(0)
    assert depth[5, 5] == 0 and (depth > 1300).sum() == 0 and (depth > 0).sum() > 1000
    basic, _ = SequenceRenderer(3, SynthConfig()).render(0)
    assert basic[5, 5] > 1200
    seen = {SequenceRenderer(seed, SynthConfig(sensor="mixed")).sensor for seed in range(12)}
    assert seen == set(FAMILIES)
    a, b = (SequenceRenderer(7, SynthConfig(sensor="mixed")).render(4)[0] for _ in range(2))
    np.testing.assert_array_equal(a, b)  # seeded


def test_scenes_put_the_person_where_they_say():
    from keras_cadstn.config import SCENES
    from keras_cadstn.data.synthetic_scene import Person
    default = Person.draw(np.random.default_rng(4), SynthConfig(person=True))
    again = Person.draw(np.random.default_rng(4), SynthConfig(person=True, scenes=(1.0, 0.0, 0.0, 0.0)))
    assert default.kind == "behind" and default.behind == again.behind  # the default draws as it always did
    for k, kind in enumerate(SCENES[1:], start=1):
        weights = tuple(float(i == k) for i in range(len(SCENES)))
        person = Person.draw(np.random.default_rng(4), SynthConfig(person=True, scenes=weights))
        assert person.kind == kind
        if kind == "beside_head":  # at the body's depth, beside the head (radius 95 mm), at its height
            assert -40 <= person.behind <= 60 and 200 <= abs(person.offset[0]) <= 260 and 330 <= person.offset[1] <= 410
        elif kind == "touching_torso":
            assert -10 <= person.behind <= 25 and 80 <= person.offset[1] <= 200
    with pytest.raises(ConfigError, match="scenes"):
        SynthConfig(scenes=(1.0, 0.0))


def test_a_workdir_keeps_its_synthetic_world(tmp_path):
    from keras_cadstn.config import DemoConfig
    from keras_cadstn.demo import _check_world
    _check_world(DemoConfig(workdir=str(tmp_path / "a"), hand="mesh"))
    _check_world(DemoConfig(workdir=str(tmp_path / "a"), hand="mesh"))  # the same world again: fine
    with pytest.raises(ConfigError, match="was made with the synthetic world"):
        _check_world(DemoConfig(workdir=str(tmp_path / "a")))
    (tmp_path / "b" / "synthetic_nyu").mkdir(parents=True)  # made before the world was recorded: spheres
    with pytest.raises(ConfigError, match="use another --workdir"):
        _check_world(DemoConfig(workdir=str(tmp_path / "b"), sensor="mixed"))
