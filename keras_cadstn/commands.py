"""Sub-commands of ``cadstn`` beyond the data tools: train, eval, export, demo."""
from __future__ import annotations

import dataclasses
import os


def cmd_train(args):
    from keras_cadstn.models import CADSTNConfig
    from keras_cadstn.train import STAGES, TrainConfig, train_cadstn
    steps = {s: args.steps or TrainConfig().steps[s] for s in STAGES}
    tcfg = TrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr,
                       decay_every=args.decay_every, checkpoint_every=args.checkpoint_every,
                       mixed_precision=args.mixed_precision, strategy=args.strategy, seed=args.seed,
                       augment=not args.no_augment, shuffle=not args.no_shuffle,
                       temporal_end_to_end=args.temporal_end_to_end)
    mcfg = CADSTNConfig(num_joints=args.num_joints, image_size=args.image_size, seq_len=args.seq_len)
    train_cadstn(os.path.join(args.records, "train", "*.tfrecord"), args.run_dir, mcfg, tcfg, stages=args.stages)


def cmd_eval(args):
    from keras_cadstn.evaluate import comparison_table, load_results, plot_comparison
    from keras_cadstn.data.frames import get_spec
    gt = load_results(args.gt, args.dataset, args.fmt)
    results = {}
    for path in args.pred:
        pred = load_results(path, args.dataset, args.fmt)
        if pred.shape != gt.shape:
            raise ValueError(f"{path}: {len(pred)} frames, ground truth {args.gt} has {len(gt)}")
        results[os.path.basename(path)] = pred
    print(comparison_table(gt, results))
    paths = plot_comparison(gt, results, args.out, get_spec(args.dataset).joint_names, title=args.dataset.upper())
    print("plots: " + ", ".join(paths))


def cmd_demo(args):
    from keras_cadstn.demo import DemoConfig, run_demo
    cfg = DemoConfig() if args.data == "synthetic" else DemoConfig.paper(args.data)
    changes = {k: v for k, v in (("workdir", args.workdir), ("image_size", args.image_size),
                                 ("batch_size", args.batch_size), ("strategy", args.strategy)) if v}
    cfg = dataclasses.replace(cfg, mixed_precision=args.mixed_precision, **changes)
    run_demo(cfg.scaled(args.steps_scale) if args.steps_scale != 1.0 else cfg, export=not args.no_export)


def cmd_export(args):
    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.export import export_all
    reports, refused = export_all(load_bundle(args.bundle), args.out, records=args.records, precisions=args.precisions,
                                  onnx=not args.no_onnx, saved_model=not args.no_saved_model, num_clips=args.clips,
                                  calibration_records=args.calibration_records)
    print(f"\n{len(reports)} artifacts, each checked against the Keras model on real crops "
          f"({args.records or 'synthetic hands rendered with the bundle camera'}"
          + (f"; int8 calibrated on {args.calibration_records}" if args.calibration_records else "") + ")"
          + (f"; {len(refused)} refused (parity beyond tolerance, nothing written)." if refused else "."))
    return 1 if refused else 0


def add_demo_arguments(d):
    """The main job's flags (shared by ``cadstn demo`` and examples/train_nyu.py, train_icvl.py)."""
    d.add_argument("--data", default="synthetic",
                   help="'synthetic' (default: generated on first use), 'nyu:/path' or 'icvl:/path'")
    d.add_argument("--workdir", help="data cache, records, runs, results (default ~/.cache/keras_cadstn/...)")
    d.add_argument("--image-size", type=int, help="crop size (synthetic default 64, real data 128)")
    d.add_argument("--batch-size", type=int)
    d.add_argument("--steps-scale", type=float, default=1.0, help="scale every stage's steps (e.g. 0.02 to smoke-test)")
    d.add_argument("--strategy", choices=["default", "mirrored", "multiworker"])
    d.add_argument("--mixed-precision", action="store_true")
    d.add_argument("--no-export", action="store_true")
    d.set_defaults(func=cmd_demo)


def add_parsers(sub):
    t = sub.add_parser("train", help="train CADSTN's stages (Algorithm 1) on converted TFRecords")
    t.add_argument("--records", required=True, help="folder written by `cadstn convert` (holds train/)")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--stages", nargs="+", default=["baseline", "sliced3d", "spatial", "temporal", "fusion"])
    t.add_argument("--steps", type=int, help="steps per stage (default: the paper's 60k/40k)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--decay-every", type=int, default=20000)
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--num-joints", type=int, default=14)
    t.add_argument("--image-size", type=int, default=128)
    t.add_argument("--seq-len", type=int, default=16)
    t.add_argument("--mixed-precision", action="store_true")
    t.add_argument("--strategy", choices=["default", "mirrored", "multiworker"], default="default")
    t.add_argument("--no-augment", action="store_true", help="e.g. for ICVL, which is augmented already")
    t.add_argument("--no-shuffle", action="store_true", help="records in file order (reproducible runs)")
    t.add_argument("--temporal-end-to-end", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="compare results files against ground truth: table + plots")
    e.add_argument("--gt", required=True)
    e.add_argument("--pred", action="append", required=True)
    e.add_argument("--dataset", choices=["nyu", "icvl"], default="nyu")
    e.add_argument("--fmt", choices=["uvd", "xyz"], default="uvd")
    e.add_argument("--out", default="eval_plots")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="SavedModel (TF Serving), TFLite fp32/fp16/int8 and ONNX of a bundle")
    x.add_argument("--bundle", required=True, help="bundle folder (written by `cadstn demo` or save_bundle)")
    x.add_argument("--out", required=True)
    x.add_argument("--records", help="TFRecord glob of real crops for parity checks (e.g. the test split)")
    x.add_argument("--calibration-records", help="TFRecord glob for int8 calibration (e.g. the train split; "
                                                  "default: the parity crops)")
    x.add_argument("--precisions", nargs="+", choices=["float32", "float16", "dynamic_int8", "int8"],
                   default=["float32", "float16", "dynamic_int8", "int8"])
    x.add_argument("--clips", type=int, default=20, help="clips of T crops for parity checks and calibration")
    x.add_argument("--no-onnx", action="store_true")
    x.add_argument("--no-saved-model", action="store_true")
    x.set_defaults(func=cmd_export)

    add_demo_arguments(sub.add_parser("demo", help="the whole path: synthetic data by default (no download needed)"))


def example_main(dataset: str, description: str, argv=None) -> int:
    """examples/train_<dataset>.py: the main job's flags, with --data restricted to that dataset."""
    import argparse
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "synthetic" and not args.data.startswith(dataset + ":"):
        parser.error(f"--data must be 'synthetic' or '{dataset}:/path'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.func(args)
    return 0
