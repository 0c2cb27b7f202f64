"""Pre-processed TFRecord shards: write once (atomic, resumable, with a manifest), read fast.

Each record is one frame: the normalised crop as **float16** bytes (the manifest's ``crop_dtype``) (values lie in [-1, 1], so
float16's 11-bit mantissa keeps them to within 2^-11 * cube_z/2 = 0.07 mm for NYU's 300 mm cube,
far below the sensor's 1 mm step, at half the size of float32; uint16 would need a second
normalisation step in the reader), the cube-normalised joints, the joints in mm, what maps the crop
back to the camera (centre, cube, crop transform, camera intrinsics), and sequence/frame ids.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_cadstn import fileio
from keras_cadstn.config import PAPER_IMAGE_SIZE, SHARDS, CADSTNConfig
from keras_cadstn.data.frames import DatasetSpec, DatasetSplit
from keras_cadstn.data.preprocessing import normalize_joints, preprocess_frame
from keras_cadstn.errors import ConfigError, CorruptShardError, DataError, NoHandError
from keras_cadstn.fileio import file_sha256, read_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".convert.lock"
CROP_DTYPE = "float16"
# The record schema, declared once: name -> (kind, values per frame). "3K" = 3 x the joint count.
# ``occlusion`` (fraction of the hand's pixels hidden by an occluder or missing, 0 where the data set
# does not say) defaults to 0, so shards written before it existed still read.
FIELDS = {
    "crop": ("bytes", 1), "joints": ("float", "3K"), "joints_xyz": ("float", "3K"),
    "center_xyz": ("float", 3), "center_uvd": ("float", 3), "cube": ("float", 3), "transform": ("float", 9),
    "camera": ("float", 4), "sequence_id": ("int", 1), "frame_index": ("int", 1), "occlusion": ("float", 1),
}
DEFAULTS = {"occlusion": [0.0]}
META_FIELDS = tuple(n for n in FIELDS if n not in ("crop", "joints"))


def field_size(name: str, num_joints: int) -> int:
    size = FIELDS[name][1]
    return 3 * num_joints if size == "3K" else size


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def read_manifest(directory: str, require_complete: bool = False) -> dict:
    """The split's manifest; ``require_complete``: refuse a conversion that has not finished (its
    shards are a part of the split only)."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest not found (write shards with `cadstn convert`)")
    manifest = read_json(path)
    if require_complete and not manifest.get("complete"):
        raise DataError(f"{path}: the conversion did not finish ({len(manifest.get('shards', []))} of "
                        f"{manifest.get('num_shards', '?')} shards); run the same `cadstn convert` again to complete it")
    return manifest


def encode_example(values: dict, crop_dtype: str = CROP_DTYPE) -> bytes:
    """One frame as a serialised tf.train.Example with exactly the FIELDS; serialised
    deterministically (map order fixed), so the same data gives byte-identical shards."""
    feature = {}
    for name, (kind, _) in FIELDS.items():
        v = values[name]
        if kind == "bytes":
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.asarray(v).astype(crop_dtype).tobytes()]))
        elif kind == "float":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v).astype(np.float32)))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _convert_frame(split: DatasetSplit, frame, image_size: int) -> bytes:
    spec = split.spec
    depth = spec.camera.to_mm(split.read_depth(frame.path))
    ref = frame.joints_uvd[spec.reference_joint]
    crop, info = preprocess_frame(depth, ref, frame.cube, spec.camera, image_size,
                                  where=f"{frame.path} (frame {frame.frame_index})", centre_scale=spec.centre_scale)
    return encode_example({
        "crop": crop, "joints": normalize_joints(frame.joints_xyz, info.center_xyz, info.cube),
        "joints_xyz": frame.joints_xyz, "center_xyz": info.center_xyz, "center_uvd": info.center_uvd,
        "cube": info.cube, "transform": info.transform, "camera": spec.camera.intrinsics,
        "sequence_id": frame.sequence_id, "frame_index": frame.frame_index, "occlusion": frame.occlusion})


def check_image_size(image_size) -> int:
    """Crops must suit the networks: a positive multiple of their total pooling (4 x 2 x 2 = 16)."""
    try:
        CADSTNConfig(image_size=int(image_size))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"image size {image_size!r}: {e}") from None
    return int(image_size)


def conversion_lock(out_dir: str):
    """One conversion per folder at a time: a second one fails at once instead of sharing files."""
    return fileio.folder_lock(out_dir, LOCK, DataError(f"{out_dir}: another `cadstn convert` is writing to this "
                                                       f"folder; wait for it or choose another --out"))


def convert_split(split: DatasetSplit, out_dir: str, shards: int = SHARDS, image_size: int = PAPER_IMAGE_SIZE,
                  progress: bool = True) -> dict:
    """Pre-process a split into ``shards`` TFRecord files of consecutive frames.

    Each shard is written under a temporary name and renamed when complete; the manifest is
    rewritten (atomically) after every shard, so a killed conversion resumes from the first shard it
    lacks and a shard listed in the manifest is always whole. A resumed conversion keeps only the
    shards whose sha256 matches the manifest. Frames with no hand are skipped, reported, and listed
    in the manifest; a split where no frame converts is an error.
    """
    image_size = check_image_size(image_size)
    if int(shards) < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    if not split.frames:
        raise DataError(f"{split.split}: the split has no frames to convert")
    os.makedirs(out_dir, exist_ok=True)
    with conversion_lock(out_dir):
        return _convert_locked(split, out_dir, max(1, min(int(shards), len(split.frames))), image_size, progress, tf, tqdm)


