import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import SMALL

from keras_cadstn.config import RandomAffine
from keras_cadstn.data import make_dataset
from keras_cadstn.data.nyu import load_nyu
from keras_cadstn.data.pipeline import DISCRETE_TRANSFORMS, augment_example, parse_frame
from keras_cadstn.data.preprocessing import denormalize_joints, preprocess_frame
from keras_cadstn.data.tfrecord import convert_split, read_manifest
from keras_cadstn.errors import ConfigError, CorruptShardError, DataError


def _first_record(path):
    raw = next(iter(tf.data.TFRecordDataset(path)))
    return {k: v.numpy() for k, v in parse_frame(raw, SMALL, 14).items()}


@pytest.mark.slow
def test_records_hold_the_preprocessed_frame(synth_root, synth_records):
    manifest = read_manifest(os.path.join(synth_records, "train"))
    assert manifest["num_records"] == 80 and manifest["complete"] and len(manifest["shards"]) == 3
    assert sum(s["records"] for s in manifest["shards"]) == 80 and manifest["crop_dtype"] == "float16"
    ex = _first_record(os.path.join(synth_records, "train", manifest["shards"][0]["file"]))
    split = load_nyu(synth_root, "train")
    frame = split.frames[0]
    crop, info = preprocess_frame(split.read_depth(frame.path), frame.joints_uvd[13], frame.cube,
                                  split.spec.camera, SMALL)
    np.testing.assert_allclose(ex["crop"][..., 0], crop, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(ex["center_xyz"], info.center_xyz, rtol=1e-6)
    back = denormalize_joints(ex["joints"], ex["center_xyz"].astype(np.float64), ex["cube"])
    assert np.abs(back - frame.joints_xyz).max() < 1e-3  # float32 storage of normalised joints
    np.testing.assert_allclose(ex["joints_xyz"], frame.joints_xyz, atol=1e-3)


def test_conversion_resumes_and_writes_atomically(synth_root, tmp_path):
    split = load_nyu(synth_root, "test")
    out = str(tmp_path / "rec")
    convert_split(split, out, shards=4, image_size=SMALL, progress=False)
    files = sorted(f for f in os.listdir(out) if f.endswith(".tfrecord"))
    mtimes = {f: os.path.getmtime(os.path.join(out, f)) for f in files}
    os.remove(os.path.join(out, files[2]))  # as if killed before this shard was renamed
    m = convert_split(split, out, shards=4, image_size=SMALL, progress=False)
    assert m["num_records"] == 40 and not any(f.endswith(".tmp") for f in os.listdir(out))
    for f in files:
        if f != files[2]:
            assert os.path.getmtime(os.path.join(out, f)) == mtimes[f]  # kept, not rewritten


def test_corrupt_shard_is_named_or_skipped(synth_records, tmp_path):
    d = str(tmp_path / "train")
    shutil.copytree(os.path.join(synth_records, "train"), d)
    shard = os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith(".tfrecord"))[1])
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    with pytest.raises(CorruptShardError, match=os.path.basename(shard) + ".*sha256"):
        make_dataset(os.path.join(d, "*.tfrecord"), batch_size=8)
    n = sum(int(x.shape[0]) for x, _ in make_dataset(os.path.join(d, "*.tfrecord"), batch_size=8, on_corrupt="skip"))
    assert 53 <= n < 80  # the two intact shards (53-54 frames) plus what precedes the damage


def test_frames_mode_shapes_and_targets(synth_records):
    ds = make_dataset(os.path.join(synth_records, "train", "*.tfrecord"), batch_size=16,
                      output_names=["joints", "aux_depth"], include_meta=True)
    x, y, meta = next(iter(ds))
    assert x.shape == (16, SMALL, SMALL, 1) and y["joints"].shape == (16, 42)
    np.testing.assert_array_equal(y["joints"], y["aux_depth"])
    assert meta["frame_index"].numpy().tolist() == list(range(16))  # in order when not shuffled


