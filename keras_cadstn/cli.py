"""The ``cadstn`` command: one table of sub-commands, flags derived from the config dataclasses.

Every failure the library reports on purpose (``CadstnError``), a file-system error, and a bad flag
end as one line on stderr, ``cadstn <command>: error: ...``, with exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _defaults(cls) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- sub-commands

def cmd_synth(args):
    from keras_cadstn.data.synthetic import SynthConfig, write_synthetic_nyu
    counts = write_synthetic_nyu(args.out, frames_per_sequence=args.frames, train_sequences=args.sequences,
                                 test_sequences=args.test_sequences, seed=args.seed, config=SynthConfig(events=args.events, person=args.person))
    print(f"wrote NYU-format synthetic data to {args.out}: {counts}")


def cmd_convert(args):
    from keras_cadstn.data import load_split
    from keras_cadstn.data.tfrecord import check_image_size, convert_split
    check_image_size(args.image_size)  # before any import work
    for split in args.splits:
        data = load_split(args.dataset, args.root, split)
        out = os.path.join(args.out, split)
        m = convert_split(data, out, shards=args.shards, image_size=args.image_size)
        print(f"{split}: {m['num_records']} records in {len(m['shards'])} shards, "
              f"{len(m['skipped'])} frames skipped (no hand) -> {out}")


def cmd_train(args):
    from keras_cadstn.data.tfrecord import read_manifest
    from keras_cadstn.errors import ConfigError
    from keras_cadstn.models import CADSTNConfig
    from keras_cadstn.train import STAGES, TrainConfig, train_cadstn
    # image size and joint count are facts of the records, not flags that could disagree with them
    manifest = read_manifest(os.path.join(args.records, "train"), require_complete=True)
    defaults = TrainConfig()
    steps = {s: args.steps or defaults.steps[s] for s in STAGES}
    tcfg = TrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr,
                       decay_every=args.decay_every, checkpoint_every=args.checkpoint_every,
                       mixed_precision=args.mixed_precision, strategy=args.strategy, seed=args.seed,
                       augment=not args.no_augment, shuffle=not args.no_shuffle, temporal_init=args.temporal_init,
                       deterministic=args.deterministic, fusion_loss=args.fusion_loss)
    mcfg = CADSTNConfig(num_joints=int(manifest["num_joints"]), image_size=int(manifest["image_size"]),
                        seq_len=args.seq_len, centre_motion=args.centre_motion, gate_input=args.gate_input)
    has_val = os.path.isdir(os.path.join(args.records, "val"))
    gate_data = args.fusion_data or ("val" if has_val else "train")
    if gate_data == "val" and not has_val:
        raise ConfigError(f"--fusion-data val: {args.records} has no val/ split (convert one with `cadstn convert`)")
    train_cadstn(os.path.join(args.records, "train", "*.tfrecord"), args.run_dir, mcfg, tcfg, stages=args.stages,
                 fusion_pattern=os.path.join(args.records, gate_data, "*.tfrecord"))


def cmd_eval(args):
    from keras_cadstn.data.frames import get_spec
    from keras_cadstn.evaluate import align_results, comparison_table, plot_comparison, read_results
    gt, gt_names = read_results(args.gt, args.dataset, args.fmt)
    results = {}
    for path in args.pred:
        pred, names = read_results(path, args.dataset, args.fmt)
        label = os.path.basename(path)
        if label in results or sum(os.path.basename(p) == label for p in args.pred) > 1:
            label = path  # two files of the same name: keep both, told apart by their paths
        results[label] = align_results(gt, gt_names, pred, names, args.gt, path)
    print(comparison_table(gt, results))
    paths = plot_comparison(gt, results, args.out, get_spec(args.dataset).joint_names, title=args.dataset.upper())
    print("plots: " + ", ".join(paths))


def cmd_export(args):
    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.export import export_all
    reports, refused = export_all(load_bundle(args.bundle), args.out, records=args.records, precisions=args.precisions,
                                  onnx=not args.no_onnx, saved_model=not args.no_saved_model, num_clips=args.clips,
                                  calibration_records=args.calibration_records, fc_rank=args.fc_rank)
    print(f"\n{len(reports)} artifacts, each checked against the Keras model on real crops "
          f"({args.records or 'synthetic hands rendered with the bundle camera'}"
          + (f"; int8 calibrated on {args.calibration_records}" if args.calibration_records else "") + ")"
          + (f"; {len(refused)} refused (parity beyond tolerance, nothing written)." if refused else "."))
    return 1 if refused else 0


def cmd_compress(args):
    from keras_cadstn.bundle import add_low_rank_step, load_bundle
    from keras_cadstn.export import keras_artifact_model
    from keras_cadstn.models.low_rank import weight_count
    from keras_cadstn.runtime import sample_clips
    bundle = load_bundle(args.bundle)
    crops = sample_clips(bundle, args.clips, records=args.records).crops
    path = add_low_rank_step(bundle, args.fc_rank, crops, args.records)
    full, low = (keras_artifact_model(bundle, "step", fc_rank=r) for r in (None, args.fc_rank))
    print(f"{path}: the streaming step with fc layers of rank {args.fc_rank}, fitted on {len(crops)} crops of "
          f"{args.records}: {weight_count(full) / 1e6:.2f} M -> {weight_count(low) / 1e6:.2f} M weights. Measure "
          f"its error on validation data (benchmarks/bench_low_rank.py) before tracking with --fc-rank "
          f"{args.fc_rank}.")


def cmd_demo(args):
    from keras_cadstn.demo import DemoConfig, run_demo
    cfg = DemoConfig() if args.data == "synthetic" else DemoConfig.paper(args.data)
    changes = {k: getattr(args, k) for k in ("workdir", "image_size", "seeds") if getattr(args, k) is not None}
    train = {k: getattr(args, k) for k in ("batch_size", "strategy", "deterministic") if getattr(args, k) is not None}
    train["mixed_precision"] = args.mixed_precision or cfg.train.mixed_precision
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train), **changes)
    run_demo(cfg.scaled(args.steps_scale) if args.steps_scale != 1.0 else cfg, export=not args.no_export)


def cmd_track(args):
    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.sources import open_source, parse_camera
    from keras_cadstn.detect import DETECTOR_PATH, load_detector
    from keras_cadstn.tracking import HandLocaliser, HandTracker, track_stream
    if not (args.jsonl or args.video or args.show):
        from keras_cadstn.errors import ConfigError
        raise ConfigError("nothing to write: give --jsonl FILE, --video FILE and/or --show")
    bundle = load_bundle(args.bundle)  # before the camera is opened: a bad bundle fails fast
    localiser = HandLocaliser(detector_path={"learned": DETECTOR_PATH, "geometric": None}.get(args.detector,
                                                                                                args.detector))
    if localiser.detector_path is not None:
        load_detector(localiser.detector_path)  # a missing or broken detector fails fast too
    with open_source(args.source, parse_camera(args.camera) if args.camera else None) as source:
        bundle = bundle.with_camera(source.camera)
        from keras_cadstn.export import export_for_tracker  # exported and verified once, into the cache
        tracker = HandTracker(bundle, backend=args.backend, precision=args.precision, localiser=localiser,
                              fc_rank=args.fc_rank, **export_for_tracker(bundle, args.backend, args.precision,
                                                                         fc_rank=args.fc_rank))
        stats = track_stream(tracker, source, jsonl=args.jsonl, video=args.video, show=args.show,
                             max_frames=args.frames)
    print(f"{stats['frames']} frames{' (stopped by Ctrl-C)' if stats['interrupted'] else ''}, hand found in "
          f"{stats['found']}; per frame p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms"
          + "".join(f"; {kind} {path}" for kind, path in (("jsonl", args.jsonl), ("video", args.video)) if path))


# ----------------------------------------------------------------------------- flags

def add_demo_arguments(d):
    """The main job's flags (``cadstn demo`` and examples/train_nyu.py, train_icvl.py)."""
    from keras_cadstn.train import STRATEGIES
    d.add_argument("--data", default="synthetic",
                   help="'synthetic' (default: generated on first use), 'nyu:/path' or 'icvl:/path'")
    d.add_argument("--workdir", help="data cache, records, runs, results (default ~/.cache/keras_cadstn/...)")
    d.add_argument("--image-size", type=positive_int, help="crop size (synthetic default 64, real data 128)")
    d.add_argument("--batch-size", type=positive_int)
    d.add_argument("--seeds", type=positive_int, help="independent training runs (the table gives their spread)")
    d.add_argument("--steps-scale", type=positive_float, default=1.0,
                   help="scale every stage's steps (e.g. 0.02 to smoke-test)")
    d.add_argument("--strategy", choices=STRATEGIES)
    d.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic ops: one seed gives the same numbers on one machine (slower)")
    d.add_argument("--mixed-precision", action="store_true")
    d.add_argument("--no-export", action="store_true")
    d.set_defaults(func=cmd_demo)


