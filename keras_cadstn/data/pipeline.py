"""tf.data input pipelines over the pre-processed shards: parse -> decode -> window -> augment -> batch.

Augmentation acts on the crop's pixel grid and maps every joint through the same pixel transform
(joint -> image uv -> crop pixel -> transformed crop pixel -> image uv -> xyz at the joint's own
depth), which is exact for the crop's perspective: a plain 2D rotation of normalised xyz is not,
because the crop is cut around an off-axis centre.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import tensorflow as tf

from keras_cadstn.data import tfrecord

AUTOTUNE = tf.data.AUTOTUNE
# The paper's NYU augmentation: identity, rot90 (CCW), rot -90, rot180, horizontal flip, vertical
# flip, as 2x2 maps of centred crop pixel coordinates (a = col - mid, b = row - mid).
DISCRETE_TRANSFORMS = (((1, 0), (0, 1)), ((0, 1), (-1, 0)), ((0, -1), (1, 0)), ((-1, 0), (0, -1)),
                       ((-1, 0), (0, 1)), ((1, 0), (0, -1)))


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """Optional in-plane augmentation on top of the paper's: rotation (degrees), scale, shift (px)."""

    max_rotation: float = 0.0
    max_scale: float = 0.0
    max_shift: float = 0.0


def _feature_spec(image_size: int, num_joints: int) -> dict:
    f = tf.io.FixedLenFeature
    return {"crop": f([], tf.string), "joints": f([num_joints * 3], tf.float32),
            "joints_xyz": f([num_joints * 3], tf.float32), "center_xyz": f([3], tf.float32),
            "center_uvd": f([3], tf.float32), "cube": f([3], tf.float32),
            "transform": f([9], tf.float32), "camera": f([4], tf.float32),
            "sequence_id": f([], tf.int64), "frame_index": f([], tf.int64)}


def parse_frame(serialized, image_size: int, num_joints: int) -> dict:
    """One serialised record -> dict of tensors; crop (M, M, 1) float32, joints (K, 3)."""
    ex = tf.io.parse_single_example(serialized, _feature_spec(image_size, num_joints))
    crop = tf.io.decode_raw(ex["crop"], tf.float16)
    tf.debugging.assert_equal(tf.size(crop), image_size * image_size,
                              message=f"record's crop is not {image_size}x{image_size}")
    ex["crop"] = tf.reshape(tf.cast(crop, tf.float32), [image_size, image_size, 1])
    ex["joints"] = tf.reshape(ex["joints"], [num_joints, 3])
    ex["joints_xyz"] = tf.reshape(ex["joints_xyz"], [num_joints, 3])
    ex["transform"] = tf.reshape(ex["transform"], [3, 3])
    return ex


def transform_joints(ex: dict, matrix, shift, image_size: int):
    """Normalised joints after the crop's pixels move by ``matrix @ (p - mid) + shift + mid``.

    Works on one frame or a window (leading axes); depth of every joint is kept.
    """
    mid = (image_size - 1) / 2.0
    cube, centre, cam, t = ex["cube"][..., None, :], ex["center_xyz"][..., None, :], ex["camera"], ex["transform"]
    xyz = ex["joints"] * cube / 2.0 + centre
    fx, fy, cx, cy = (cam[..., i:i + 1] for i in range(4))
    z = xyz[..., 2]
    u, v = fx * xyz[..., 0] / z + cx, fy * xyz[..., 1] / z + cy
    a, b = t[..., 0, 0:1] * u + t[..., 0, 2:3] - mid, t[..., 1, 1:2] * v + t[..., 1, 2:3] - mid
    a2 = matrix[0, 0] * a + matrix[0, 1] * b + shift[0]
    b2 = matrix[1, 0] * a + matrix[1, 1] * b + shift[1]
    u2, v2 = (a2 + mid - t[..., 0, 2:3]) / t[..., 0, 0:1], (b2 + mid - t[..., 1, 2:3]) / t[..., 1, 1:2]
    xyz2 = tf.stack([(u2 - cx) * z / fx, (v2 - cy) * z / fy, z], axis=-1)
    return (xyz2 - centre) / (cube / 2.0)


def _discrete_image_op(crop, choice):
    """Apply DISCRETE_TRANSFORMS[choice] to (..., M, M, 1) crops with exact pixel moves."""
    branches = [lambda: crop, lambda: tf.image.rot90(crop, 1), lambda: tf.image.rot90(crop, 3),
                lambda: tf.image.rot90(crop, 2), lambda: tf.image.flip_left_right(crop),
                lambda: tf.image.flip_up_down(crop)]
    return tf.switch_case(choice, branches)


def _warp(crop, matrix, shift, image_size):
    """Nearest-neighbour warp of (N, M, M, 1) crops; uncovered pixels become background (+1)."""
    mid = (image_size - 1) / 2.0
    inv = tf.linalg.inv(matrix)
    offset = tf.constant([mid, mid]) - tf.linalg.matvec(inv, tf.constant([mid, mid]) + shift)
    row = tf.stack([inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1], 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=crop, transforms=row[None], output_shape=[image_size, image_size],
        fill_value=1.0, interpolation="NEAREST", fill_mode="CONSTANT")


