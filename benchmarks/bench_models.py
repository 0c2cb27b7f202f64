"""Parameters, FLOPs per frame and inference frames/s of every CADSTN network.

FLOPs are counted layer by layer (multiply-add = 2 FLOPs): convolutions, dense layers, the LSTM step;
pooling, activations and the slicing are left out (they are < 1 % here). Sequence models are timed on
whole clips of T frames; "batch" counts frames (batch 1 of a sequence model = one clip).
Run: python benchmarks/bench_models.py [--image-size 128] [--repeats 3]
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models import (
    build_baseline_network,
    build_cadstn,
    build_sliced3d_network,
    build_spatial_network,
    build_temporal_network,
    build_temporal_stream,
    spatial_inference_model,
)
from keras_cadstn.models.layers import FrozenSubmodel  # noqa: E402


def flops_per_frame(model) -> int:
    """FLOPs of one frame through ``model`` (for a clip model: per frame of the clip)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.TimeDistributed, FrozenSubmodel)):
            inner = layer.layer
            total += flops_per_frame(inner) if isinstance(inner, keras.Model) else 0
        elif isinstance(layer, keras.Model):
            total += flops_per_frame(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            h, w = layer.output.shape[-3:-1]
            k = int(np.prod(layer.kernel.shape))
            total += 2 * h * w * k
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.LSTM):
            total += 2 * int(np.prod(layer.cell.kernel.shape) + np.prod(layer.cell.recurrent_kernel.shape))
        elif isinstance(layer, keras.layers.LSTMCell):
            total += 2 * int(np.prod(layer.kernel.shape) + np.prod(layer.recurrent_kernel.shape))
    return total


def frames_per_second(model, inputs, frames, repeats):
    model.predict_on_batch(inputs)  # warm-up / tracing
    t = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(inputs)
    return frames * repeats / (time.perf_counter() - t)


def main():
    p = common.parser(__doc__)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    common.run("bench_models", run, p)


def run(args):
    cfg = CADSTNConfig(image_size=args.image_size, seq_len=args.seq_len)
    t = cfg.seq_len
    temporal = build_temporal_network(cfg)
    models = {"Baseline": build_baseline_network(cfg), "Sliced-3D": build_sliced3d_network(cfg),
              "Spatial (inference)": spatial_inference_model(build_spatial_network(cfg)),
              "Temporal (windowed)": temporal, "CADSTN": build_cadstn(config=cfg)}
    rng = np.random.default_rng(0)
    print("| model | parameters | MFLOPs/frame | frames/s batch 1 | frames/s batch 64 |\n|---|---|---|---|---|")
    def random_inputs(model, n):
        """One random batch of ``n`` for each input of ``model`` (crops, clips, centre motion, state)."""
        x = [rng.uniform(-1, 1, (n,) + tuple(i.shape[1:])).astype("float32") for i in model.inputs]
        return x if len(x) > 1 else x[0]

    for name, model in models.items():
        clip = len(model.inputs[0].shape) == 5
        row = []
        for batch in (1, 64):
            n = max(batch // t, 1) if clip else batch
            row.append(frames_per_second(model, random_inputs(model, n), n * (t if clip else 1), args.repeats))
        print(f"| {name} | {model.count_params():,} | {flops_per_frame(model) / 1e6:,.1f} | "
              f"{row[0]:,.1f} | {row[1]:,.1f} |")
    stream = build_temporal_stream(temporal)
    step = frames_per_second(stream, random_inputs(stream, 1), 1, 10 * args.repeats)
    window = frames_per_second(temporal, random_inputs(temporal, 1), 1, args.repeats)
    print(f"\n| temporal, one new frame | ms/frame |\n|---|---|\n| streaming step (state carried) | {1e3 / step:.2f} |\n"
          f"| windowed model re-run on the last {t} frames | {1e3 / window:.2f} |")


if __name__ == "__main__":
    main()
