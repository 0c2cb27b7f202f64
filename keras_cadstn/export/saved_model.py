"""The SavedModel for TF Serving: whole clips and single frames in, joints in camera mm out, the centre
refiner beside them."""
from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_cadstn import fileio
from keras_cadstn.data.preprocessing import joints_to_mm
from keras_cadstn.export.artifacts import ExportReport, artifact_size, check_and_publish, errors_mm
from keras_cadstn.models import uses_centre_motion
from keras_cadstn.models.bundle import SPEC_FILE
from keras_cadstn.tracking.runtime import Samples, sample_clips


def export_saved_model(bundle, out_dir: str, name: str = "cadstn", version: int = 1,
                       samples: Samples | None = None) -> ExportReport:
    """Write ``<out_dir>/<name>/<version>/`` (TF Serving layout); the report's path is that folder.

    The version folder appears only once complete and verified (TF Serving watches ``<name>/`` and
    would otherwise load a half-written version).
    """
    m, t, k = bundle.image_size, bundle.seq_len, bundle.spec.num_joints
    model, spatial = bundle.model, bundle.spatial_model()

    def to_mm(norm, center, cube):
        joints = tf.reshape(norm, tf.concat([tf.shape(norm)[:-1], [k, 3]], 0))
        return joints * (cube[..., None, :] / 2.0) + center[..., None, :]

    reads_motion = uses_centre_motion(model)

    def predict_sequence(clips, center_xyz, cube):
        if reads_motion:  # the centres' frame-to-frame move, zero at each clip's first frame
            moved = (center_xyz[:, 1:] - center_xyz[:, :-1]) / (cube[:, 1:] / 2.0)
            norm = model([clips, tf.concat([tf.zeros_like(moved[:, :1]), moved], 1)], training=False)
        else:
            norm = model(clips, training=False)
        return {"joints_mm": to_mm(norm, center_xyz, cube), "joints_normalized": norm}

    def predict_frames(crops, center_xyz, cube):
        norm = spatial(crops, training=False)
        return {"joints_mm": to_mm(norm, center_xyz, cube), "joints_normalized": norm}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("predict_sequence", predict_sequence, input_signature=[
        tf.TensorSpec((None, t, m, m, 1), tf.float32, name="clips"),
        tf.TensorSpec((None, t, 3), tf.float32, name="center_xyz"),
        tf.TensorSpec((None, t, 3), tf.float32, name="cube")])
    archive.add_endpoint("predict_frames", predict_frames, input_signature=[
        tf.TensorSpec((None, m, m, 1), tf.float32, name="crops"),
        tf.TensorSpec((None, 3), tf.float32, name="center_xyz"),
        tf.TensorSpec((None, 3), tf.float32, name="cube")])
    refiner = bundle.refiner
    if refiner is not None:
        archive.track(refiner)
        s = bundle.refiner_config.image_size

        def refine_centre(crops, cube):
            norm = refiner(crops, training=False)
            return {"offset_mm": norm * cube / 2.0, "offset_normalized": norm}
        archive.add_endpoint("refine_centre", refine_centre, input_signature=[
            tf.TensorSpec((None, s, s, 1), tf.float32, name="crops"),
            tf.TensorSpec((None, 3), tf.float32, name="cube")])

    path = os.path.join(out_dir, name, str(int(version)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = fileio.temporary_path(path)
    fileio.remove(tmp)
    archive.write_out(tmp, verbose=False)
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    shutil.copy(os.path.join(bundle.path, SPEC_FILE), os.path.join(tmp, "assets.extra", SPEC_FILE))

    samples = samples or sample_clips(bundle)
    loaded = tf.saved_model.load(tmp)
    seq = loaded.signatures["predict_sequence"](clips=tf.constant(samples.clips), center_xyz=tf.constant(samples.center_xyz),
                                                cube=tf.constant(samples.cube))
    frames = loaded.signatures["predict_frames"](crops=tf.constant(samples.crops),
                                                 center_xyz=tf.constant(samples.center_xyz.reshape(-1, 3)),
                                                 cube=tf.constant(samples.cube.reshape(-1, 3)))
    ref_seq = model.predict_on_batch(samples.clip_inputs(model))
    ref_frames = spatial.predict_on_batch(samples.crops)
    errs = [errors_mm(ref_seq, seq["joints_normalized"].numpy(), samples.cube),
            errors_mm(ref_frames, frames["joints_normalized"].numpy(), samples.cube)]
    if refiner is not None:
        crops, cube = samples.refiner_crops(bundle.refiner_config.image_size), samples.cube.reshape(-1, 3)
        refined = loaded.signatures["refine_centre"](crops=tf.constant(crops), cube=tf.constant(cube))
        ref_offset = refiner.predict_on_batch(crops)
        errs.append(errors_mm(ref_offset, refined["offset_normalized"].numpy(), samples.cube))
        errs.append((float(np.abs(refined["offset_mm"].numpy() - ref_offset * cube / 2.0).max()), 0.0))
    # the mm outputs must be the normalised ones mapped back with the same centre/cube
    mm_err = np.abs(seq["joints_mm"].numpy() - joints_to_mm(ref_seq, samples.center_xyz, samples.cube)).max()
    report = ExportReport(path, "saved_model", "cadstn", "float32", max(max(e[0] for e in errs), float(mm_err)),
                          float(np.mean([e[1] for e in errs])), artifact_size(tmp))
    return check_and_publish(report, tmp)
