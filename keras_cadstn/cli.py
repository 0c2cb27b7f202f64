"""The ``cadstn`` command: one table of sub-commands, flags and their defaults from keras_cadstn.config.

Every failure the library reports on purpose (``CadstnError``), a file-system error, and a bad flag
end as one line on stderr, ``cadstn <command>: error: ...``, with exit code 2. TensorFlow's C++
start-up lines and known harmless warnings are silenced unless ``--verbose`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

from keras_cadstn.config import (
    BACKENDS,
    FUSION_LOSSES,
    GATE_INPUTS,
    HANDS,
    PAPER_IMAGE_SIZE,
    PARITY_CLIPS,
    POSES,
    PRECISIONS,
    SCENES,
    SENSORS,
    SHARDS,
    SOURCE_KINDS,
    STAGES,
    STRATEGIES,
    SYNTH_SPLITS,
    TEMPORAL_INITS,
    DEFAULT_PRESET,
    CADSTNConfig,
    DemoConfig,
    SynthConfig,
    TrainConfig,
)
from keras_cadstn.errors import CadstnError

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


def weights(count: int):
    """An argparse type: ``count`` comma-separated numbers >= 0, not all 0."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}") from None
        if len(values) != count or min(values) < 0 or not sum(values) > 0:
            raise argparse.ArgumentTypeError(f"expected {count} weights >= 0, not all 0, got {text!r}")
        return values
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def degrees(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected degrees in [0, 180], got {text!r}") from None
    if not 0 <= value <= 180:
        raise argparse.ArgumentTypeError(f"expected degrees in [0, 180], got {value}")
    return value


def centre_scale(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"centre_scale must be in (0, 1], got {value}")
    return value


def _defaults(cls) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- sub-commands


# ----------------------------------------------------------------------------- flags

def add_demo_arguments(d):
    """The main job's flags (``cadstn demo`` and examples/train_nyu.py, train_icvl.py)."""
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
    d.add_argument("--rotation", type=degrees, metavar="DEG", help="ours: also rotate training crops by up to +- DEG")
    d.add_argument("--centre-scale", type=centre_scale, help="ours: the crops' centre of mass in the cube scaled by this "
                                                       "(0-1; default 1, the paper's whole cube)")
    add_world_arguments(d, DemoConfig())
    d.set_defaults(func="cmd_demo")


def add_world_arguments(p, defaults) -> None:
    """The synthetic world's hand and poses (``SynthConfig.hand``, ``.poses``)."""
    p.add_argument("--hand", choices=HANDS, default=defaults.hand,
                   help="the synthetic hand: spheres (procedural) or mesh (the skinned WebXR hand)")
    p.add_argument("--poses", choices=POSES, default=defaults.poses,
                   help="grasp (one grasp signal), grasp_wide (the same, open to closed evenly), grasp_spread "
                        "(grasp_wide with each finger spread up to its own limit; --hand spheres) or gestures "
                        "(common gestures, any view; needs --hand mesh)")
    p.add_argument("--sensor", choices=SENSORS, default=defaults.sensor,
                   help="depth sensor artefacts: basic, kinect1, sr300, d400, or mixed (a family per sequence)")
    p.add_argument("--scenes", type=weights(len(SCENES)), default=tuple(defaults.scenes),
                   help=f"with a person, how often each of {', '.join(SCENES)} (comma-separated weights)")


def _synth(s):
    s.add_argument("--frames", type=positive_int, default=SYNTH_SPLITS[0], help="frames per sequence")
    s.add_argument("--sequences", type=positive_int, default=SYNTH_SPLITS[1], help="training sequences")
    s.add_argument("--test-sequences", type=positive_int, default=SYNTH_SPLITS[2], help="test sequences")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--events", action=argparse.BooleanOptionalAction, default=True,
                   help="occluders, depth drop-out bursts, near-range loss and fast motion (default on)")
    s.add_argument("--person", action="store_true",
                   help="a person behind the hand (torso, head, arms) and sometimes an object beside it")
    s.add_argument("--out", required=True)
    add_world_arguments(s, SynthConfig())


