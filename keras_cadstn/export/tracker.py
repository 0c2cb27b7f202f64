"""What a tracker and a deployment need from a bundle: its step (and refiner) exported once into the cache,
or every artifact into a folder, each verified against Keras."""
from __future__ import annotations

import logging
import os

from keras_cadstn import fileio
from keras_cadstn.config import PARITY_CLIPS
from keras_cadstn.errors import ConfigError, ParityError
from keras_cadstn.export.artifacts import MODELS, PRECISIONS
from keras_cadstn.export.onnx_export import export_onnx
from keras_cadstn.export.saved_model import export_saved_model
from keras_cadstn.export.tflite import export_tflite
from keras_cadstn.fileio import file_sha256
from keras_cadstn.tracking.runtime import Samples, artifact_name, artifact_path, check_fc_rank, sample_clips

logger = logging.getLogger(__name__)


def export_step(bundle, backend: str = "tflite", precision: str = "float32", path: str | None = None,
                samples: Samples | None = None, which: str = "step", calibration: Samples | None = None,
                fc_rank: int | None = None) -> str:
    """A model the tracker runs on ``backend`` ('tflite' or 'onnx'): the streaming step (``fc_rank``:
    with low-rank fc layers), or (``which='refine'``) the centre refiner, exported and verified once
    into the cache (``runtime.artifact_path``) or to ``path``; returns its path."""
    fc_rank = check_fc_rank(fc_rank) if which != "refine" else None
    cached = path is None
    path = path or artifact_path(bundle, backend, precision, which, fc_rank)
    if cached and os.path.isfile(path) and not cache_entry_intact(path):
        logger.warning("%s: damaged or not made here (its sha256 differs from the recorded one): exporting again", path)
        fileio.remove(path)
    if not os.path.isfile(path):
        if backend == "tflite":
            export_tflite(bundle, path, which, precision, samples, calibration, fc_rank)
        elif backend == "onnx" and precision == "float32":
            export_onnx(bundle, path, which, samples=samples, fc_rank=fc_rank)
        else:
            raise ConfigError(f"no exported {which} model for backend {backend!r} at {precision!r} "
                              f"(tflite: {PRECISIONS}; onnx: float32)")
        if cached:
            fileio.write_text(path + HASH_SUFFIX, file_sha256(path))
    return path


HASH_SUFFIX = ".sha256"  # beside each cached export: what it was when it was written and verified


def cache_entry_intact(path: str) -> bool:
    """Whether a cached export is the file that was verified (a truncated or swapped file is not)."""
    record = path + HASH_SUFFIX
    return os.path.isfile(record) and open(record).read().strip() == file_sha256(path)


def export_for_tracker(bundle, backend: str = "tflite", precision: str = "float32", directory: str | None = None,
                       samples: Samples | None = None, calibration: Samples | None = None,
                       fc_rank: int | None = None) -> dict:
    """Everything ``HandTracker(bundle, backend, precision, fc_rank=fc_rank, **paths)`` runs, exported
    and verified: {'model_path': the step, 'refiner_path': the centre refiner or None}; into the
    cache, or into ``directory`` when given (an artifact already in either is used as it is). Parity
    is checked on ``samples``, int8 calibrated on ``calibration`` (default: ``samples``). Nothing for
    the Keras backend."""
    fc_rank = check_fc_rank(fc_rank)
    if backend == "keras":
        return {"model_path": None, "refiner_path": None}
    samples = samples or sample_clips(bundle)

    def place(which):  # the refiner is never low-rank
        rank = fc_rank if which == "step" else None
        return None if directory is None else os.path.join(directory, artifact_name(backend, precision, which, rank))
    return {"model_path": export_step(bundle, backend, precision, place("step"), samples, "step", calibration,
                                      fc_rank),
            "refiner_path": export_step(bundle, backend, precision, place("refine"), samples, "refine", calibration)
            if bundle.refiner is not None else None}


def export_all(bundle, out_dir: str, records: str | None = None, precisions=PRECISIONS, onnx: bool = True,
               saved_model: bool = True, progress: bool = True, num_clips: int = PARITY_CLIPS,
               calibration_records: str | None = None, fc_rank: int | None = None) -> list:
    """Every artifact of a bundle under ``out_dir``; returns (reports, refusals), printed as they come.
    Parity checks use ``num_clips`` clips of T crops (of ``records`` if given); int8 calibration
    uses as many clips of ``calibration_records`` (e.g. the train split; default: the parity clips).
    ``fc_rank``: the TFLite/ONNX pose models (spatial, step) with low-rank fc layers, named
    ``..._rank<r>``; the SavedModel and the centre refiner stay as trained."""
    fc_rank = check_fc_rank(fc_rank)
    if fc_rank is not None:
        bundle.low_rank_step(fc_rank)  # no such step: fail before anything is written
    samples = sample_clips(bundle, num_clips=num_clips, records=records)
    calibration = sample_clips(bundle, num_clips=num_clips, records=calibration_records) if calibration_records else None
    reports = []

    def done(r):
        reports.append(r)
        if progress:
            print(r.line(), flush=True)

    def attempt(make):
        try:
            done(make())
        except ParityError as e:  # refused artifacts are reported, the others still exported
            refused.append(str(e))
            if progress:
                print(f"REFUSED {e}", flush=True)

    refused = []
    if saved_model:
        attempt(lambda: export_saved_model(bundle, os.path.join(out_dir, "saved_model"), samples=samples))
    for which in MODELS:
        if which == "refine" and bundle.refiner is None:
            continue
        rank = None if which == "refine" else fc_rank
        for precision in precisions:
            attempt(lambda: export_tflite(bundle, os.path.join(out_dir, artifact_name("tflite", precision, which, rank)),
                                          which, precision, samples, calibration, rank))
        if onnx:
            attempt(lambda: export_onnx(bundle, os.path.join(out_dir, artifact_name("onnx", "float32", which, rank)),
                                        which, samples=samples, fc_rank=rank))
    return reports, refused
