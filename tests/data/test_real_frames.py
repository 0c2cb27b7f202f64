"""The annotated real frames: the files parse, malformed ones are refused, the image error is mm at
the palm's depth."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import REAL_FRAMES

from keras_cadstn.camera import Camera
from keras_cadstn.data.real_frames import JOINTS, AnnotatedFrame, annotated_joints_uv, read_annotated_frames
from keras_cadstn.errors import DataError


def test_the_shipped_frames_are_annotated_with_every_joint_near_the_hand():
    frames = read_annotated_frames(REAL_FRAMES)
    assert len(frames) == 8
    for f in frames:
        assert set(f.joints_uv) == set(JOINTS)
        palm = f.palm_depth_mm
        assert 450 < palm < 650  # the hand is held 0.5-0.6 m from the sensor
        for joint, (u, v) in f.joints_uv.items():
            # every annotated tip lies on the hand: a reading within 3 px, within 150 mm of the palm
            window = f.depth_mm[int(v) - 3:int(v) + 4, int(u) - 3:int(u) + 4]
            near = window[(window > 0) & (np.abs(window - palm) < 150)]
            assert near.size, (f.name, joint)
            # and within a hand's reach of the palm in the image (200 mm at the palm's depth)
            assert f.image_mm(np.linalg.norm(np.array([u, v]) - f.palm_uv)) < 200, (f.name, joint)


def test_image_error_is_pixels_times_palm_depth_over_focal_length():
    camera = Camera(fx=500.0, fy=500.0, cx=4.0, cy=4.0, width=9, height=9, depth_unit_mm=1.0)
    raw = np.zeros((9, 9), np.uint16)
    raw[2:7, 2:7] = 600  # the palm at 600 mm
    raw[4, 4] = 0  # a hole at the palm itself: the median of the valid pixels around it
    frame = AnnotatedFrame("f", raw, camera, np.array([4.0, 4.0]), {})
    assert frame.palm_depth_mm == 600.0
    assert frame.image_mm(10.0) == pytest.approx(10 * 600 / 500)  # 12 mm


def test_a_prediction_maps_onto_the_annotated_joints():
    camera = Camera(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
    joints = np.zeros((14, 3))
    joints[:, 2] = 500.0
    joints[8] = [50.0, 0.0, 500.0]  # thumb tip: 50 mm right -> 50 px right at 500 mm
    joints[11], joints[12] = [0.0, 90.0, 500.0], [0.0, 110.0, 500.0]  # the wrist's two sides
    uv = annotated_joints_uv(joints, "nyu", camera)
    np.testing.assert_allclose(uv["thumb_tip"], [370.0, 240.0])
    np.testing.assert_allclose(uv["wrist"], [320.0, 340.0])  # their mean: 100 mm down
    assert set(annotated_joints_uv(np.full((16, 3), 500.0), "icvl", camera)) == set(JOINTS) - {"wrist"}
    with pytest.raises(DataError, match="no annotated-joint mapping"):
        annotated_joints_uv(joints, "msra", camera)


def _copy(tmp_path):
    folder = tmp_path / "frames"
    shutil.copytree(REAL_FRAMES, folder)
    return folder


def _rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file,old,new,message", [
    ("joints.tsv", "file\tjoint\tu\tv", "file\tjoint\tx\ty", "expected the header"),
    ("joints.tsv", "thumb_tip\t251\t266", "thumb_tip\t251", "expected 4 tab-separated fields"),
    ("joints.tsv", "thumb_tip\t251\t266", "thumb_tip\tabc\t266", "must be numbers"),
    ("joints.tsv", "thumb_tip\t251\t266", "thumb_tip\t951\t266", "outside the 640x480 image"),
    ("joints.tsv", "thumb_tip\t251\t266", "pinky_tip\t251\t266", "unknown joint 'pinky_tip'"),
    ("joints.tsv", "index_tip\t208\t334", "thumb_tip\t208\t334", "annotated twice"),
    ("joints.tsv", "20210326-230536_30.png\twrist", "other.png\twrist", "not in palms.tsv"),
    ("palms.tsv", "20210326-230536_50.png\t305\t275", "20210326-230536_30.png\t305\t275", "listed twice"),
    ("palms.tsv", "295\t295", "295\tnan", "outside the 640x480 image"),
])
def test_malformed_annotations_are_refused_naming_the_file(tmp_path, file, old, new, message):
    folder = _copy(tmp_path)
    _rewrite(folder / file, old, new)
    with pytest.raises(DataError, match=message) as e:
        read_annotated_frames(str(folder))
    assert file in str(e.value)


def test_a_frame_without_all_its_joints_or_files_is_refused(tmp_path):
    folder = _copy(tmp_path)
    lines = (folder / "joints.tsv").read_text().splitlines()
    (folder / "joints.tsv").write_text("\n".join(ln for ln in lines if not ln.endswith("wrist\t335\t310")) + "\n")
    with pytest.raises(DataError, match="20210326-230536_30.png lacks wrist"):
        read_annotated_frames(str(folder))
    for name, message in (("joints.tsv", "annotation file not found"), ("camera.json", "camera file not found")):
        folder = _copy(tmp_path / name)
        os.remove(folder / name)
        with pytest.raises(DataError, match=message):
            read_annotated_frames(str(folder))
    folder = _copy(tmp_path / "png")
    (folder / "20210326-230536_70.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="expected a 16-bit 640x480 depth PNG"):
        read_annotated_frames(str(folder))
    folder = _copy(tmp_path / "json")
    (folder / "camera.json").write_text(json.dumps({"fx": 1}))
    with pytest.raises(DataError, match="camera.json: not a camera"):
        read_annotated_frames(str(folder))