def _convert(c):
    c.add_argument("--dataset", choices=["nyu", "icvl"], required=True)
    c.add_argument("--root", required=True, help="dataset root (NYU: holds train/ and test/)")
    c.add_argument("--out", required=True, help="output folder; one sub-folder per split")
    c.add_argument("--shards", type=positive_int, default=SHARDS)
    c.add_argument("--centre-scale", type=centre_scale, default=1.0,
                   help="ours: the crops' centre of mass in the cube scaled by this (0-1; default 1, the paper's)")
    c.add_argument("--image-size", type=positive_int, default=PAPER_IMAGE_SIZE, help="crop size M (a multiple of 16)")
    c.add_argument("--splits", nargs="+", default=["train", "test"])


def _train(t):
    d = _defaults(TrainConfig)
    t.add_argument("--records", required=True, help="folder written by `cadstn convert` (holds train/, "
                                                     "optionally val/); crop size and joints come from its manifest")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--stages", nargs="+", choices=STAGES,
                   help="default: all; with --from-preset spatial, temporal and fusion")
    t.add_argument("--from-preset", metavar="NAME", help="fine-tune a preset (`cadstn presets`) on these records: "
                                                         "every stage starts from its network")
    t.add_argument("--steps", type=positive_int, help="steps per stage (default: the paper's 60k/40k)")
    t.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    t.add_argument("--lr", type=positive_float, default=d["learning_rate"])
    t.add_argument("--decay-every", type=positive_int, default=d["decay_every"])
    t.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"])
    t.add_argument("--seq-len", type=positive_int, default=CADSTNConfig().seq_len)
    t.add_argument("--mixed-precision", action="store_true")
    t.add_argument("--strategy", choices=STRATEGIES, default=d["strategy"])
    t.add_argument("--no-augment", action="store_true", help="e.g. for ICVL, which is augmented already")
    t.add_argument("--rotation", type=degrees, default=d["rotation"], metavar="DEG",
                   help="ours: also rotate each training crop by a random angle within +- DEG (0-180; default 0)")
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
                "per frame; measure its error on validation data first; default: the trained layers")


def _export(x):
    x.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    x.add_argument("--out", required=True)
    x.add_argument("--records", help="TFRecord glob of real crops for parity checks (e.g. the test split)")
    x.add_argument("--calibration-records", help="TFRecord glob for int8 calibration (e.g. the train split; "
                                                  "default: the parity crops)")
    x.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    x.add_argument("--clips", type=positive_int, default=PARITY_CLIPS, help="clips of T crops for parity checks and calibration")
    x.add_argument("--no-onnx", action="store_true")
    x.add_argument("--fc-rank", type=positive_int, help=FC_RANK_HELP + " (TFLite/ONNX spatial and step, named *_rankR)")
    x.add_argument("--no-saved-model", action="store_true")


def _compress(c):
    c.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    c.add_argument("--fc-rank", type=positive_int, required=True, help="rank of the fc layers")
    c.add_argument("--records", required=True, help="TFRecord glob of training crops the factors are fitted to "
                                                    "(e.g. the train split)")
    c.add_argument("--clips", type=positive_int, default=DemoConfig().low_rank_clips, help="clips of T crops read from --records")


