"""Running a trained CADSTN one frame at a time: the inference runtimes and the crops they are
checked on. Used by the tracker (which needs nothing else) and by the exporter (which checks what it
writes against the Keras model with the same runners).

- ``KerasFunction``: a Keras model as a NumPy callable (the centre refiner as
  ``refiner(crop) -> offset``).
- ``TFLiteRunner`` (LiteRT) and ``ONNXRunner`` (onnxruntime): an exported model called by input
  name. ``as_step`` turns any of the three, over a streaming step model, into one callable
  ``step(crop, h, c, motion) -> (joints, h', c')`` (``motion``: the crop centre's move since the
  last frame, passed on only where the model reads it).
- ``run_step_over_clips``: any ``step`` over clips from zero LSTM state.
- ``Samples`` / ``sample_clips``: real crops (test records or synthetic hands seen through the
  bundle's camera) for parity checks and int8 calibration.
"""
from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from keras_cadstn.config import cache_dir
from keras_cadstn.data.preprocessing import centre_motion, preprocess_frame
from keras_cadstn.data.splits import read_test_split
from keras_cadstn.data.synthetic import render_reference_frames
from keras_cadstn.errors import ConfigError, DataError, is_positive_int
from keras_cadstn.fileio import file_sha256
from keras_cadstn.models import uses_centre_motion
from keras_cadstn.models.bundle import MODEL_FILE, REFINER_FILE, low_rank_file


class KerasFunction:
    """A Keras model as a NumPy callable: ``fn(*inputs) -> [outputs]`` (the step model:
    ``fn(crop, h, c) -> [joints, h', c']``; the centre refiner: ``fn(crop) -> [offset]``), or a dict
    for a model with named outputs.

    On TensorFlow a ``tf.function`` (one trace per input shape; far less overhead per frame than
    ``predict_on_batch``); on JAX/torch the model's own compiled predict step.
    """
    def __init__(self, model):
        self.model = model

        def as_model_input(inputs):
            return list(inputs) if len(inputs) > 1 else inputs[0]
        if keras.backend.backend() == "tensorflow":
            self.fn = tf.function(lambda *inputs: model(as_model_input(inputs), training=False), reduce_retracing=True)
        else:
            self.fn = lambda *inputs: model.predict_on_batch(as_model_input(inputs))

    @property
    def input_names(self) -> list:
        return [t.name.split(":")[0] for t in self.model.inputs]

    def __call__(self, *inputs):
        outputs = self.fn(*inputs)
        if isinstance(outputs, dict):  # a model with named outputs (the hand detector)
            return {name: np.asarray(o) for name, o in outputs.items()}
        return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


class TFLiteRunner:
    """A LiteRT interpreter over an exported model, called by input name (signature runner)."""
    def __init__(self, path_or_bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        kw = {"model_path": path_or_bytes} if isinstance(path_or_bytes, str) else {"model_content": path_or_bytes}
        self.interpreter = Interpreter(num_threads=num_threads, **kw)
        self.runner = self.interpreter.get_signature_runner()

    @property
    def input_names(self) -> list:
        return list(self.runner.get_input_details())

    def __call__(self, **inputs) -> dict:
        return self.runner(**{k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()})


class ONNXRunner:
    """onnxruntime over an exported model, called by input name."""
    def __init__(self, path: str, num_threads: int | None = None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> list:
        return [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs) -> dict:
        feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))


RUNNERS = {"tflite": TFLiteRunner, "onnx": ONNXRunner}


def check_fc_rank(fc_rank) -> int | None:
    """None (full rank) or a rank >= 1 as an int; ``ConfigError`` otherwise."""
    if fc_rank is None:
        return None
    if not is_positive_int(fc_rank):
        raise ConfigError(f"fc_rank must be None (full rank) or an integer >= 1, got {fc_rank!r}")
    return int(fc_rank)


def artifact_name(backend: str, precision: str = "float32", which: str = "step", fc_rank: int | None = None) -> str:
    """The file name of an exported model: ``step_int8.tflite``, ``spatial.onnx``; with low-rank fc
    layers ``step_int8_rank128.tflite``, ``step_rank128.onnx``."""
    rank = "" if fc_rank is None else f"_rank{fc_rank}"
    return f"{which}_{precision}{rank}.tflite" if backend == "tflite" else f"{which}{rank}.onnx"


# raised whenever what the exporter writes for the same Keras model changes, so that the cache does
# not hand out artifacts of an older exporter (2: dynamic_int8 with float weights at full resolution)
EXPORT_FORMAT = 2


def artifact_path(bundle, backend: str, precision: str = "float32", which: str = "step",
                  fc_rank: int | None = None) -> str:
    """Where the exported ``which`` model ('step', or 'refine': the centre refiner) of ``bundle`` for
    ``backend``/``precision`` (``fc_rank``: the bundle's step with low-rank fc layers) lives in the
    cache, keyed by the content of the Keras file it comes from (a retrained bundle or a step made
    again gets a new entry) and by ``EXPORT_FORMAT``."""
    source = os.path.join(bundle.path, REFINER_FILE if which == "refine" else
                          MODEL_FILE if fc_rank is None else low_rank_file(fc_rank))
    return os.path.join(cache_dir(), "exports", f"{file_sha256(source)[:20]}_format{EXPORT_FORMAT}",
                        artifact_name(backend, precision, which, fc_rank))


