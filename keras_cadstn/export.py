"""Deployable artifacts of a bundle, each checked against the Keras model before it is reported.

- SavedModel in TF Serving's layout ``<dir>/<name>/<version>/`` with two signatures:
    ``predict_sequence`` (also ``serving_default``): ``clips`` (B, T, M, M, 1), ``center_xyz``
      (B, T, 3), ``cube`` (B, T, 3) -> ``joints_mm`` (B, T, K, 3), ``joints_normalized`` (B, T, 3K)
    ``predict_frames`` (the spatial network): ``crops`` (B, M, M, 1), ``center_xyz`` (B, 3),
      ``cube`` (B, 3) -> ``joints_mm`` (B, K, 3), ``joints_normalized`` (B, 3K)
  Crops are normalised depth ((d - centre_z) / (cube_z / 2), +1 for background, as the bundle's
  JSON says); centre/cube are the crop's (mm), so outputs come back in camera mm. The bundle's JSON
  is copied to ``assets.extra/bundle.json``.
- TFLite (LiteRT) float32 / float16 / dynamic_int8 (int8 weights) / int8 (full-integer) of the spatial network (``spatial``) and of one
  streaming CADSTN step (``step``: crop + LSTM state -> fused joints + new state), batch 1 (the
  LSTM step converts to builtin ops only with a static batch; STACK.md).
- ONNX (tf2onnx, opset >= 17) of the same two models, dynamic batch, run with onnxruntime.
TFLite and ONNX convert the models with the sliced branch's linear convolution pairs folded into
one (``fold_sliced_convolutions``: same function, fewer multiply-adds).

Every function writes to a temporary name, runs the artifact on real crops (synthetic hands rendered
with the bundle's camera, or test TFRecords), compares with Keras in mm and only then renames into
place; past the tolerance it raises ``ParityError`` and leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np

# Largest allowed |artifact - Keras| in mm (float32: the 0.01 mm; reduced precisions are
# reported and only guarded against gross breakage).
TOLERANCE_MM = {"float32": 0.01, "float16": 2.0, "dynamic_int8": 5.0, "int8": 25.0}
PRECISIONS = tuple(TOLERANCE_MM)
MODELS = ("spatial", "step")


class ParityError(RuntimeError):
    """An exported artifact does not compute what the Keras model computes."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: str
    fmt: str  # saved_model | tflite | onnx
    model: str  # cadstn | spatial | step
    precision: str
    max_abs_mm: float
    mean_abs_mm: float
    size_bytes: int

    def line(self) -> str:
        return (f"{self.fmt:11s} {self.model:8s} {self.precision:8s} max |err| {self.max_abs_mm:.5f} mm, "
                f"mean {self.mean_abs_mm:.5f} mm, {self.size_bytes / 1e6:.2f} MB -> {self.path}")


# ----------------------------------------------------------------------------- parity inputs

@dataclasses.dataclass(frozen=True)
class Samples:
    """Real crops to check artifacts on: ``clips`` (B, T, M, M, 1) with their centre/cube (B, T, 3)."""

    clips: np.ndarray
    center_xyz: np.ndarray
    cube: np.ndarray

    @property
    def crops(self) -> np.ndarray:
        return self.clips.reshape((-1,) + self.clips.shape[2:])