def test_sequence_windows_never_cross_a_sequence(synth_records):
    ds = make_dataset(os.path.join(synth_records, "train", "*.tfrecord"), mode="sequences", seq_len=8,
                      window_shift=3, batch_size=64, include_meta=True)
    count = 0
    for x, y, meta in ds:
        assert x.shape[1:] == (8, SMALL, SMALL, 1) and y.shape[1:] == (8, 42)
        seq, idx = meta["sequence_id"].numpy(), meta["frame_index"].numpy()
        assert (seq == seq[:, :1]).all() and (np.diff(idx, axis=1) == 1).all()
        count += len(x)
    # two sequences of 40 frames split over 3 shards (27/27/26 frames): windows with shift 3 inside
    # each (shard, sequence) run; none spans the boundary at frame 40 or a shard boundary
    assert count > 0
    starts = set()
    for _, _, meta in ds:
        starts |= set(meta["frame_index"].numpy()[:, 0].tolist())
    assert not any(s < 40 < s + 8 for s in starts)


def _joint_pixels(ex, joints):
    """Crop pixel (col, row) of normalised joints, through the frame's camera and crop transform."""
    xyz = denormalize_joints(joints, ex["center_xyz"], ex["cube"])
    fx, fy, cx, cy = ex["camera"]
    u, v = fx * xyz[:, 0] / xyz[:, 2] + cx, fy * xyz[:, 1] / xyz[:, 2] + cy
    t = ex["transform"]
    return t[0, 0] * u + t[0, 2], t[1, 1] * v + t[1, 2], xyz[:, 2]


