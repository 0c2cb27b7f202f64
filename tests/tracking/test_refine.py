"""The learned hand-centre refiner: its arithmetic, its training crops, that it learns, and that the
tracker and the bundle use it."""
import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import TINY_REFINER

from keras_cadstn.camera import NYU_CAMERA
from keras_cadstn.config import RefinerConfig, TrainConfig
from keras_cadstn.data.nyu import load_nyu
from keras_cadstn.data.preprocessing import hand_center
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.models import build_centre_refiner
from keras_cadstn.models.bundle import SPEC_FILE, load_bundle, save_bundle
from keras_cadstn.tracking.localiser import HandLocaliser
from keras_cadstn.tracking.refiner import move_centre, refine_centre
from keras_cadstn.tracking.tracker import HandTracker
from keras_cadstn.training.refiner import centre_error_mm, make_examples, train_refiner, training_centres

CUBE = np.array([300.0, 300.0, 300.0])


def test_move_centre_is_the_offset_times_half_the_cube_in_camera_mm():
    centre = np.array([320.0, 240.0, 600.0])
    xyz = NYU_CAMERA.uvd_to_xyz(centre)
    moved = move_centre(centre, [0.1, -0.2, 0.05], CUBE, NYU_CAMERA)
    np.testing.assert_allclose(NYU_CAMERA.uvd_to_xyz(moved), xyz + [15.0, -30.0, 7.5], atol=1e-9)
    # by hand at 607.5 mm depth: u = cx + fx * x / z
    x = xyz[0] + 15.0
    assert moved[0] == pytest.approx(NYU_CAMERA.cx + NYU_CAMERA.fx * x / 607.5)


def test_refine_centre_applies_the_refiner_iterations_times():
    depth = np.full((480, 640), 600.0)
    seen = []

    def refiner(crop):
        seen.append(crop.shape)
        return np.array([[0.1, 0.0, 0.0]], np.float32)

    config = RefinerConfig(image_size=16, filters=(4, 8), iterations=3)
    start = np.array([300.0, 200.0, 600.0])
    out = refine_centre(refiner, depth, start, CUBE, NYU_CAMERA, config)
    assert seen == [(1, 16, 16, 1)] * 3
    np.testing.assert_allclose(NYU_CAMERA.uvd_to_xyz(out), NYU_CAMERA.uvd_to_xyz(start) + [45.0, 0, 0], atol=1e-6)
    # a step that would put the centre behind the camera is not taken
    back = refine_centre(lambda crop: np.array([[0.0, 0.0, -10.0]]), depth, start, CUBE, NYU_CAMERA, config)
    np.testing.assert_array_equal(back, start)


def test_reference_joint_kept_inside_the_hand_hand_computed():
    from keras_cadstn.tracking.refiner import SURFACE_WINDOW_PX, keep_inside_hand, surface_depth
    depth = np.zeros((480, 640))
    depth[:, :] = 1500.0  # a wall far behind: not the surface at a point near 600 mm
    r = SURFACE_WINDOW_PX
    depth[200 - r:200 + r + 1, 300 - r:300 + r + 1] = 600.0  # the palm's surface
    depth[200 - r, 300 - r:300 + r + 1] = 0.0  # a row without readings
    depth[200 + r, 300 - r:300 - r + 4] = 580.0  # a few nearer pixels: the median ignores them
    assert surface_depth(depth, [300.0, 200.0, 630.0], 150.0) == 600.0
    assert surface_depth(np.zeros((480, 640)), [300.0, 200.0, 630.0], 150.0) is None
    assert RefinerConfig().max_behind_surface_mm is None  # off unless asked for
    config = RefinerConfig(max_behind_surface_mm=20.0)  # 20 mm at most, put 14 mm behind
    np.testing.assert_array_equal(keep_inside_hand(depth, np.array([300.4, 199.6, 630.0]), CUBE, config),
                                  [300.4, 199.6, 614.0])
    inside = np.array([300.0, 200.0, 619.0])  # 19 mm behind: kept
    np.testing.assert_array_equal(keep_inside_hand(depth, inside, CUBE, config), inside)
    deep = np.array([300.0, 200.0, 700.0])
    np.testing.assert_array_equal(keep_inside_hand(depth, deep, CUBE, RefinerConfig()), deep)
    np.testing.assert_array_equal(keep_inside_hand(np.zeros((480, 640)), deep, CUBE, config), deep)
    # every pass of refine_centre is checked: a refiner that pushes 60 mm deeper each time ends
    # 14 mm behind the surface; the pixel moves towards the principal point as x, y stay while z
    # grows (600 -> 660, then 614 -> 674)
    push = refine_centre(lambda crop: np.array([[0.0, 0.0, 60.0 / 150.0]]), depth, np.array([300.0, 200.0, 600.0]),
                         CUBE, NYU_CAMERA, config)
    cam = NYU_CAMERA
    u = cam.cx + (cam.cx + (300.0 - cam.cx) * 600.0 / 660.0 - cam.cx) * 614.0 / 674.0
    v = cam.cy + (200.0 - cam.cy) * 600.0 / 660.0 * 614.0 / 674.0
    np.testing.assert_allclose(push, [u, v, 614.0], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="max_behind_surface_mm"):
        RefinerConfig(max_behind_surface_mm=10.0, behind_surface_mm=14.0)


