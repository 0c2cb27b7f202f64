"""The ``cadstn`` command line: synth, convert, train, eval, demo, export."""
from __future__ import annotations

import argparse
import os
import sys


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_synth(args):
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    counts = write_synthetic_nyu(args.out, frames_per_sequence=args.frames, train_sequences=args.sequences,
                                 test_sequences=args.test_sequences, seed=args.seed)
    print(f"wrote NYU-format synthetic data to {args.out}: {counts}")


def cmd_convert(args):
    from keras_cadstn.data import load_split
    from keras_cadstn.data.tfrecord import convert_split
    for split in args.splits:
        data = load_split(args.dataset, args.root, split)
        out = os.path.join(args.out, split)
        m = convert_split(data, out, shards=args.shards, image_size=args.image_size)
        print(f"{split}: {m['num_records']} records in {len(m['shards'])} shards, "
              f"{len(m['skipped'])} frames skipped (no hand) -> {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cadstn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write synthetic depth-hand sequences in the NYU on-disk format")
    s.add_argument("--frames", type=int, default=256, help="frames per sequence")
    s.add_argument("--sequences", type=int, default=4, help="training sequences")
    s.add_argument("--test-sequences", type=int, default=2, help="test sequences")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_synth)

    c = sub.add_parser("convert", help="pre-process a dataset into sharded TFRecords")
    c.add_argument("--dataset", choices=["nyu", "icvl"], required=True)
    c.add_argument("--root", required=True, help="dataset root (NYU: holds train/ and test/)")
    c.add_argument("--out", required=True, help="output folder; one sub-folder per split")
    c.add_argument("--shards", type=int, default=8)
    c.add_argument("--image-size", type=int, default=128)
    c.add_argument("--splits", nargs="+", default=["train", "test"])
    c.set_defaults(func=cmd_convert)

    from keras_cadstn import commands
    commands.add_parsers(sub)
    return p


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    from keras_cadstn.errors import DataError
    try:
        code = args.func(args)
    except (DataError, FileNotFoundError) as e:
        print(f"cadstn {args.command}: error: {e}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
