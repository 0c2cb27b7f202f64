"""Train the learned hand detector (keras_cadstn.tracking.detector, trained by keras_cadstn.training.detector) that the package ships.

    python tools/train_detector.py [--out keras_cadstn/assets/hand_detector.keras]
        [--sequences 48 --frames 50 --steps 8000 --seed 2000]

Synthetic sequences with seeds from --seed on (2000..: apart from the main job's data, 0.., and from
benchmarks/bench_localiser.py's test scenes, 1000..); two thirds with a person behind the hand, the
rest the main job's scenes with occluders. About 6 minutes on 2 CPU cores. Writes the model and its
settings (.json) atomically. Check it with `python benchmarks/bench_localiser.py`.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    from keras_cadstn.tracking.detector import DETECTOR_PATH
    from keras_cadstn.training.detector import train_detector
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DETECTOR_PATH)
    p.add_argument("--sequences", type=int, default=48)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seed", type=int, default=2000)
    args = p.parse_args(argv)
    if args.sequences < 1 or args.frames < 1 or args.steps < 1:
        p.error("--sequences, --frames and --steps must be >= 1")
    start = time.time()
    train_detector(args.out, sequences=args.sequences, frames=args.frames, steps=args.steps, seed=args.seed)
    print(f"detector written to {args.out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
