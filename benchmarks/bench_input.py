"""tf.data pipeline throughput at 128x128 (target >= 5,000 frames/s on 2 cores).

Generates a small synthetic set, converts it once, then times make_dataset in frames and sequences
mode, with and without augmentation. Run: python benchmarks/bench_input.py [--batches 60]
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_cadstn.data import make_dataset  # noqa: E402
from keras_cadstn.data.nyu import load_nyu  # noqa: E402
from keras_cadstn.data.synthetic import write_synthetic_nyu  # noqa: E402
from keras_cadstn.data.tfrecord import convert_split  # noqa: E402


def frames_per_second(ds, batches, frames_per_item):
    it = iter(ds)
    for _ in range(3):
        next(it)  # warm-up: graph tracing, buffers
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        n += int(x.shape[0]) * frames_per_item
    return n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--data", help="existing shard folder (default: make a synthetic one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            write_synthetic_nyu(tmp, frames_per_sequence=128, train_sequences=4, test_sequences=0, progress=False)
            data = os.path.join(tmp, "rec")
            convert_split(load_nyu(tmp, "train"), data, shards=4, image_size=128, progress=False)
        pattern = os.path.join(data, "*.tfrecord")
        rows = []
        for mode, aug in (("frames", False), ("frames", True), ("sequences", False), ("sequences", True)):
            kw = dict(mode=mode, augment=aug, shuffle=True, repeat=True, cache=True, seed=0)
            if mode == "frames":
                ds, per = make_dataset(pattern, batch_size=128, **kw), 1
            else:
                ds, per = make_dataset(pattern, batch_size=8, seq_len=16, window_shift=4, **kw), 16
            rows.append((mode, aug, frames_per_second(ds, args.batches, per)))
    print("| mode | augment | frames/s (128x128) |\n|---|---|---|")
    for mode, aug, fps in rows:
        print(f"| {mode} | {'yes' if aug else 'no'} | {fps:,.0f} |")


if __name__ == "__main__":
    main()