def sample_clips(bundle, num_clips: int = 2, records: str | None = None, seed: int = 7) -> Samples:
    """Clips of T consecutive crops: from a TFRecord split (``records`` glob) or, by default, from a
    synthetic hand sequence rendered with the bundle's own camera and pre-processed like the tracker."""
    t, m = bundle.seq_len, bundle.image_size
    if records:
        from keras_cadstn.evaluate import read_test_split
        crops, meta = read_test_split(records)
        n = (len(crops) // t) * t
        if n < t:
            raise ValueError(f"{records}: {len(crops)} records, fewer than one clip of T={t}")
        n = min(n, num_clips * t)
        return Samples(crops[:n].reshape(-1, t, m, m, 1), meta["center_xyz"][:n].reshape(-1, t, 3),
                       meta["cube"][:n].reshape(-1, t, 3))
    from keras_cadstn.data.frames import NYU_EVAL_JOINTS
    from keras_cadstn.data.synthetic import SequenceRenderer, SynthConfig
    from keras_cadstn.preprocessing import preprocess_frame
    cam, spec = bundle.camera, bundle.spec
    renderer = SequenceRenderer(seed, SynthConfig(camera=cam))
    crops, centres = [], []
    for i in range(num_clips * t):
        depth_mm, joints_xyz = renderer.render(i)
        # the renderer's 36 joints are NYU's layout: the reference joint is found through it
        ref = joints_xyz[NYU_EVAL_JOINTS[spec.reference_joint]] if spec.name == "nyu" else joints_xyz.mean(0)
        crop, info = preprocess_frame(depth_mm, cam.xyz_to_uvd(ref), spec.cube, cam, m, where=f"synthetic frame {i}")
        crops.append(crop)
        centres.append(info.center_xyz)
    cube = np.broadcast_to(np.asarray(spec.cube, np.float32), (num_clips * t, 3))
    return Samples(np.asarray(crops, np.float32).reshape(num_clips, t, m, m, 1),
                   np.asarray(centres, np.float32).reshape(num_clips, t, 3), cube.reshape(num_clips, t, 3).copy())


def _errors_mm(reference_norm, artifact_norm, cube) -> tuple:
    """Max and mean |difference| in mm of two cube-normalised (..., 3K) predictions."""
    a = np.asarray(reference_norm, np.float64)
    b = np.asarray(artifact_norm, np.float64).reshape(a.shape)
    half = np.asarray(cube, np.float64).reshape(-1, 3)[0] / 2.0
    diff = np.abs(a - b).reshape(a.shape[:-1] + (-1, 3)) * half
    return float(diff.max()), float(diff.mean())


def _check(report: ExportReport, tmp_path: str) -> ExportReport:
    limit = TOLERANCE_MM[report.precision]
    if not np.isfinite(report.max_abs_mm) or report.max_abs_mm > limit:
        _remove(tmp_path)
        raise ParityError(f"{report.fmt} {report.model} {report.precision}: max |error| {report.max_abs_mm:.4f} mm "
                          f"(mean {report.mean_abs_mm:.4f} mm) against the Keras model exceeds {limit} mm; "
                          f"nothing written")
    return report


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _publish(tmp_path: str, path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp_path, path)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# ----------------------------------------------------------------------------- Keras references

def run_step_over_clips(step, units: int, samples: Samples, clips_at_once: bool = True) -> np.ndarray:
    """A one-frame step ``step(crop, h, c) -> (joints, h', c')`` over each clip from zero LSTM state:
    (B, T, 3K). ``clips_at_once`` feeds all B clips as one batch per frame; otherwise clip by clip
    with batch 1 (artifacts exported with a fixed batch)."""
    groups = [samples.clips] if clips_at_once else [clip[None] for clip in samples.clips]
    out = []
    for clips in groups:
        h = np.zeros((len(clips), units), np.float32)
        c = np.zeros((len(clips), units), np.float32)
        joints = []
        for i in range(clips.shape[1]):
            j, h, c = step(clips[:, i], h, c)
            joints.append(np.asarray(j))
        out.append(np.stack(joints, axis=1))
    return np.concatenate(out).astype(np.float32)


def keras_step(step_model):
    return lambda crop, h, c: [np.asarray(o) for o in step_model.predict_on_batch([crop, h, c])]


# ----------------------------------------------------------------------------- SavedModel

def export_saved_model(bundle, out_dir: str, name: str = "cadstn", version: int = 1,
                       samples: Samples | None = None) -> ExportReport:
    """Write ``<out_dir>/<name>/<version>/`` (TF Serving layout); the report's path is that folder.

    The version folder appears only once complete and verified (TF Serving watches ``<name>/`` and
    would otherwise load a half-written version).
    """
    import keras
    import tensorflow as tf

    from keras_cadstn.bundle import SPEC_FILE

    m, t, k = bundle.image_size, bundle.seq_len, bundle.spec.num_joints
    model, spatial = bundle.model, bundle.spatial_model()

    def to_mm(norm, center, cube):
        joints = tf.reshape(norm, tf.concat([tf.shape(norm)[:-1], [k, 3]], 0))
        return joints * (cube[..., None, :] / 2.0) + center[..., None, :]

    def predict_sequence(clips, center_xyz, cube):
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

    path = os.path.join(out_dir, name, str(int(version)))
    tmp = os.path.join(out_dir, name, f".{int(version)}.tmp")
    _remove(tmp)
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
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
    ref_seq = model.predict_on_batch(samples.clips)
    ref_frames = spatial.predict_on_batch(samples.crops)
    errs = [_errors_mm(ref_seq, seq["joints_normalized"].numpy(), samples.cube),
            _errors_mm(ref_frames, frames["joints_normalized"].numpy(), samples.cube)]
    # the mm outputs must be the normalised ones mapped back with the same centre/cube
    from keras_cadstn.preprocessing import joints_to_mm
    mm_err = np.abs(seq["joints_mm"].numpy() - joints_to_mm(ref_seq, samples.center_xyz, samples.cube)).max()
    report = ExportReport(path, "saved_model", "cadstn", "float32", max(max(e[0] for e in errs), float(mm_err)),
                          float(np.mean([e[1] for e in errs])), _size(tmp))
    _check(report, tmp)
    _publish(tmp, path)
    return dataclasses.replace(report, size_bytes=_size(path))


# ----------------------------------------------------------------------------- TFLite

def _input_specs(keras_model, batch):
    import tensorflow as tf
    return [tf.TensorSpec((batch,) + tuple(x.shape[1:]), tf.float32, name=x.name.split(":")[0])
            for x in keras_model.inputs]


def _output_names(keras_model) -> list:
    return ["joints", "lstm_h_out", "lstm_c_out"][:len(keras_model.outputs)]


def _named_tf_function(keras_model):
    """The Keras model as a tf.function with named outputs (inputs are named by their specs)."""
    import tensorflow as tf
    names = _output_names(keras_model)

    def fn(*args):
        outs = keras_model(list(args) if len(args) > 1 else args[0], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: tf.identity(o, name=n) for n, o in zip(names, outs)}

    return tf.function(fn)


def keras_artifact_model(bundle, which: str, folded: bool = False):
    """The Keras model of an artifact: the one it is checked against or, ``folded``, what is
    converted: the same function with the sliced branch's linear convolution pairs folded into one
    (``fold_sliced_convolutions``)."""
    if which not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {which!r}")
    spatial = bundle.spatial_model()
    if folded:
        from keras_cadstn.models import fold_sliced_convolutions
        spatial = fold_sliced_convolutions(spatial)
    return spatial if which == "spatial" else bundle.frame_model(spatial)


def representative_inputs(step_or_spatial, samples: Samples, which: str):
    """int8 calibration data, one dict of named inputs per frame (batch 1): real crops and, for the
    step, the LSTM states they produce clip by clip from zero state."""
    if which == "spatial":
        for crop in samples.crops:
            yield {"crop": crop[None]}
        return
    feeds = []
    keras_ = keras_step(step_or_spatial)

    def recording(crop, h, c):
        feeds.append({"crop": crop, "lstm_h": h, "lstm_c": c})
        return keras_(crop, h, c)

    run_step_over_clips(recording, step_or_spatial.inputs[1].shape[-1], samples, clips_at_once=False)
    yield from feeds


class TFLiteRunner:
    """A LiteRT interpreter over an exported model, called by input name (signature runner)."""

    def __init__(self, path_or_bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        kw = {"model_path": path_or_bytes} if isinstance(path_or_bytes, str) else {"model_content": path_or_bytes}
        self.interpreter = Interpreter(num_threads=num_threads, **kw)
        self.runner = self.interpreter.get_signature_runner()

    def __call__(self, **inputs) -> dict:
        return self.runner(**{k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()})


def as_step(runner):
    """A TFLite/ONNX runner of an exported step model as ``step(crop, h, c) -> (joints, h', c')``."""
    def step(crop, h, c):
        out = runner(crop=crop, lstm_h=h, lstm_c=c)
        return out["joints"], out["lstm_h_out"], out["lstm_c_out"]
    return step


def convert_tflite(keras_model, precision: str = "float32", representative=None) -> bytes:
    """A Keras model as a TFLite flatbuffer (batch 1, inputs/outputs named as in the model).

    ``representative``: for int8, a callable returning an iterator of input lists/dicts (the
    calibration data). Goes through a SavedModel: ``from_concrete_functions`` on a Keras 3 model
    gave garbage weights (NaN out of the first conv) in TF 2.21; this route matches Keras to ~1e-7.
    """
    import tempfile

    import keras
    import tensorflow as tf
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and representative is None:
        raise ValueError("int8 needs representative (calibration) inputs")
    staging = tempfile.mkdtemp(prefix="cadstn_tflite_")
    try:
        archive = keras.export.ExportArchive()
        archive.track(keras_model)
        archive.add_endpoint("serving_default", _named_tf_function(keras_model),
                             input_signature=_input_specs(keras_model, 1))
        archive.write_out(staging, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(staging)
        if precision != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":  # every op int8; float32 in/out at the edges
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # dynamic_int8 (DEFAULT alone): int8 weights, float activations, 4x less weight memory to read
        return converter.convert()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_tflite(bundle, path: str, which: str = "step", precision: str = "float32",
                  samples: Samples | None = None, calibration: Samples | None = None) -> ExportReport:
    """Convert ``spatial`` or ``step`` (batch 1) to ``path`` at float32/float16/int8 and verify it.

    dynamic_int8 stores the weights as int8 and keeps float activations (no calibration; the dense
    and LSTM weights dominate the step's memory traffic). int8 is full-integer (every op int8,
    float32 input/output at the edges) calibrated on ``calibration`` (default: ``samples``), e.g.
    ``sample_clips(bundle, records="train/*.tfrecord")``; parity is checked on ``samples``.
    """
    keras_model = keras_artifact_model(bundle, which)
    samples = samples or sample_clips(bundle)
    data = convert_tflite(keras_artifact_model(bundle, which, folded=True), precision,
                          lambda: representative_inputs(keras_model, calibration or samples, which))
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
    return _verify_and_publish(tmp, path, "tflite", which, precision, keras_model, TFLiteRunner(tmp), samples,
                               batch_one=True)


def _verify_and_publish(tmp: str, path: str, fmt: str, which: str, precision: str, keras_model, runner,
                        samples: Samples, batch_one: bool) -> ExportReport:
    """Run the artifact at ``tmp`` (``runner``) and the Keras model on ``samples``; rename it to
    ``path`` if within tolerance, else ``ParityError`` and nothing left. ``batch_one``: the artifact
    has a fixed batch of 1 (TFLite); otherwise every crop/clip goes in one batch (dynamic batch)."""
    if which == "spatial":
        ref = keras_model.predict_on_batch(samples.crops)
        got = (np.concatenate([runner(crop=c[None])["joints"] for c in samples.crops]) if batch_one
               else runner(crop=samples.crops)["joints"])
    else:
        units = keras_model.inputs[1].shape[-1]
        ref = run_step_over_clips(keras_step(keras_model), units, samples)
        got = run_step_over_clips(as_step(runner), units, samples, clips_at_once=not batch_one)
    report = ExportReport(path, fmt, which, precision, *_errors_mm(ref, got, samples.cube), _size(tmp))
    _check(report, tmp)
    os.replace(tmp, path)
    return report


# ----------------------------------------------------------------------------- ONNX

class ONNXRunner:
    """onnxruntime over an exported model, called by input name."""

    def __init__(self, path: str, num_threads: int | None = None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, **inputs) -> dict:
        feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))


def export_onnx(bundle, path: str, which: str = "step", opset: int = 17,
                samples: Samples | None = None) -> ExportReport:
    """tf2onnx conversion (dynamic batch, static inner shapes) of ``spatial`` or ``step``, verified
    with onnxruntime."""
    import tf2onnx
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    keras_model = keras_artifact_model(bundle, which)
    samples = samples or sample_clips(bundle)
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(_named_tf_function(keras_artifact_model(bundle, which, folded=True)),
                                  input_signature=_input_specs(keras_model, None), opset=opset, output_path=tmp)
    return _verify_and_publish(tmp, path, "onnx", which, "float32", keras_model, ONNXRunner(tmp), samples,
                               batch_one=False)


# ----------------------------------------------------------------------------- everything

def export_all(bundle, out_dir: str, records: str | None = None, precisions=PRECISIONS, onnx: bool = True,
               saved_model: bool = True, progress: bool = True, num_clips: int = 20,
               calibration_records: str | None = None) -> list:
    """Every artifact of a bundle under ``out_dir``; returns (reports, refusals), printed as they come.
    Parity checks use ``num_clips`` clips of T crops (of ``records`` if given); int8 calibration
    uses as many clips of ``calibration_records`` (e.g. the train split; default: the parity clips)."""
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
        for precision in precisions:
            attempt(lambda: export_tflite(bundle, os.path.join(out_dir, f"{which}_{precision}.tflite"), which,
                                          precision, samples, calibration))
        if onnx:
            attempt(lambda: export_onnx(bundle, os.path.join(out_dir, f"{which}.onnx"), which, samples=samples))
    return reports, refused


# ----------------------------------------------------------------------------- TensorRT pre-flight

# Operators the ONNX-TensorRT parser supports (onnx-tensorrt docs/operators.md, TensorRT 8.4, the
# oldest we target: JetPack 5). Conservative: newer TensorRT supports more, never fewer.
TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU
HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg Not Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor
""".split())


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    """A TensorRT optimisation profile over the batch dimension (inner shapes are static)."""

    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


def check_onnx_for_tensorrt(path: str, profile: BatchProfile = BatchProfile()) -> dict:
    """What can be checked without a GPU before building an engine: every operator is one the
    TensorRT parser supports, every input has a dynamic batch and static inner dimensions, and the
    profile fits. Returns {input name: (min, opt, max) shapes}; raises ValueError listing problems."""
    import onnx
    model = onnx.load(path)
    problems = []
    bad_ops = sorted({n.op_type for n in model.graph.node} - TENSORRT_OPS)
    if bad_ops:
        problems.append(f"operators TensorRT cannot parse: {', '.join(bad_ops)}")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        problems.append(f"opset {opset} < 17")
    initializers = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        inner = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if not dims or dims[0].HasField("dim_value"):
            problems.append(f"input {inp.name}: batch dimension is fixed; the profile needs it dynamic")
        if any(d is None or d <= 0 for d in inner):
            problems.append(f"input {inp.name}: inner dimensions {inner} must all be static")
        shapes[inp.name] = tuple((b,) + tuple(inner) for b in (profile.min, profile.opt, profile.max))
    if problems:
        raise ValueError(f"{path}: not ready for TensorRT:\n  " + "\n  ".join(problems))
    return shapes
