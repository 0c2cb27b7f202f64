"""Where the tracker's streaming step spends its time: each part of the step converted to TFLite on
its own (the same layers, the same deployment form: folded sliced convolutions, float-step slicing
where the precision allows it, float weights at full resolution in dynamic_int8; the whole step is
timed without those too) and timed in alternating blocks of calls with the whole step, so a
slow spell of the machine lands on every row.

    python benchmarks/bench_step_parts.py [--bundle B] [--image-size 128] [--fc-rank 16]
        [--precisions float32 dynamic_int8 int8] [--blocks 20] [--threads 2]

Without --bundle a freshly initialised CADSTN of the requested size is timed (the cost of a network
does not depend on its weights). The parts are nested (the sliced volume is part of the sliced
branch, which is part of the spatial network), so the shares do not add up to 100%; what the step
costs beyond its spatial network and temporal step is its gate and the fusion. A part timed alone
also pays its own call and its input's conversion, about what one more op of the step costs.
"""
import argparse
import os
import platform
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def chain(model, names: list, input_shape: tuple):
    """A model of ``model``'s layers ``names`` applied one after another to a new input (shared
    layers, not copies)."""
    import keras
    x = inputs = keras.Input(input_shape, name="crop")
    for name in names:
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x)


def trunk_layers(model, prefix: str, stages: int, sliced: bool) -> list:
    """The layer names of a conv trunk of ``stages`` stages as ``fold_artifact_model`` leaves it:
    conv + pool, or in the sliced branch the folded conv, its ReLU and the pool."""
    names = []
    for i in range(1, stages + 1):
        names += ([f"{prefix}conv{i}_folded", f"{prefix}conv{i}_1x1_activation"] if sliced else [f"{prefix}conv{i}"])
        names.append(f"{prefix}pool{i}")
    present = {layer.name for layer in model.layers}
    missing = [n for n in names if n not in present]
    if missing:
        raise SystemExit(f"bench_step_parts: error: {model.name} has no layers {missing}")
    return names


def step_parts(step, image_size: int, stages: int) -> dict:
    """{part name: Keras model} of a deployed streaming step, outermost first."""
    from keras_cadstn.models.streaming import streaming_parts
    spatial, temporal, _ = streaming_parts(step)
    encoder = temporal.get_layer("frame_encoder")
    crop = (image_size, image_size, 1)
    sliced_first = ["slice_volume"] + trunk_layers(spatial, "vol_", 1, sliced=True)
    return {
        "whole step": step,
        "spatial network": spatial,
        "  sliced branch (slicing, conv stages)": chain(spatial, ["slice_volume"]
                                                       + trunk_layers(spatial, "vol_", stages, True), crop),
        "    slicing and the first conv stage": chain(spatial, sliced_first, crop),
        "    slicing alone": chain(spatial, ["slice_volume"], crop),
        "  depth branch (conv stages)": chain(spatial, trunk_layers(spatial, "depth_", stages, False), crop),
        "    its first conv stage": chain(spatial, trunk_layers(spatial, "depth_", 1, False), crop),
        "temporal step": temporal,
        "  frame encoder (conv stages, fc1)": encoder,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--fc-rank", type=int, default=16, help="the step's fc rank (0: full rank)")
    p.add_argument("--precisions", nargs="+", default=["dynamic_int8"])
    p.add_argument("--blocks", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    from bench_slicing import paired_blocks
    from bench_tracking import make_bundle
    from keras_cadstn import export
    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.runtime import TFLiteRunner, sample_clips
    for precision in args.precisions:
        if precision not in export.PRECISIONS:
            raise SystemExit(f"bench_step_parts: error: precision must be one of {export.PRECISIONS}, "
                             f"got {precision!r}")
    fc_rank = args.fc_rank or None
    bundle = (load_bundle(args.bundle) if args.bundle
              else make_bundle(args.image_size, 16, tempfile.mkdtemp(prefix="bench_step_parts_"), fc_rank))
    step = export.keras_artifact_model(bundle, "step", fc_rank=fc_rank)
    samples = sample_clips(bundle, 4)
    size, stages = bundle.image_size, len(bundle.config.filters)
    crop = samples.crops[:1].astype(np.float32)
    print(f"\nThe streaming step's parts: {size}x{size} crops, fc rank {fc_rank or 'full'}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"{args.blocks} blocks of 50 calls\n")
    print("| precision | part | p50 (ms) | share of the step |")
    print("|---|---|---|---|")
    for precision in args.precisions:
        deployed = export.fold_artifact_model(step, "step", float_steps=precision in export.FLOAT_STEP_PRECISIONS)
        runners = {}
        for name, model in step_parts(deployed, size, stages).items():
            representative = None
            if precision == "int8":  # calibrated on the crops (and, with LSTM state, the states they give)
                representative = ((lambda m=model: export.representative_inputs(m, samples, "step"))
                                  if len(model.inputs) > 1 else (lambda: ({"crop": c[None]} for c in samples.crops)))
            converted = {name: export.convert_tflite(model, precision, representative)}
            if precision == "dynamic_int8" and model is deployed:  # what the float weights at full resolution save
                converted[f"{name}, int8 weights at full resolution too"] = export.convert_tflite(
                    model, precision, float_full_resolution=False)
            for label, flatbuffer in converted.items():
                runner = TFLiteRunner(flatbuffer, num_threads=args.threads)
                feed = {k: (crop if k == "crop" else np.zeros(d["shape"], np.float32))
                        for k, d in runner.runner.get_input_details().items()}
                runners[label] = lambda r=runner, f=feed, **_: r(**f)
        times = paired_blocks(runners, {}, args.blocks)
        whole = float(np.median(times["whole step"]))
        for name, ms in times.items():
            p50 = float(np.median(ms))
            print(f"| {precision} | {name.replace('  ', '&nbsp;&nbsp;')} | {p50:.3f} | {100 * p50 / whole:.0f}% |")


if __name__ == "__main__":
    main()