def _on_hand_fraction(ex):
    cols, rows, z = _joint_pixels(ex, ex["joints"])
    crop = ex["crop"][..., 0]
    zc, half = ex["center_xyz"][2], ex["cube"][2] / 2
    ok = 0
    for c, r, d in zip(np.rint(cols).astype(int), np.rint(rows).astype(int), z):
        patch = crop[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        surface = patch[patch < 1.0] * half + zc
        ok += bool(surface.size and surface.min() < d + 5 and surface.min() > d - 60)
    return ok / len(z)


@pytest.mark.parametrize("choice", range(len(DISCRETE_TRANSFORMS)))
def test_augmented_joints_land_on_the_rendered_hand(synth_records, choice):
    shard = sorted(f for f in os.listdir(os.path.join(synth_records, "train")) if f.endswith(".tfrecord"))[0]
    raw = list(tf.data.TFRecordDataset(os.path.join(synth_records, "train", shard)).take(5))
    for r in raw:
        ex = parse_frame(r, SMALL, 14)
        base = _on_hand_fraction({k: v.numpy() for k, v in ex.items()})
        aug = augment_example(ex, tf.constant([1, 2], tf.int64), SMALL, choice=choice)
        aug = {k: v.numpy() for k, v in aug.items()}
        assert _on_hand_fraction(aug) >= base - 1e-9  # exactly as many joints on the hand as before
        if choice:
            assert not np.allclose(aug["joints"], ex["joints"].numpy())
        # the fingertip (joint 6, ring tip) moves with the pixels: recompute its pixel by hand
        c0, r0, _ = _joint_pixels({k: v.numpy() for k, v in ex.items()}, ex["joints"].numpy())
        c1, r1, _ = _joint_pixels(aug, aug["joints"])
        mid = (SMALL - 1) / 2
        a, b = np.array(DISCRETE_TRANSFORMS[choice]) @ np.array([c0[6] - mid, r0[6] - mid])
        np.testing.assert_allclose([c1[6] - mid, r1[6] - mid], [a, b], atol=1e-3)


def test_window_gets_one_transform_and_affine_keeps_joints_on_hand(synth_records):
    ds = make_dataset(os.path.join(synth_records, "train", "*.tfrecord"), mode="sequences", seq_len=4,
                      batch_size=1, include_meta=True)
    x, y, meta = next(iter(ds))
    ex = {"crop": x[0], "joints": tf.reshape(y[0], [4, 14, 3]), **{k: v[0] for k, v in meta.items()}}
    aug = augment_example(ex, tf.constant([3, 4], tf.int64), SMALL, choice=1)
    for t in range(4):  # every frame rotated by 90 degrees the same way
        np.testing.assert_array_equal(aug["crop"][t].numpy(), np.rot90(x[0, t].numpy(), 1))
    ex1 = {k: v[0] for k, v in ex.items()}
    aff = augment_example(ex1, tf.constant([5, 6], tf.int64), SMALL, paper=False,
                          affine=RandomAffine(max_rotation=30, max_scale=0.1, max_shift=2))
    aff = {k: np.asarray(v) for k, v in aff.items()}
    assert _on_hand_fraction(aff) >= 0.7


@pytest.mark.slow
def test_centre_motion_is_the_move_of_the_crop_centre_and_turns_with_the_crop(synth_records):
    pattern = os.path.join(synth_records, "train", "*.tfrecord")
    ds = make_dataset(pattern, mode="sequences", seq_len=4, batch_size=64, centre_motion=True, include_meta=True)
    largest = 0.0
    for x, _, meta in ds:
        assert set(x) == {"clip", "centre_motion"} and x["clip"].shape[1:] == (4, SMALL, SMALL, 1)
        motion, centres, cube = x["centre_motion"].numpy(), meta["center_xyz"].numpy(), meta["cube"].numpy()
        np.testing.assert_array_equal(motion[:, 0], 0.0)  # a window's first frame has no past
        np.testing.assert_allclose(motion[:, 1:], (centres[:, 1:] - centres[:, :-1]) / (cube[:, 1:] / 2), atol=1e-6)
        largest = max(largest, np.abs(motion).max())
    assert largest > 0.01  # the synthetic hand moves

    ex = {"crop": x["clip"][0], "joints": tf.zeros([4, 14, 3]), "previous_centre": -x["centre_motion"][0],
          **{k: v[0] for k, v in meta.items()}}
    m = x["centre_motion"][0].numpy()

    def augmented_motion(**kw):
        return -augment_example(ex, tf.constant([1, 2], tf.int64), SMALL, **kw)["previous_centre"].numpy()
    np.testing.assert_allclose(augmented_motion(choice=0), m, atol=1e-6)
    # rot 180: the move in the image plane turns with the crop (up to the parallax of the centres'
    # different depths), the depth move stays
    turned = augmented_motion(choice=3)
    np.testing.assert_allclose(turned[:, :2], -m[:, :2], atol=0.2 * np.abs(m).max() + 1e-3)
    np.testing.assert_allclose(turned[:, 2], m[:, 2], atol=1e-6)
    # a shift moves every frame's pixels alike: the move between frames stays
    shifted = augmented_motion(paper=False, affine=RandomAffine(max_shift=3))
    np.testing.assert_allclose(shifted, m, atol=2e-3)
    with pytest.raises(ConfigError, match="centre_motion needs mode='sequences'"):
        make_dataset(pattern, mode="frames", centre_motion=True)


@pytest.mark.slow
def test_seeded_pipeline_is_deterministic(synth_records):
    kw = dict(batch_size=8, augment=True, shuffle=True, seed=7)
    pattern = os.path.join(synth_records, "train", "*.tfrecord")
    a = [y.numpy() for _, y in make_dataset(pattern, **kw)]
    b = [y.numpy() for _, y in make_dataset(pattern, **kw)]
    c = [y.numpy() for _, y in make_dataset(pattern, **dict(kw, seed=8))]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_missing_shards_error():
    with pytest.raises(DataError, match="no TFRecord shards match"):
        make_dataset("/nonexistent/*.tfrecord")
