import dataclasses
import os

import cv2
import numpy as np
import pytest
import scipy.io

from keras_cadstn.data import icvl, nyu
from keras_cadstn.data.frames import NYU_EVAL_JOINTS
from keras_cadstn.errors import ConfigError, DataError


def _write_nyu_split(split_dir, n=3, kinects=3):
    os.makedirs(split_dir, exist_ok=True)
    uvd = np.zeros((kinects, n, 36, 3))
    uvd[..., 0] = 300 + np.arange(36)
    uvd[..., 1] = 200 + np.arange(n)[:, None]
    uvd[..., 2] = 600.0
    uvd[1] += 1000  # other kinects: other (here invalid) labels, must be ignored
    scipy.io.savemat(os.path.join(split_dir, "joint_data.mat"), {"joint_uvd": uvd, "joint_xyz": uvd})
    for i in range(n):
        img = np.zeros((480, 640, 3), np.uint8)  # BGR on disk order: B, G, R
        img[10, 20] = (3, 2, 99)  # B=3, G=2 -> 2 * 256 + 3 = 515 mm; R unused
        cv2.imwrite(nyu.depth_path(split_dir, i), img)
    return uvd


def test_dataset_spec_centre_scale_round_trip_and_checks():
    from keras_cadstn.data.frames import NYU, DatasetSpec
    half = dataclasses.replace(NYU, centre_scale=0.5)
    assert DatasetSpec.from_dict(half.to_dict()) == half
    np.testing.assert_allclose(half.centre_cube(), [150.0, 150.0, 150.0])
    np.testing.assert_allclose(half.centre_cube((249.0, 249.0, 249.0)), [124.5, 124.5, 124.5])  # a frame's own cube
    old = NYU.to_dict()
    old.pop("centre_scale")  # written before the option: the paper's whole cube
    assert DatasetSpec.from_dict(old).centre_scale == 1.0
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="centre_scale must be in"):
            dataclasses.replace(NYU, centre_scale=bad)


def test_nyu_read_depth_g_and_b_channels(tmp_path):
    _write_nyu_split(str(tmp_path / "train"), n=1)
    d = nyu.read_depth(nyu.depth_path(str(tmp_path / "train"), 0))
    assert d.shape == (480, 640) and d.dtype == np.float32
    assert d[10, 20] == 515.0 and d.sum() == 515.0


def test_nyu_write_read_round_trip(tmp_path):
    depth = np.zeros((480, 640), np.float32)
    depth[100:110, 200:220] = 1234.0
    depth[0, 0] = 65535
    path = str(tmp_path / "d.png")
    nyu.write_depth(path, depth)
    np.testing.assert_array_equal(nyu.read_depth(path), depth)


def test_load_nyu_frames_joints_and_sequences(tmp_path):
    uvd = _write_nyu_split(str(tmp_path / "train"), n=3)
    split = nyu.load_nyu(str(tmp_path), "train")
    assert len(split) == 3 and split.num_sequences == 1
    f = split.frames[2]
    assert f.frame_index == 2 and f.path.endswith("depth_1_0000003.png")
    np.testing.assert_array_equal(f.joints_uvd, uvd[0, 2, list(NYU_EVAL_JOINTS)])
    assert f.joints_uvd[0, 0] == 300 and f.joints_uvd[-1, 0] == 332  # joints 0 and 32 of 36
    np.testing.assert_allclose(f.joints_xyz, nyu.NYU.camera.uvd_to_xyz(f.joints_uvd))


def test_load_nyu_sequence_starts_file(tmp_path):
    _write_nyu_split(str(tmp_path / "test"), n=3)
    (tmp_path / "test" / "sequence_starts.txt").write_text("0\n2\n")
    assert [f.sequence_id for f in nyu.load_nyu(str(tmp_path), "test").frames] == [0, 0, 1]


def test_load_nyu_errors(tmp_path):
    with pytest.raises(DataError, match="split folder not found"):
        nyu.load_nyu(str(tmp_path), "train")
    _write_nyu_split(str(tmp_path / "train"), n=3)
    os.remove(nyu.depth_path(str(tmp_path / "train"), 1))
    with pytest.raises(DataError, match=r"2 depth_1_\*.png images but 3 labelled.*depth_1_0000002.png"):
        nyu.load_nyu(str(tmp_path), "train")


