"""The learned hand detector: its training examples, loss, training round trip and the shipped model."""
import json
import os

import numpy as np
import pytest

from keras_cadstn.camera import NYU_CAMERA
from keras_cadstn.config import DetectorConfig, SynthConfig
from keras_cadstn.data.synthetic import SequenceRenderer
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.tracking.localiser import HandLocaliser
from keras_cadstn.training import detector as detect


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_rotate_example_moves_the_offset_with_the_crop(turns, mirror):
    # a crop whose only hand pixel lies where the offset points (x along columns, y along rows)
    crop = np.ones((8, 8, 1), np.float32)
    row, col = 1, 6
    crop[row, col] = 0.25
    centre = 3.5
    offset = np.array([col - centre, row - centre, 0.4], np.float32)
    turned, moved = detect.rotate_example(crop, offset, turns, mirror)
    new_row, new_col = np.argwhere(turned[:, :, 0] == 0.25)[0]
    np.testing.assert_allclose(moved, [new_col - centre, new_row - centre, 0.4])
    assert turned.shape == (8, 8, 1) and turned.sum() == crop.sum()
    # hand-computed: one counterclockwise turn maps (x, y) = (2.5, -2.5) to (y, -x) = (-2.5, -2.5)
    if turns == 1 and not mirror:
        np.testing.assert_allclose(moved, [-2.5, -2.5, 0.4])


def test_masked_offset_loss_hand_computed():
    y_true = np.array([[0.1, 0.0, 0.0, 1.0], [0.0, 0.3, 0.0, 1.0], [5.0, 5.0, 5.0, 0.0]], np.float32)
    y_pred = np.zeros((3, 3), np.float32)
    # weighted mean of squared errors over the rows with weight 1: (0.01 + 0.09) / 2; the third is ignored
    assert float(detect.masked_offset_loss(y_true, y_pred)) == pytest.approx(0.05, rel=1e-5)


def test_detector_config_checks_and_round_trips():
    cfg = DetectorConfig(iterations=2, threshold=0.5)
    assert DetectorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="multiple of 8"):
        DetectorConfig(image_size=20)
    with pytest.raises(ValueError, match="threshold in"):
        DetectorConfig(threshold=1.0)


@pytest.mark.slow
def test_train_detector_writes_a_model_that_loads_back(tmp_path):
    out = str(tmp_path / "det" / "hand_detector.keras")
    trained = detect.train_detector(out, DetectorConfig(fc_units=32), sequences=2, frames=2, steps=20,
                                    batch_size=16, progress=False)
    assert sorted(os.listdir(tmp_path / "det")) == ["hand_detector.json", "hand_detector.keras"]
    loaded = detect.load_detector(out)
    assert loaded.config == DetectorConfig(fc_units=32)
    crops = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    for a, b in zip(trained.predict(crops), loaded.predict(crops)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    offsets, hands = loaded.predict(crops)
    assert offsets.shape == (3, 3) and hands.shape == (3,) and np.all((hands > 0) & (hands < 1))


def test_missing_detector_says_how_to_make_one(tmp_path):
    missing = str(tmp_path / "nothing.keras")
    with pytest.raises(ConfigError, match="no hand detector at .*nothing.keras: train one with `python "
                                          "tools/train_detector.py"):
        detect.load_detector(missing)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    (tmp_path / "broken.json").write_text(json.dumps(DetectorConfig().to_dict()))
    with pytest.raises(DataError, match="broken.keras: not a readable Keras model"):
        detect.load_detector(str(broken))
    depth = SequenceRenderer(1000, SynthConfig(person=True)).render(0)[0]
    with pytest.raises(ConfigError, match="no hand detector"):
        HandLocaliser(detector_path=missing).find_palm(depth, NYU_CAMERA)


@pytest.mark.slow
def test_shipped_detector_finds_the_palm_in_front_of_a_person_and_nothing_without_a_hand():
    """A few frames of scenes the detector was not trained on (seeds 4000..; its training data:
    2000..): the palm found within 50 mm, and "no hand" once the hand is out of view."""
    localiser = HandLocaliser()
    found, no_hand, frames = 0, 0, 0
    for seed in (4000, 4001, 4002):
        scene = SequenceRenderer(seed, SynthConfig(person=True))
        for t in (0, 20, 40):
            depth, joints = scene.render(t)
            palm = localiser.find_palm(depth, NYU_CAMERA)
            found += palm is not None and np.linalg.norm(NYU_CAMERA.uvd_to_xyz(palm[0]) - joints[32]) <= 50.0
            no_hand += localiser.find_palm(scene.render(t, hand=False)[0], NYU_CAMERA) is None
            frames += 1
    assert found >= frames - 1 and no_hand >= frames - 1, (found, no_hand, frames)