@pytest.fixture(scope="module")
def train_split(synth_root):
    return load_nyu(synth_root, "train")


def test_training_centres_lie_around_the_reference_joint(train_split):
    spec, frame = train_split.spec, train_split.frames[5]
    depth = spec.camera.to_mm(train_split.read_depth(frame.path))
    ref = frame.joints_uvd[spec.reference_joint]
    config = RefinerConfig(perturb_mm=30.0, max_offset_mm=60.0, samples_per_frame=50)
    localiser = HandLocaliser()
    centres = training_centres(depth, ref, CUBE, spec.camera, config, np.random.default_rng(0), localiser)
    assert len(centres) == 50
    dist = np.linalg.norm(spec.camera.uvd_to_xyz(np.asarray(centres)) - spec.camera.uvd_to_xyz(ref), axis=1)
    assert dist.max() <= 60.0 + 1e-6 and dist.min() > 0.0
    assert 30.0 < np.median(dist) < 60.0  # a 3-D normal of sd 30 mm: median distance ~46 mm
    detected = localiser.detect(depth, CUBE, spec.camera)  # the localiser's own centre comes first
    np.testing.assert_allclose(centres[0], detected)


def test_examples_hold_the_offset_to_the_reference_joint(train_split):
    config = RefinerConfig(image_size=16, filters=(4, 8), samples_per_frame=2, max_offset_mm=80.0)
    crops, offsets = make_examples(train_split, config, seed=0, progress=False)
    assert crops.shape == (2 * len(train_split), 16, 16, 1) and crops.dtype == np.float16
    assert offsets.shape == (2 * len(train_split), 3)
    mm = np.linalg.norm(offsets * 150.0, axis=1)
    assert mm.max() <= 80.0 + 1e-3 and np.median(mm) > 10.0
    assert np.all(np.abs(crops) <= 1.0) and np.any(crops < 1.0, axis=(1, 2, 3)).mean() > 0.9  # hands in view


def test_examples_of_several_splits_follow_one_another(synth_root, train_split, tmp_path):
    """A list of splits (e.g. a data set's frames and scenes with a person behind the hand): the
    first split's crops are those it gives alone, the second's follow, whatever the number of
    threads; the cache is remade when the list changes, and read back when it does not."""
    from keras_cadstn.training.refiner import cached_examples
    config = RefinerConfig(image_size=16, filters=(4, 8), samples_per_frame=2)
    first = dataclasses.replace(train_split, frames=train_split.frames[:6])
    second = load_nyu(synth_root, "test")
    second = dataclasses.replace(second, frames=second.frames[:4])
    alone, alone_offsets = make_examples(first, config, seed=3, progress=False)
    both, both_offsets = make_examples([first, second], config, seed=3, progress=False)
    one_thread = make_examples([first, second], config, seed=3, progress=False, workers=1)
    np.testing.assert_array_equal(one_thread[0], both)  # threads change the speed, not the crops
    np.testing.assert_array_equal(one_thread[1], both_offsets)
    assert len(both) == 2 * (6 + 4)
    np.testing.assert_array_equal(both[:12], alone)
    np.testing.assert_array_equal(both_offsets[:12], alone_offsets)
    # the second split's first crop: its frame's reference joint minus a centre within max_offset_mm
    mm = np.linalg.norm(both_offsets[12:] * 150.0, axis=1)
    assert mm.max() <= config.max_offset_mm + 1e-3
    path = str(tmp_path / "examples.npz")
    np.testing.assert_array_equal(cached_examples(path, first, config, 3, progress=False)[0], alone)
    np.testing.assert_array_equal(cached_examples(path, [first, second], config, 3, progress=False)[0], both)
    os.utime(path, (0, 0))  # read back, not remade: the file is left untouched
    np.testing.assert_array_equal(cached_examples(path, [first, second], config, 3, progress=False)[0], both)
    assert os.path.getmtime(path) == 0
    with pytest.raises(DataError, match="train, test: no frames"):
        make_examples([dataclasses.replace(first, frames=[]), dataclasses.replace(second, frames=[])], config,
                      progress=False)


