"""The sliced volume's comparisons as float steps (``slice_volume(float_steps=True)``) against
comparison ops, in TFLite: the slicing alone and the tracker's whole streaming step.

The float32 and dynamic_int8 exports write each comparison a >= b as clip((a - b) * 2^126 + 1, 0, 1)
(the same 0/1 in float32); float16 and int8 keep the comparison ops. Both forms of each model are
converted from the same Keras model and timed in alternating blocks of calls (a slow spell of the
machine lands on both); the difference is the mean over blocks with a 95% interval.

    python benchmarks/bench_slicing.py [--image-size 128] [--fc-rank 16] [--blocks 40] [--threads 2]
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def paired_blocks(runners: dict, feed: dict, blocks: int, calls: int = 50) -> dict:
    """ms per call of each runner, in ``blocks`` alternating blocks of ``calls`` calls: (blocks, calls)."""
    times = {name: [] for name in runners}
    for block in range(blocks):
        for name in (list(runners) if block % 2 else list(runners)[::-1]):
            for _ in range(calls):
                start = time.perf_counter()
                runners[name](**feed)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * np.asarray(t).reshape(blocks, calls) for name, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--fc-rank", type=int, default=16, help="the step's fc rank (0: full rank)")
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    import keras

    from bench_tracking import make_bundle
    from keras_cadstn import export
    from keras_cadstn.models.layers import SliceVolume
    from keras_cadstn.runtime import TFLiteRunner
    bundle = make_bundle(args.image_size, 16, tempfile.mkdtemp(prefix="bench_slicing_"), args.fc_rank or None)
    step = export.keras_artifact_model(bundle, "step", fc_rank=args.fc_rank or None)
    rng = np.random.default_rng(0)
    m = args.image_size
    crop = np.ones((1, m, m, 1), np.float32)
    crop[0, m // 4:3 * m // 4, m // 4:3 * m // 4, 0] = rng.uniform(-1, 0.9, (m // 2, m // 2))  # a hand-sized patch
    state = np.zeros((1, bundle.config.lstm_units), np.float32)
    rows = []
    for precision in export.FLOAT_STEP_PRECISIONS:
        models = {"slicing": lambda fs: keras.Model(x := keras.Input((m, m, 1), name="crop"),
                                                    SliceVolume(8, float_steps=fs)(x)),
                  "step": lambda fs: export.fold_artifact_model(step, "step", fs)}
        for what, build in models.items():
            if what == "slicing" and precision != "float32":
                continue  # no weights: dynamic_int8 is the same graph
            runners = {fs: TFLiteRunner(export.convert_tflite(build(fs), precision), args.threads) for fs in (False, True)}
            names = runners[False].input_names
            feed = {"crop": crop, "lstm_h": state, "lstm_c": state, "centre_motion": np.zeros((1, 3), np.float32)}
            feed = {k: v for k, v in feed.items() if k in names}
            outs = [runners[fs](**feed) for fs in (False, True)]
            same = all(np.array_equal(outs[0][k], outs[1][k]) for k in outs[0])
            times = paired_blocks(runners, feed, args.blocks)
            diff = times[False].mean(1) - times[True].mean(1)
            rows.append((what, precision, np.median(times[False]), np.median(times[True]), diff.mean(),
                         1.96 * diff.std(ddof=1) / np.sqrt(len(diff)), same))
    print(f"\nSliced volume in TFLite, {m}x{m} crops, {args.threads} threads, fc rank {args.fc_rank or 'full'}; "
          f"{args.blocks} alternating blocks of 50 calls\n")
    print("| model | precision | comparison ops p50 (ms) | float steps p50 (ms) | saved per call (ms, 95% interval) "
          "| same outputs |")
    print("|---|---|---|---|---|---|")
    for what, precision, compare, steps, saved, half, same in rows:
        print(f"| {what} | {precision} | {compare:.3f} | {steps:.3f} | {saved:.3f} ± {half:.3f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