def augment_example(ex: dict, seed, image_size: int, paper: bool = True, affine: RandomAffine | None = None,
                    choice=None) -> dict:
    """The same random transform for the crop(s) and joints of one example (a frame or a window).

    ``paper``: with probability 1/2 one of rot +-90, rot 180, flip H/V (the data set "doubles" in
    expectation, as the paper's one extra copy per image). ``affine``: extra random rotation/scale/shift.
    ``choice``: force DISCRETE_TRANSFORMS[choice] instead of drawing it.
    """
    ex = dict(ex)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    matrix, shift = tf.eye(2), tf.zeros([2])
    if paper:
        keep = tf.random.stateless_uniform([], seeds[0]) < 0.5
        which = tf.random.stateless_uniform([], seeds[1], minval=1, maxval=6, dtype=tf.int32)
        choice = tf.where(keep, 0, which) if choice is None else tf.constant(choice, tf.int32)
        matrix = tf.gather(tf.constant(DISCRETE_TRANSFORMS, tf.float32), choice)
        crop = ex["crop"] if ex["crop"].shape.rank == 4 else ex["crop"][None]
        crop = _discrete_image_op(crop, choice)
        ex["crop"] = crop if ex["crop"].shape.rank == 4 else crop[0]
    if affine is not None and (affine.max_rotation or affine.max_scale or affine.max_shift):
        r = tf.random.stateless_uniform([4], seeds[2], -1.0, 1.0)
        angle = r[0] * affine.max_rotation * 3.141592653589793 / 180.0
        scale = 1.0 + r[1] * affine.max_scale
        rot = scale * tf.stack([tf.stack([tf.cos(angle), -tf.sin(angle)]), tf.stack([tf.sin(angle), tf.cos(angle)])])
        extra_shift = r[2:] * affine.max_shift
        crop = ex["crop"] if ex["crop"].shape.rank == 4 else ex["crop"][None]
        crop = _warp(crop, rot, extra_shift, image_size)
        ex["crop"] = crop if ex["crop"].shape.rank == 4 else crop[0]
        shift = tf.linalg.matvec(rot, shift) + extra_shift
        matrix = rot @ matrix
    ex["joints"] = transform_joints(ex, matrix, shift, image_size)
    return ex


def _windows(ds, seq_len: int, shift: int):
    """Windows of seq_len consecutive frames of ONE sequence (never across a boundary or a gap)."""
    ds = ds.window(seq_len, shift=shift, drop_remainder=True).flat_map(
        lambda w: tf.data.Dataset.zip(w).batch(seq_len, drop_remainder=True))  # static T for the model

    def one_sequence(ex):
        same_seq = tf.reduce_all(tf.equal(ex["sequence_id"], ex["sequence_id"][0]))
        consecutive = tf.reduce_all(tf.equal(ex["frame_index"][1:] - ex["frame_index"][:-1], 1))
        return tf.logical_and(same_seq, consecutive)

    return ds.filter(one_sequence)


def list_shards(pattern: str) -> list:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern!r}")
    return files


def make_dataset(pattern: str, mode: str = "frames", seq_len: int = 16, batch_size: int = 128,
                 augment: bool = False, random_affine: RandomAffine | None = None,
                 shuffle: bool = False, shuffle_buffer: int = 2048, seed: int | None = None,
                 window_shift: int | None = None, repeat: bool = False, cache: bool = False,
                 drop_remainder: bool = False, output_names=None, include_meta: bool = False,
                 on_corrupt: str = "raise", verify_checksums: bool = True):
    """Stream pre-processed shards as ``(crops, joints)`` (or ``(crops, joints, meta)``).

    mode='frames': crops (B, M, M, 1), joints (B, 3K). mode='sequences': windows of ``seq_len``
    consecutive frames of one sequence, (B, T, M, M, 1) and (B, T, 3K); ``window_shift`` frames
    between window starts (default seq_len: non-overlapping). ``output_names`` turns the target into
    a dict with the same joints under each name (for multi-output models). ``include_meta`` adds
    centre/cube/joints_xyz/ids for mapping predictions back to mm. Without ``shuffle`` frames come in
    recorded order; with it, shards are interleaved. The dataset is deterministic for a given
    ``seed`` and starts from the file list, so tf.distribute's FILE auto-shard policy applies.
    """
    if mode not in ("frames", "sequences"):
        raise ValueError(f"mode must be 'frames' or 'sequences', got {mode!r}")
    files = list_shards(pattern)
    directory = os.path.dirname(files[0])
    manifest = tfrecord.read_manifest(directory)
    size, k = int(manifest["image_size"]), int(manifest["num_joints"])
    tfrecord.check_shards(files, directory, on_corrupt, checksum=verify_checksums)
    seed = 0 if seed is None else int(seed)

    def per_file(path):
        ds = tf.data.TFRecordDataset(path)
        if on_corrupt == "skip":
            ds = ds.ignore_errors()
        ds = ds.map(lambda s: parse_frame(s, size, k))
        return _windows(ds, seq_len, window_shift or seq_len) if mode == "sequences" else ds

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if shuffle:  # mix shards for training
        ds = ds.interleave(per_file, cycle_length=min(len(files), 4), num_parallel_calls=AUTOTUNE,
                           deterministic=True)
    else:  # keep the recorded frame order (evaluation: predictions in test order)
        ds = ds.flat_map(per_file)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer if mode == "frames" else max(shuffle_buffer // seq_len, 8),
                        seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if augment or random_affine is not None:
        rng = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, rng)).map(
            lambda ex, s: augment_example(ex, s, size, paper=augment, affine=random_affine),
            num_parallel_calls=AUTOTUNE, deterministic=True)

    def to_model(ex):
        joints = tf.reshape(ex["joints"], tf.concat([tf.shape(ex["joints"])[:-2], [3 * k]], 0))
        target = {name: joints for name in output_names} if output_names else joints
        if include_meta:
            meta = {n: ex[n] for n in ("joints_xyz", "center_xyz", "center_uvd", "cube", "transform",
                                       "camera", "sequence_id", "frame_index")}
            return ex["crop"], target, meta
        return ex["crop"], target

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.map(to_model, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
