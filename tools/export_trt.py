"""ONNX (from `cadstn export`) -> TensorRT engine, for Jetson and server GPUs.

    python tools/export_trt.py --onnx exports/step.onnx --engine step_fp16.engine --precision fp16 \
        --bundle bundle --max-batch 8 [--calibration records/test/*.tfrecord]   # int8 needs calibration

TF-TRT is gone from TensorFlow's pip builds (docs/stack.md), so the route is ONNX -> the TensorRT builder
API. Before anything needs a GPU the ONNX graph is checked (TensorRT-parsable operators, dynamic
batch, static inner shapes, the profile); without TensorRT or a GPU the tool stops there with a
clear message and exit code 3.
"""
import argparse
import dataclasses
import os
import sys

NO_GPU_EXIT = 3

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


def gpu_available() -> str | None:
    """None if an NVIDIA GPU and the tensorrt package are usable, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt, or JetPack on a Jetson)"
    try:
        import ctypes
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return "no NVIDIA GPU is visible (cuInit/cuDeviceGetCount found none)"
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found)"
    return None


class TFRecordCalibrator:
    """INT8 entropy calibration over crops read from TFRecords (built lazily: needs tensorrt)."""

    @staticmethod
    def create(batches, input_names, cache_path):
        import numpy as np
        import tensorrt as trt
        from cuda import cudart  # cuda-python, installed with TensorRT

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.batches = iter(batches)
                self.buffers = {}

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                try:
                    feed = next(self.batches)
                except StopIteration:
                    return None
                ptrs = []
                for name in names:
                    arr = np.ascontiguousarray(feed[name], np.float32)
                    if name not in self.buffers:
                        self.buffers[name] = cudart.cudaMalloc(arr.nbytes)[1]
                    cudart.cudaMemcpy(self.buffers[name], arr.ctypes.data, arr.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
                    ptrs.append(int(self.buffers[name]))
                return ptrs

            def read_calibration_cache(self):
                return open(cache_path, "rb").read() if os.path.isfile(cache_path) else None

            def write_calibration_cache(self, cache):
                with open(cache_path, "wb") as f:
                    f.write(cache)

        return _Calibrator()


def build_engine(onnx_path, engine_path, precision, shapes, calibrator=None, workspace_gb=2.0):
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{onnx_path}: TensorRT could not parse the graph:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(serialized)
    os.replace(tmp, engine_path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--bundle", help="bundle folder: int8 calibration crops are pre-processed with its spec")
    p.add_argument("--calibration", help="TFRecord glob for int8 calibration (e.g. records/test/*.tfrecord)")
    p.add_argument("--check-only", action="store_true", help="run the checks that need no GPU, then stop")
    args = p.parse_args(argv)

    if not os.path.isfile(args.onnx):
        print(f"export_trt: error: {args.onnx} does not exist (make it with `cadstn export`)", file=sys.stderr)
        return 2
    if args.precision == "int8" and not (args.calibration and args.bundle):
        print("export_trt: error: --precision int8 needs --calibration and --bundle", file=sys.stderr)
        return 2
    try:
        shapes = check_onnx_for_tensorrt(args.onnx, BatchProfile(args.min_batch, args.opt_batch, args.max_batch))
    except ValueError as e:
        print(f"export_trt: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.onnx}: operators, shapes and profile OK for TensorRT:")
    for name, (lo, opt, hi) in shapes.items():
        print(f"  {name}: min {lo} opt {opt} max {hi}")
    if args.check_only:
        return 0
    why = gpu_available()
    if why:
        print(f"export_trt: cannot build a TensorRT engine here: {why}. The ONNX checks above passed; "
              f"run this command on the target GPU machine (Jetson or server).", file=sys.stderr)
        return NO_GPU_EXIT
    calibrator = None
    if args.precision == "int8":
        from keras_cadstn.export.artifacts import keras_artifact_model, representative_inputs
        from keras_cadstn.models.bundle import load_bundle
        from keras_cadstn.tracking.runtime import sample_clips
        bundle = load_bundle(args.bundle)
        which = "step" if "lstm_h" in shapes else "spatial"
        samples = sample_clips(bundle, num_clips=32, records=args.calibration)
        feeds = representative_inputs(keras_artifact_model(bundle, which), samples, which)
        calibrator = TFRecordCalibrator.create(feeds, list(shapes), args.engine + ".calib")
    build_engine(args.onnx, args.engine, args.precision, shapes, calibrator)
    print(f"TensorRT {args.precision} engine: {args.engine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