def _track(t):
    which = t.add_mutually_exclusive_group()
    which.add_argument("--bundle", help="bundle folder (written by `cadstn demo` or save_bundle)")
    which.add_argument("--preset", default=DEFAULT_PRESET, help=f"a shipped preset (`cadstn presets`; default "
                                                                f"{DEFAULT_PRESET}), used where no --bundle is given")
    t.add_argument("--source", required=True, help=" | ".join(SOURCE_KINDS))
    t.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0])
    t.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help="TFLite: the step model's precision")
    t.add_argument("--fc-rank", type=positive_int, help=FC_RANK_HELP)
    t.add_argument("--jsonl", help="one JSON line per frame: frame, source, timestamp, found, joints_mm (camera mm); "
                                   "'-': standard output")
    t.add_argument("--video", help="depth with the skeleton, fps and found/lost (.mp4 or .avi)")
    t.add_argument("--show", action="store_true", help="a live window (needs OpenCV with a GUI and a display)")
    t.add_argument("--frames", type=positive_int, help="stop after this many frames (default: the whole source)")
    t.add_argument("--camera", help="pngs: fx,fy,cx,cy,width,height[,depth_unit_mm] (default: the folder's "
                                    "camera.json)")
    t.add_argument("--refiner", choices=("auto", "on", "off"), default="auto",
                   help="the bundle's centre refiner: auto (on where the bundle says it helps on real frames), on, off")
    t.add_argument("--upright", choices=("auto", "on", "off"), default="auto",
                   help="turn each crop so the hand's axis lies on the crop's nearest axis before the networks see it "
                        "(auto: on for NYU-layout bundles, trained with the paper's turned copies; docs/decisions.md)")
    t.add_argument("--detector", default="learned",
                   help="how the hand is found where there is no previous frame: 'learned' (default: the "
                        "bundle's own hand detector, else the package's), 'geometric' (no network), or a trained "
                        "detector's .keras path")


def _presets(p):
    p.add_argument("--card", metavar="NAME", help="print this preset's model card")


# name -> (help, add flags, the function of keras_cadstn.commands that runs it)
COMMANDS = {
    "synth": ("write synthetic depth-hand sequences in the NYU on-disk format", _synth, "cmd_synth"),
    "convert": ("pre-process a dataset into sharded TFRecords", _convert, "cmd_convert"),
    "train": ("train CADSTN's stages (Algorithm 1) on converted TFRecords", _train, "cmd_train"),
    "eval": ("compare results files against ground truth: table + plots", _eval, "cmd_eval"),
    "export": ("SavedModel (TF Serving), TFLite fp32/fp16/int8 and ONNX of a bundle", _export, "cmd_export"),
    "compress": ("add to a bundle its streaming step with low-rank fc layers (for the tracker's --fc-rank)",
                 _compress, "cmd_compress"),
    "track": ("track a hand live from a depth camera, a recording or a folder of frames", _track, "cmd_track"),
    "demo": ("the whole path: synthetic data by default (no download needed)", add_demo_arguments, "cmd_demo"),
    "presets": ("list the pretrained presets shipped with the package, or print one's model card", _presets,
                "cmd_presets"),
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cadstn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_, add, run) in COMMANDS.items():
        s = sub.add_parser(name, help=help_)
        add(s)
        s.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines and library warnings")
        s.set_defaults(func=run)
    return p


def quiet_tensorflow(verbose: bool = False) -> None:
    """Load TensorFlow with its C++ start-up lines (oneDNN, CUDA probing) kept off the terminal, and
    silence warnings known to be harmless; ``verbose`` leaves both as they are."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # the lines come from C++ at import and at device probing, past Python's sys.stderr
    try:
        import tensorflow as tf
        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


def run_reporting_errors(prog: str, func: str, args, verbose: bool = False) -> int:
    """Run a command of keras_cadstn.commands; a library error or an OS error becomes one line on
    stderr and exit code 2, a Ctrl-C the command did not handle one line and exit code 130."""
    try:
        quiet_tensorflow(verbose)
        # deferred on purpose: the commands load TensorFlow, which must come after quiet_tensorflow
        from keras_cadstn import commands
        return getattr(commands, func)(args) or 0
    except (CadstnError, OSError) as e:
        text = str(e).strip().replace("\n", "; ") or type(e).__name__
        print(f"{prog}: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (start-up, loading): one line
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv=None) -> int:
    """Run ``cadstn``; returns the exit code (2 for every error, bad flags included)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, one line already printed)
        return int(e.code or 0)
    return run_reporting_errors(f"cadstn {args.command}", args.func, args, args.verbose)


def example_main(dataset: str, description: str, argv=None) -> int:
    """examples/train_<dataset>.py: the main job's flags, with --data restricted to that dataset."""
    parser = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines and library warnings")
    args = parser.parse_args(argv)
    if args.data != "synthetic" and not args.data.startswith(dataset + ":"):
        parser.error(f"--data must be 'synthetic' or '{dataset}:/path'")
    return run_reporting_errors(parser.prog, args.func, args, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