def _synth(s):
    s.add_argument("--frames", type=positive_int, default=256, help="frames per sequence")
    s.add_argument("--sequences", type=positive_int, default=4, help="training sequences")
    s.add_argument("--test-sequences", type=positive_int, default=2, help="test sequences")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--events", action=argparse.BooleanOptionalAction, default=True,
                   help="occluders, depth drop-out bursts, near-range loss and fast motion (default on)")
    s.add_argument("--person", action="store_true",
                   help="a person behind the hand (torso, head, arms) and sometimes an object beside it")
    s.add_argument("--out", required=True)


def _convert(c):
    c.add_argument("--dataset", choices=["nyu", "icvl"], required=True)
    c.add_argument("--root", required=True, help="dataset root (NYU: holds train/ and test/)")
    c.add_argument("--out", required=True, help="output folder; one sub-folder per split")
    c.add_argument("--shards", type=positive_int, default=8)
    c.add_argument("--image-size", type=positive_int, default=128, help="crop size M (a multiple of 16)")
    c.add_argument("--splits", nargs="+", default=["train", "test"])


def _train(t):
    from keras_cadstn.train import FUSION_LOSSES, STAGES, STRATEGIES, TEMPORAL_INITS, TrainConfig
    from keras_cadstn.models.config import GATE_INPUTS, CADSTNConfig
    d = _defaults(TrainConfig)
    t.add_argument("--records", required=True, help="folder written by `cadstn convert` (holds train/, "
                                                     "optionally val/); crop size and joints come from its manifest")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    t.add_argument("--steps", type=positive_int, help="steps per stage (default: the paper's 60k/40k)")
    t.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    t.add_argument("--lr", type=positive_float, default=d["learning_rate"])
    t.add_argument("--decay-every", type=positive_int, default=d["decay_every"])
    t.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"])
    t.add_argument("--seq-len", type=positive_int, default=16)
    t.add_argument("--mixed-precision", action="store_true")
    t.add_argument("--strategy", choices=STRATEGIES, default=d["strategy"])
    t.add_argument("--no-augment", action="store_true", help="e.g. for ICVL, which is augmented already")
    t.add_argument("--no-shuffle", action="store_true", help="records in file order (reproducible runs)")
    t.add_argument("--temporal-init", choices=TEMPORAL_INITS, default=d["temporal_init"],
                   help="baseline_finetune (default, measured best), baseline_frozen (the authors' code), "
                        "scratch (the paper's text)")
    t.add_argument("--fusion-data", choices=("train", "val"),
                   help="records the gate trains on: val (default when the records have a val/ split; measured "
                        "better) or train (the paper)")
    n = CADSTNConfig()
    t.add_argument("--centre-motion", action=argparse.BooleanOptionalAction, default=n.centre_motion,
                   help="the temporal network also reads the crop centre's motion (ours; "
                        "--no-centre-motion: the paper's network)")
    t.add_argument("--gate-input", choices=GATE_INPUTS, default=n.gate_input,
                   help="what the fusion gate looks at: crop (the paper) or predictions (ours: the two networks' "
                        "joints and the centre motion)")
    t.add_argument("--fusion-loss", choices=FUSION_LOSSES, default=d["fusion_loss"],
                   help="the fusion stage's loss: joint_distance (ours: the mean joint error) or l2 (the paper)")
    t.add_argument("--deterministic", action="store_true")
    t.add_argument("--seed", type=int, default=d["seed"])