def as_step(runner):
    """A streaming step model's runner (``KerasFunction``, TFLite, ONNX) as ``step(crop, h, c,
    motion) -> (joints, h', c')``; ``motion`` (B, 3), the crop centre's cube-normalised move since
    the previous frame, goes to a model with a ``centre_motion`` input and is ignored otherwise."""
    reads_motion = "centre_motion" in runner.input_names
    if isinstance(runner, KerasFunction):  # positional, in the model's input order
        def step(crop, h, c, motion):
            return tuple(runner(crop, h, c, motion) if reads_motion else runner(crop, h, c))
        return step

    def step(crop, h, c, motion):
        out = runner(crop=crop, lstm_h=h, lstm_c=c, **({"centre_motion": motion} if reads_motion else {}))
        return out["joints"], out["lstm_h_out"], out["lstm_c_out"]
    return step


def as_refiner(runner):
    """A runner of an exported centre refiner (or a ``KerasFunction``) as ``refiner(crop) -> offset``."""
    if isinstance(runner, KerasFunction):
        return lambda crop: runner(crop)[0]
    return lambda crop: runner(crop=crop)["offset"]


def run_step_over_clips(step, units: int, samples: "Samples", clips_at_once: bool = True) -> np.ndarray:
    """A one-frame step ``step(crop, h, c, motion) -> (joints, h', c')`` (``as_step``) over each clip
    from zero LSTM state: (B, T, 3K). ``clips_at_once`` feeds all B clips as one batch per frame;
    otherwise clip by clip with batch 1 (artifacts exported with a fixed batch)."""
    motion = samples.motion
    groups = ([(samples.clips, motion)] if clips_at_once
              else [(clip[None], m[None]) for clip, m in zip(samples.clips, motion)])
    out = []
    for clips, moves in groups:
        h = np.zeros((len(clips), units), np.float32)
        c = np.zeros((len(clips), units), np.float32)
        joints = []
        for i in range(clips.shape[1]):
            j, h, c = step(clips[:, i], h, c, moves[:, i])
            joints.append(np.asarray(j))
        out.append(np.stack(joints, axis=1))
    return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Samples:
    """Real crops to check artifacts on: ``clips`` (B, T, M, M, 1) with their centre/cube (B, T, 3)."""
    clips: np.ndarray
    center_xyz: np.ndarray
    cube: np.ndarray

    @property
    def crops(self) -> np.ndarray:
        return self.clips.reshape((-1,) + self.clips.shape[2:])

    def clip_inputs(self, model):
        """What a clip model (the CADSTN, the temporal network) reads of these samples: the clips,
        and the centre motion where it has that input."""
        return [self.clips, self.motion] if uses_centre_motion(model) else self.clips

    @property
    def motion(self) -> np.ndarray:
        """(B, T, 3) the crop centre's motion within each clip (``preprocessing.centre_motion``)."""
        return np.stack([centre_motion(c, q) for c, q in zip(self.center_xyz, self.cube)])

    def refiner_crops(self, size: int) -> np.ndarray:
        """The crops resampled to the centre refiner's ``size`` (nearest pixel, as the pre-processing
        resamples): (B*T, S, S, 1)."""
        m = self.clips.shape[2]
        idx = np.clip(np.rint((np.arange(size) + 0.5) * m / size - 0.5), 0, m - 1).astype(np.int64)
        return np.ascontiguousarray(self.crops[:, idx][:, :, idx])


def sample_clips(bundle, num_clips: int = 2, records: str | None = None, seed: int = 7) -> Samples:
    """Clips of T consecutive crops: from a TFRecord split (``records`` glob) or, by default, from a
    synthetic hand sequence rendered with the bundle's own camera and pre-processed like the tracker."""
    t, m = bundle.seq_len, bundle.image_size
    if records:
        crops, meta = read_test_split(records)
        if crops.shape[1:3] != (m, m):
            raise DataError(f"{records}: records of {crops.shape[1]}x{crops.shape[2]} crops, the bundle's networks read "
                            f"{m}x{m}: convert the data with --image-size {m}")
        n = (len(crops) // t) * t
        if n < t:
            raise DataError(f"{records}: {len(crops)} records, fewer than one clip of T={t}")
        n = min(n, num_clips * t)
        return Samples(crops[:n].reshape(-1, t, m, m, 1), meta["center_xyz"][:n].reshape(-1, t, 3),
                       meta["cube"][:n].reshape(-1, t, 3))
    cam, spec = bundle.camera, bundle.spec
    crops, centres = [], []
    for i, (depth_mm, _, ref_uvd) in enumerate(render_reference_frames(spec, num_clips * t, seed)):
        crop, info = preprocess_frame(depth_mm, ref_uvd, spec.cube, cam, m, where=f"synthetic frame {i}",
                                      centre_scale=spec.centre_scale)
        crops.append(crop)
        centres.append(info.center_xyz)
    cube = np.broadcast_to(np.asarray(spec.cube, np.float32), (num_clips * t, 3))
    return Samples(np.asarray(crops, np.float32).reshape(num_clips, t, m, m, 1),
                   np.asarray(centres, np.float32).reshape(num_clips, t, 3), cube.reshape(num_clips, t, 3).copy())