def test_nyu_corrupt_png_and_bad_labels(tmp_path):
    split_dir = str(tmp_path / "train")
    uvd = _write_nyu_split(split_dir, n=2)
    with open(nyu.depth_path(split_dir, 0), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="depth_1_0000001.png: not a readable PNG"):
        nyu.read_depth(nyu.depth_path(split_dir, 0))
    cv2.imwrite(nyu.depth_path(split_dir, 1), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"depth_1_0000002.png: image is \(10, 10, 3\).*expected \(480, 640, 3\)"):
        nyu.read_depth(nyu.depth_path(split_dir, 1))
    uvd[0, 1, 3, 0] = 900.0  # joint 3 of frame 1 outside the 640 px image
    scipy.io.savemat(os.path.join(split_dir, "joint_data.mat"), {"joint_uvd": uvd})
    with pytest.raises(DataError, match="frame 1 .*outside the 640x480 image"):
        nyu.load_nyu(str(tmp_path), "train")
    uvd[0, 1, 3, 0] = np.nan
    scipy.io.savemat(os.path.join(split_dir, "joint_data.mat"), {"joint_uvd": uvd})
    with pytest.raises(DataError, match="frame 1 .*NaN"):
        nyu.load_nyu(str(tmp_path), "train")
    scipy.io.savemat(os.path.join(split_dir, "joint_data.mat"), {"joint_uvd": uvd[:, :, :14]})
    with pytest.raises(DataError, match=r"expected \(kinects >= 1, frames, 36, 3\)"):
        nyu.load_nyu(str(tmp_path), "train")


def _write_icvl(root):
    labels = {}
    for split, folder, files in (("train", "Training", {"labels.txt": ["seqA", "seqA", "seqB"]}),
                                 ("test", "Testing", {"test_seq_1.txt": ["test_seq_1"] * 2,
                                                      "test_seq_2.txt": ["test_seq_2"]})):
        for label_file, dirs in files.items():
            lines = []
            for k, d in enumerate(dirs):
                name = f"{d}/image_{k:04d}.png"
                os.makedirs(os.path.join(root, folder, "Depth", d), exist_ok=True)
                img = np.zeros((240, 320), np.uint16)
                img[50, 60] = 40000 + k
                cv2.imwrite(os.path.join(root, folder, "Depth", name), img)
                uvd = np.stack([np.linspace(100, 200, 16), np.full(16, 120.0 + k), np.full(16, 350.0)], -1)
                lines.append(name + " " + " ".join(f"{x:.4f}" for x in uvd.ravel()) + " \r")
                labels[(split, name)] = uvd
            with open(os.path.join(root, folder, label_file), "w", newline="") as f:
                f.write("\n".join(lines) + "\n")
    return labels


def test_icvl_reads_16bit_png_and_labels(tmp_path):
    labels = _write_icvl(str(tmp_path))
    d = icvl.read_depth(str(tmp_path / "Training" / "Depth" / "seqA" / "image_0001.png"))
    assert d.shape == (240, 320) and d.dtype == np.float32 and d[50, 60] == 40001
    train = icvl.load_icvl(str(tmp_path), "train")
    assert [f.sequence_id for f in train.frames] == [0, 0, 1]
    np.testing.assert_allclose(train.frames[1].joints_uvd, labels[("train", "seqA/image_0001.png")], atol=5e-5)
    assert train.spec.cube == (200.0, 200.0, 200.0)
    test = icvl.load_icvl(str(tmp_path), "test")
    assert len(test) == 3 and [f.sequence_id for f in test.frames] == [0, 0, 1]


def test_icvl_errors(tmp_path):
    _write_icvl(str(tmp_path))
    path = tmp_path / "Training" / "labels.txt"
    path.write_text("seqA/image_0000.png 1 2 3\n")
    with pytest.raises(DataError, match=r"labels.txt:1: 3 values, expected 48"):
        icvl.load_icvl(str(tmp_path), "train")
    path.write_text("seqA/missing.png " + " ".join(["100"] * 48) + "\n")
    with pytest.raises(DataError, match="missing.png: depth image listed in"):
        icvl.load_icvl(str(tmp_path), "train")
    bad = tmp_path / "Training" / "Depth" / "seqA" / "image_0000.png"
    cv2.imwrite(str(bad), np.zeros((240, 320), np.uint8))
    with pytest.raises(DataError, match=r"image_0000.png: PNG of 8-bit samples, expected 16-bit \(uint16 depth\)"):
        icvl.read_depth(str(bad))
    cv2.imwrite(str(bad), np.zeros((120, 320), np.uint16))
    with pytest.raises(DataError, match=r"image_0000.png: image is \(120, 320\) uint16, expected \(240, 320\) uint16"):
        icvl.read_depth(str(bad))
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((240, 320, 3), np.uint8))
    os.replace(tmp_path / "photo.jpg", bad)  # a JPEG saved under a .png name is not depth
    with pytest.raises(DataError, match=r"image_0000.png: not a PNG file \(no PNG signature"):
        icvl.read_depth(str(bad))


def test_icvl_label_files_without_frames_are_refused(tmp_path):
    _write_icvl(str(tmp_path))
    for name in os.listdir(tmp_path / "Training"):
        if name.endswith(".txt"):
            (tmp_path / "Training" / name).write_text("")
    with pytest.raises(DataError, match="list no frames"):
        icvl.load_icvl(str(tmp_path), "train")