def test_a_corrupt_frame_stops_the_crops_with_its_name(train_split, tmp_path):
    bad = tmp_path / "depth_1_0000004.png"
    bad.write_bytes(b"not a png at all")
    frames = list(train_split.frames)
    frames[3] = dataclasses.replace(frames[3], path=str(bad))
    with pytest.raises(DataError, match=r"depth_1_0000004.png: not a PNG file"):
        make_examples(dataclasses.replace(train_split, frames=frames), RefinerConfig(image_size=16), progress=False)


@pytest.mark.slow
def test_the_refiner_learns_to_move_centres_to_the_reference_joint(synth_root, train_split, tmp_path):
    config = RefinerConfig(image_size=32, perturb_mm=30.0, samples_per_frame=4)
    cfg = TrainConfig(steps={"refine": 400}, batch_size=32, learning_rate=1e-3, schedule="cosine",
                      checkpoint_every=200, verbose=0)
    refiner = train_refiner(train_split, str(tmp_path), config, cfg, progress=False)
    test = load_nyu(synth_root, "test")
    errors = centre_error_mm(refiner, test, config)
    assert errors["after"]["median"] < 0.6 * errors["before"]["median"], errors
    # a finished stage is loaded, not trained again
    again = train_refiner(train_split, str(tmp_path), config, cfg, progress=False)
    for a, b in zip(again.get_weights(), refiner.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(again.optimizer.iterations.numpy()) == 400


def constant_refiner(config, offset):
    """A refiner whose output is ``offset`` whatever it sees (zero weights, bias = offset)."""
    model = build_centre_refiner(config)
    last = model.get_layer("offset")
    last.set_weights([np.zeros_like(last.get_weights()[0]), np.asarray(offset, np.float32)])
    return model


@pytest.mark.slow
def test_the_tracker_moves_the_localisers_centre_by_the_refiner(tiny_bundle, tmp_path):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    config = RefinerConfig(**TINY_REFINER, iterations=2)
    path = save_bundle(str(tmp_path / "b"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config,
                       constant_refiner(config, [0.05, -0.04, 0.0]), config)
    bundle = load_bundle(path)
    depth, _ = SequenceRenderer(4, SynthConfig()).render(0)
    cube = np.asarray(bundle.spec.cube, np.float64)
    found, _ = HandLocaliser().track(depth, None, cube, NYU_CAMERA)
    moved = move_centre(move_centre(found, [0.05, -0.04, 0.0], cube, NYU_CAMERA), [0.05, -0.04, 0.0], cube, NYU_CAMERA)
    # then the training pre-processing's centre of mass, both passes on every 2nd pixel (centre_step)
    expected = hand_center(depth, moved, cube, NYU_CAMERA, coarse_step=2, final_step=2)

    result = HandTracker(bundle, refine=True).update(depth)
    np.testing.assert_allclose(result.center_uvd, expected, atol=1e-4)
    plain = HandTracker(bundle, refine=False).update(depth)
    np.testing.assert_allclose(plain.center_uvd, found)
    given = HandTracker(bundle, refine=True).update(depth, center_uvd=moved)  # a given centre is not refined
    np.testing.assert_allclose(given.center_uvd, hand_center(depth, moved, cube, NYU_CAMERA))  # at full resolution
    # by default the refiner runs only where its config says it helps on real frames
    assert HandTracker(bundle).refiner is None
    trusted = bundle.with_refiner_settings(default_on=True)
    np.testing.assert_allclose(HandTracker(trusted).update(depth).center_uvd, expected, atol=1e-4)


@pytest.mark.slow
def test_the_tracker_refines_from_its_last_joint_tracked_iterations_times(tiny_bundle, tmp_path):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    config = RefinerConfig(**TINY_REFINER, iterations=3, tracked_iterations=1)
    offset = [0.0625, -0.03125, 0.0]  # exact in float32, the refiner's output type
    path = save_bundle(str(tmp_path / "b"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config,
                       constant_refiner(config, offset), config)
    bundle = load_bundle(path)
    assert bundle.refiner_config == config
    depth, _ = SequenceRenderer(4, SynthConfig()).render(0)
    cube = np.asarray(bundle.spec.cube, np.float64)
    tracker = HandTracker(bundle, refine=True)
    calls, refiner = [], tracker.refiner
    tracker.refiner = lambda crop: calls.append(crop.shape) or refiner(crop)

    first = tracker.update(depth)  # no last joint: from the detection, ``iterations`` passes
    assert first.mode == "detected" and len(calls) == 3
    joint = HandLocaliser().detect(depth, cube, NYU_CAMERA)
    for _ in range(3):
        joint = move_centre(joint, offset, cube, NYU_CAMERA)
    np.testing.assert_allclose(tracker.previous_reference, joint, atol=1e-6)
    second = tracker.update(depth)  # from the last joint: ``tracked_iterations`` passes
    assert second.mode == "tracked" and len(calls) == 4
    np.testing.assert_allclose(tracker.previous_reference, move_centre(joint, offset, cube, NYU_CAMERA), atol=1e-6)
    # bundles written before the setting load with one pass when tracking; none is refused
    saved = {k: v for k, v in RefinerConfig().to_dict().items() if k != "tracked_iterations"}
    assert RefinerConfig.from_dict(saved).tracked_iterations == 1
    with pytest.raises(ValueError, match="tracked_iterations"):
        RefinerConfig(tracked_iterations=0)


@pytest.mark.slow
def test_the_tracker_centres_the_crop_around_the_refined_joint_on_every_centre_step_th_pixel(tiny_bundle, tmp_path):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    config = RefinerConfig(**TINY_REFINER)
    path = save_bundle(str(tmp_path / "b"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config,
                       constant_refiner(config, [0.0625, -0.03125, 0.0]), config)
    bundle = load_bundle(path)
    depth, _ = SequenceRenderer(4, SynthConfig()).render(0)
    depth_mm, cube = NYU_CAMERA.to_mm(depth), np.asarray(bundle.spec.cube, np.float64)
    centres, joints = {}, {}
    for step in (1, 2, 3):
        tracker = HandTracker(bundle, centre_step=step, refine=True)
        result = tracker.update(depth)
        # the first pass on the localiser's every 2nd pixel, the last on every ``step``-th
        expected = hand_center(depth_mm, tracker.previous_reference, cube, NYU_CAMERA, coarse_step=2,
                               final_step=step)
        np.testing.assert_allclose(result.center_uvd, expected, rtol=0, atol=1e-9)
        centres[step], joints[step] = result.center_uvd, tracker.previous_reference
    # the same refined joint (the refiner is constant), three different centres of mass; step 1's
    # last pass is the training pre-processing's, at full resolution
    np.testing.assert_array_equal(joints[1], joints[3])
    assert not np.allclose(centres[1], centres[2]) and not np.allclose(centres[2], centres[3])
    np.testing.assert_allclose(centres[1], hand_center(depth_mm, joints[1], cube, NYU_CAMERA, coarse_step=2),
                               rtol=0, atol=1e-9)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="centre_step must be an integer >= 1"):
            HandTracker(bundle, centre_step=bad)


def test_refiner_settings_change_at_test_time_but_not_the_network(tiny_bundle, tmp_path):
    two = tiny_bundle.with_refiner_settings(tracked_iterations=2, max_behind_surface_mm=20.0)
    assert two.refiner_config == dataclasses.replace(tiny_bundle.refiner_config, tracked_iterations=2,
                                                     max_behind_surface_mm=20.0)
    assert two.refiner is tiny_bundle.refiner and two.model is tiny_bundle.model
    assert tiny_bundle.refiner_config.tracked_iterations == 1  # a new bundle; this one unchanged
    for network_setting in ({"image_size": 64}, {"filters": (8, 16)}, {"fc_units": 32}):
        with pytest.raises(ConfigError, match=f"{next(iter(network_setting))} shape its trained network"):
            tiny_bundle.with_refiner_settings(**network_setting)
    plain = load_bundle(save_bundle(str(tmp_path / "plain"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config))
    with pytest.raises(ConfigError, match="no centre refiner"):
        plain.with_refiner_settings(tracked_iterations=2)


@pytest.mark.slow
def test_bundle_keeps_the_refiner_and_refuses_a_wrong_one(tiny_bundle, tmp_path):
    again = load_bundle(tiny_bundle.path)
    assert again.refiner_config == RefinerConfig(**TINY_REFINER)
    for a, b in zip(again.refiner.get_weights(), tiny_bundle.refiner.get_weights()):
        np.testing.assert_array_equal(a, b)
    meta = json.load(open(os.path.join(tiny_bundle.path, SPEC_FILE)))
    assert meta["refiner"]["model"] == "refiner.keras"
    assert RefinerConfig.from_dict(meta["refiner"]["config"]) == RefinerConfig(**TINY_REFINER)

    with pytest.raises(ValueError, match="centre refiner"):  # a 32x32 refiner declared as 16x16
        save_bundle(str(tmp_path / "bad"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config,
                    build_centre_refiner(RefinerConfig(image_size=32)), RefinerConfig(**TINY_REFINER))
    assert not os.path.exists(tmp_path / "bad")
    copy = save_bundle(str(tmp_path / "b"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config,
                       tiny_bundle.refiner, tiny_bundle.refiner_config)
    os.remove(os.path.join(copy, "refiner.keras"))
    with pytest.raises(DataError, match="refiner.keras: model file not found"):
        load_bundle(copy)
    plain = save_bundle(str(tmp_path / "plain"), tiny_bundle.model, tiny_bundle.spec, tiny_bundle.config)
    assert load_bundle(plain).refiner is None and HandTracker(load_bundle(plain)).refiner is None