def _eval(e):
    e.add_argument("--gt", required=True)
    e.add_argument("--pred", action="append", required=True)
    e.add_argument("--dataset", choices=["nyu", "icvl"], default="nyu")
    e.add_argument("--fmt", choices=["uvd", "xyz"], default="uvd")
    e.add_argument("--out", default="eval_plots")


FC_RANK_HELP = ("the bundle's step with fc layers of this rank (made by `cadstn compress`): less weight memory "
                "per frame; its error: benchmarks/bench_low_rank.py; default: the trained layers")


def _export(x):
    from keras_cadstn.export import PRECISIONS
    x.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    x.add_argument("--out", required=True)
    x.add_argument("--records", help="TFRecord glob of real crops for parity checks (e.g. the test split)")
    x.add_argument("--calibration-records", help="TFRecord glob for int8 calibration (e.g. the train split; "
                                                  "default: the parity crops)")
    x.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    x.add_argument("--clips", type=positive_int, default=20, help="clips of T crops for parity checks and calibration")
    x.add_argument("--no-onnx", action="store_true")
    x.add_argument("--fc-rank", type=positive_int, help=FC_RANK_HELP + " (TFLite/ONNX spatial and step, named *_rankR)")
    x.add_argument("--no-saved-model", action="store_true")


def _compress(c):
    c.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    c.add_argument("--fc-rank", type=positive_int, required=True, help="rank of the fc layers")
    c.add_argument("--records", required=True, help="TFRecord glob of training crops the factors are fitted to "
                                                    "(e.g. the train split)")
    c.add_argument("--clips", type=positive_int, default=64, help="clips of T crops read from --records")


