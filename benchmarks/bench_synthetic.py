"""Synthetic depth-hand rendering speed on one core (target >= 200 frames/s), and PNG writing.

Run: python benchmarks/bench_synthetic.py [--frames 400]
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

from keras_cadstn.data import nyu  # noqa: E402
from keras_cadstn.data.synthetic import SequenceRenderer  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=400)
    n = p.parse_args().frames
    r = SequenceRenderer(seed=0)
    r.render(0)
    t = time.perf_counter()
    frames = [r.render(i)[0] for i in range(n)]
    render = n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for i, f in enumerate(frames[:100]):
            nyu.write_depth(os.path.join(d, f"{i}.png"), f)
        write = 100 / (time.perf_counter() - t)
    print(f"| step | frames/s (1 core) |\n|---|---|\n| render 640x480 depth | {render:.0f} |\n"
          f"| encode + write NYU PNG | {write:.0f} |")


if __name__ == "__main__":
    main()