def _convert_locked(split, out_dir, shards, image_size, progress, tf, tqdm) -> dict:
    manifest_path = os.path.join(out_dir, MANIFEST)
    header = {"dataset": split.spec.to_dict(), "split": split.split, "image_size": image_size,
              "num_joints": split.spec.num_joints, "crop_dtype": CROP_DTYPE, "fields": list(FIELDS),
              "num_shards": shards, "num_frames": len(split.frames)}
    manifest = dict(header, shards=[], skipped=[], complete=False)
    if os.path.isfile(manifest_path):
        old = read_manifest(out_dir)
        if all(old.get(k) == v for k, v in header.items()):
            manifest = dict(old, complete=False)  # same job: keep the shards it finished
    done = {s["file"]: s for s in manifest["shards"]
            if os.path.isfile(os.path.join(out_dir, s["file"]))
            and file_sha256(os.path.join(out_dir, s["file"])) == s["sha256"]}
    manifest["shards"] = list(done.values())
    manifest["skipped"] = [s for s in manifest["skipped"] if s.get("shard") in done]
    bounds = np.linspace(0, len(split.frames), shards + 1).astype(int)
    bar = tqdm(total=len(split.frames), desc=f"convert {split.split}", unit="frame", disable=not progress)
    for k in range(shards):
        name = shard_name(split.split, k, shards)
        frames = split.frames[bounds[k]:bounds[k + 1]]
        if name in done:
            bar.update(len(frames))
            continue
        path = os.path.join(out_dir, name)
        records, skipped = 0, []
        with fileio.atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
            for frame in frames:
                try:
                    writer.write(_convert_frame(split, frame, image_size))
                    records += 1
                except NoHandError as e:
                    skipped.append({"frame": frame.frame_index, "path": frame.path, "reason": str(e), "shard": name})
                    logger.warning("skipped: %s", e)
                bar.update(1)
        manifest["shards"].append({"file": name, "records": records, "bytes": os.path.getsize(path),
                                   "sha256": file_sha256(path), "first_frame": int(bounds[k]),
                                   "last_frame": int(bounds[k + 1] - 1)})
        manifest["skipped"] += skipped
        manifest["shards"].sort(key=lambda s: s["file"])
        fileio.write_json(manifest_path, manifest)
    bar.close()
    manifest["num_records"] = sum(s["records"] for s in manifest["shards"])
    if manifest["num_records"] == 0:
        fileio.write_json(manifest_path, manifest)
        raise DataError(f"{split.split}: no frame could be converted ({len(manifest['skipped'])} of "
                        f"{len(split.frames)} had no hand pixel in the cube around the labelled reference joint)")
    manifest["complete"] = True
    fileio.write_json(manifest_path, manifest)
    return manifest


def count_readable_records(path: str):
    """(records read before the first unreadable one, error message or None)."""
    n = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            n += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
        return n, e.message.splitlines()[0]
    return n, None


def verify_shards(files, manifest: dict, directory: str, checksum: bool = True) -> list:
    """Check each shard against the manifest; returns [(file, problem)] for the bad ones."""
    listed = {s["file"]: s for s in manifest["shards"]}
    problems = []
    for path in files:
        entry = listed.get(os.path.basename(path))
        if entry is None:
            problems.append((path, f"not listed in {os.path.join(directory, MANIFEST)}"))
        elif os.path.getsize(path) != entry["bytes"]:
            problems.append((path, f"{os.path.getsize(path)} bytes, manifest says {entry['bytes']}"))
        elif checksum and file_sha256(path) != entry["sha256"]:
            problems.append((path, "sha256 differs from the manifest (corrupt shard)"))
    return problems


def check_shards(files, directory: str, on_corrupt: str = "raise", checksum: bool = True):
    """Verify shards; raise ``CorruptShardError`` naming the shard, or (on_corrupt='skip') return
    {shard: (readable records, records lost)} for the bad ones, which are read up to the damage."""
    if on_corrupt not in ("raise", "skip"):
        raise ConfigError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
    manifest = read_manifest(directory, require_complete=True)
    problems = verify_shards(files, manifest, directory, checksum)
    if problems and on_corrupt == "raise":
        path, why = problems[0]
        raise CorruptShardError(f"{path}: {why}; pass on_corrupt='skip' to read what is intact")
    listed = {s["file"]: s["records"] for s in manifest["shards"]}
    report = {}
    for path, why in problems:
        readable, err = count_readable_records(path)
        lost = max(listed.get(os.path.basename(path), readable) - readable, 0)
        report[path] = (readable, lost)
        logger.warning("%s: %s; %d records readable, %d skipped%s", path, why, readable, lost,
                       f" ({err})" if err else "")
    return report


def dataset_spec_of(manifest: dict) -> DatasetSpec:
    return DatasetSpec.from_dict(manifest["dataset"])