def _track(t):
    from keras_cadstn.export import PRECISIONS
    from keras_cadstn.sources import SOURCE_KINDS
    from keras_cadstn.tracking import BACKENDS
    t.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    t.add_argument("--source", required=True, help=" | ".join(SOURCE_KINDS))
    t.add_argument("--backend", choices=BACKENDS, default="keras")
    t.add_argument("--precision", choices=PRECISIONS, default="float32", help="TFLite: the step model's precision")
    t.add_argument("--fc-rank", type=positive_int, help=FC_RANK_HELP)
    t.add_argument("--jsonl", help="one JSON line per frame: frame, timestamp, found, joints_mm (camera mm)")
    t.add_argument("--video", help="depth with the skeleton, fps and found/lost (.mp4 or .avi)")
    t.add_argument("--show", action="store_true", help="a live window (needs OpenCV with a GUI and a display)")
    t.add_argument("--frames", type=positive_int, help="stop after this many frames (default: the whole source)")
    t.add_argument("--camera", help="pngs: fx,fy,cx,cy,width,height[,depth_unit_mm] (default: the folder's "
                                    "camera.json)")
    t.add_argument("--detector", default="learned",
                   help="how the hand is found where there is no previous frame: 'learned' (default: the shipped "
                        "hand detector), 'geometric' (no network), or a trained detector's .keras path")


# name -> (help, add flags, run)
COMMANDS = {
    "synth": ("write synthetic depth-hand sequences in the NYU on-disk format", _synth, cmd_synth),
    "convert": ("pre-process a dataset into sharded TFRecords", _convert, cmd_convert),
    "train": ("train CADSTN's stages (Algorithm 1) on converted TFRecords", _train, cmd_train),
    "eval": ("compare results files against ground truth: table + plots", _eval, cmd_eval),
    "export": ("SavedModel (TF Serving), TFLite fp32/fp16/int8 and ONNX of a bundle", _export, cmd_export),
    "compress": ("add to a bundle its streaming step with low-rank fc layers (for the tracker's --fc-rank)",
                 _compress, cmd_compress),
    "track": ("track a hand live from a depth camera, a recording or a folder of frames", _track, cmd_track),
    "demo": ("the whole path: synthetic data by default (no download needed)", add_demo_arguments, cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cadstn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_, add, run) in COMMANDS.items():
        s = sub.add_parser(name, help=help_)
        add(s)
        s.set_defaults(func=run)
    return p


def run_reporting_errors(prog: str, func, args) -> int:
    """Run a command; a library error or an OS error becomes one line on stderr and exit code 2."""
    from keras_cadstn.errors import CadstnError
    try:
        return func(args) or 0
    except (CadstnError, OSError) as e:
        text = str(e).strip().replace("\n", "; ") or type(e).__name__
        print(f"{prog}: error: {text}", file=sys.stderr)
        return EXIT_ERROR


def main(argv=None) -> int:
    """Run ``cadstn``; returns the exit code (2 for every error, bad flags included)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, one line already printed)
        return int(e.code or 0)
    return run_reporting_errors(f"cadstn {args.command}", args.func, args)


def example_main(dataset: str, description: str, argv=None) -> int:
    """examples/train_<dataset>.py: the main job's flags, with --data restricted to that dataset."""
    parser = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "synthetic" and not args.data.startswith(dataset + ":"):
        parser.error(f"--data must be 'synthetic' or '{dataset}:/path'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return run_reporting_errors(parser.prog, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
