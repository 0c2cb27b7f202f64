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

from keras_cadstn.config import InputConfig, RandomAffine
from keras_cadstn.data import tfrecord
from keras_cadstn.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
# The paper's NYU augmentation: identity, rot90 (CCW), rot -90, rot180, horizontal flip, vertical
# flip, as 2x2 maps of centred crop pixel coordinates (a = col - mid, b = row - mid).
DISCRETE_TRANSFORMS = (((1, 0), (0, 1)), ((0, 1), (-1, 0)), ((0, -1), (1, 0)), ((-1, 0), (0, -1)),
                       ((-1, 0), (0, 1)), ((1, 0), (0, -1)))


def feature_spec(num_joints: int) -> dict:
    """tf.io parsing spec of one record, from the schema in ``tfrecord.FIELDS``."""
    types = {"bytes": tf.string, "float": tf.float32, "int": tf.int64}
    spec = {}
    for name, (kind, _) in tfrecord.FIELDS.items():
        shape = [] if kind in ("bytes", "int") else [tfrecord.field_size(name, num_joints)]
        spec[name] = tf.io.FixedLenFeature(shape, types[kind], default_value=tfrecord.DEFAULTS.get(name))
    return spec


def parse_frame(serialized, image_size: int, num_joints: int, crop_dtype: str = tfrecord.CROP_DTYPE,
                source="") -> dict:
    """One serialised record -> dict of tensors; crop (M, M, 1) float32, joints (K, 3).

    A crop or label that is not finite, or a crop outside [-1, 1] (what the pre-processing writes),
    stops the pipeline with an error naming ``source`` (the shard) and the frame.
    """
    ex = tf.io.parse_single_example(serialized, feature_spec(num_joints))
    crop = tf.io.decode_raw(ex["crop"], tf.as_dtype(crop_dtype))
    tf.debugging.assert_equal(tf.size(crop), image_size * image_size,
                              message=f"record's crop is not {image_size}x{image_size}")
    crop = tf.cast(crop, tf.float32)
    sane = tf.reduce_all(tf.abs(crop) <= 1.001) & tf.reduce_all(tf.math.is_finite(ex["joints"]))
    with tf.control_dependencies([tf.debugging.Assert(sane, [BAD_RECORD, source, "frame", ex["frame_index"]])]):
        ex["crop"] = tf.reshape(crop, [image_size, image_size, 1])
    ex["occlusion"] = ex["occlusion"][0]
    ex["joints"] = tf.reshape(ex["joints"], [num_joints, 3])
    ex["joints_xyz"] = tf.reshape(ex["joints_xyz"], [num_joints, 3])
    ex["transform"] = tf.reshape(ex["transform"], [3, 3])
    return ex


BAD_RECORD = "record with NaN/inf or out-of-range values (crops must lie in [-1, 1]):"


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
    if "previous_centre" in ex:
        # the centre's move as the transformed crops show it: the previous centre mapped like a joint
        # of this frame, minus the previous frame's own centre mapped by its crop's transform (zero
        # but for a shift, which both frames share and which so cancels)
        points = tf.stack([ex["previous_centre"], tf.zeros_like(ex["previous_centre"])], axis=-2)
        moved = transform_joints({**ex, "joints": points}, matrix, shift, image_size)
        own = moved[..., 1, :]
        ex["previous_centre"] = moved[..., 0, :] - tf.concat([own[:1], own[:-1]], 0)
    return ex


def add_previous_centre(ex: dict) -> dict:
    """A window's previous crop centre in each frame's normalised coordinates, (T, 3):
    (centre_t-1 - centre_t) / (cube / 2), zero at the window's first frame (the LSTM starts there
    with no past). Augmentation maps it like a joint; the model reads its negative, the motion."""
    centre, half = ex["center_xyz"], ex["cube"] / 2.0
    return {**ex, "previous_centre": (tf.concat([centre[:1], centre[:-1]], 0) - centre) / half}


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
        raise DataError(f"no TFRecord shards match {pattern!r}")
    return files


def make_dataset(pattern: str, config: InputConfig | None = None, **changes):
    """Stream pre-processed shards as ``(crops, joints)`` (or ``(crops, joints, meta)``); see
    ``InputConfig`` (``changes`` replace its fields). The dataset is deterministic for a given seed
    (multi-worker training relies on it: see ``num_shards``). Refuses an unfinished conversion and
    shards that fail their checksum.
    """
    cfg = dataclasses.replace(config or InputConfig(), **changes)
    files = list_shards(pattern)
    directory = os.path.dirname(files[0])
    manifest = tfrecord.read_manifest(directory, require_complete=True)
    size, k = int(manifest["image_size"]), int(manifest["num_joints"])
    crop_dtype = manifest.get("crop_dtype", tfrecord.CROP_DTYPE)
    tfrecord.check_shards(files, directory, cfg.on_corrupt, checksum=cfg.verify_checksums)
    seq_len = cfg.seq_len

    def per_file(path):
        ds = tf.data.TFRecordDataset(path)
        if cfg.on_corrupt == "skip":
            ds = ds.ignore_errors()
        ds = ds.map(lambda s: parse_frame(s, size, k, crop_dtype, path))
        if cfg.mode != "sequences":
            return ds
        ds = _windows(ds, seq_len, cfg.window_shift or seq_len)
        return ds.map(add_previous_centre) if cfg.centre_motion else ds

    ds = tf.data.Dataset.from_tensor_slices(files)
    if cfg.shuffle:  # mix shards for training
        ds = ds.shuffle(len(files), seed=cfg.seed, reshuffle_each_iteration=True)
        ds = ds.interleave(per_file, cycle_length=min(len(files), 4), num_parallel_calls=AUTOTUNE,
                           deterministic=True)
    else:  # keep the recorded frame order (evaluation: predictions in test order)
        ds = ds.flat_map(per_file)
    if cfg.cache:
        ds = ds.cache()
    if cfg.shuffle:
        ds = ds.shuffle(cfg.shuffle_buffer if cfg.mode == "frames" else max(cfg.shuffle_buffer // seq_len, 8),
                        seed=cfg.seed, reshuffle_each_iteration=True)
    if cfg.repeat:
        ds = ds.repeat()
    augmented = cfg.augment or cfg.random_affine is not None
    if augmented:  # each element's seed is drawn before sharding: a shard augments as the whole would
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).batch(2)))
    if cfg.num_shards > 1:
        ds = ds.shard(cfg.num_shards, cfg.shard_index)
    if augmented:
        ds = ds.map(lambda ex, s: augment_example(ex, s, size, paper=cfg.augment, affine=cfg.random_affine),
                    num_parallel_calls=AUTOTUNE, deterministic=True)

    def to_model(ex):
        joints = tf.reshape(ex["joints"], tf.concat([tf.shape(ex["joints"])[:-2], [3 * k]], 0))
        target = {name: joints for name in cfg.output_names} if cfg.output_names else joints
        inputs = {"clip": ex["crop"], "centre_motion": -ex["previous_centre"]} if cfg.centre_motion else ex["crop"]
        if cfg.include_meta:
            return inputs, target, {n: ex[n] for n in tfrecord.META_FIELDS}
        return inputs, target

    ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.map(to_model, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
