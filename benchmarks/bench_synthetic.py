"""Synthetic depth-hand rendering speed on one core (target >= 200 frames/s), per world, and PNG writing.

Run: python benchmarks/bench_synthetic.py [--frames 400] [--out DIR]
"""
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from keras_cadstn.config import SynthConfig  # noqa: E402
from keras_cadstn.data import nyu  # noqa: E402
from keras_cadstn.data.synthetic import SequenceRenderer  # noqa: E402

WORLDS = {
    "spheres, grasp (default)": SynthConfig(),
    "spheres, grasp, events": SynthConfig(events=True),
    "mesh, gestures": SynthConfig(hand="mesh", poses="gestures"),
    "mesh, gestures, events, sensors mixed": SynthConfig(hand="mesh", poses="gestures", events=True, sensor="mixed"),
    "mesh, gestures, person, scenes": SynthConfig(hand="mesh", poses="gestures", person=True, scenes=(1, 1, 1, 1)),
}


def run(args):
    rows, figures = [], {}
    for name, config in WORLDS.items():
        renderers = [SequenceRenderer(seed, config) for seed in range(4)]  # four sequences: sensors and shapes vary
        for r in renderers:
            r.render(0)  # compiled and warm
        start = time.perf_counter()
        frames = [renderers[i % 4].render(i)[0] for i in range(args.frames)]
        figures[name] = rate = args.frames / (time.perf_counter() - start)
        rows.append([name, f"{rate:.0f}"])
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        for i, f in enumerate(frames[:100]):
            nyu.write_depth(os.path.join(d, f"{i}.png"), f)
        figures["write"] = write = 100 / (time.perf_counter() - start)
    rows.append(["encode + write NYU PNG", f"{write:.0f}"])
    print(common.table(["step (640x480)", "frames/s (1 core)"], rows))
    return figures


def main():
    p = common.parser(__doc__)
    p.add_argument("--frames", type=int, default=400)
    common.run("bench_synthetic", run, p)


if __name__ == "__main__":
    main()
