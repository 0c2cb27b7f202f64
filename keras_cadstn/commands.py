"""Sub-commands of ``cadstn`` beyond the data tools: train, eval, demo."""
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
                       augment=not args.no_augment, temporal_end_to_end=args.temporal_end_to_end)
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
    cfg = DemoConfig()
    changes = {k: v for k, v in (("workdir", args.workdir), ("image_size", args.image_size)) if v}
    if args.steps_scale != 1.0:
        changes["steps"] = tuple((s, max(int(n * args.steps_scale), 2)) for s, n in cfg.steps)
    run_demo(dataclasses.replace(cfg, **changes))


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

    d = sub.add_parser("demo", help="the whole path on synthetic data (no download needed)")
    d.add_argument("--workdir")
    d.add_argument("--image-size", type=int)
    d.add_argument("--steps-scale", type=float, default=1.0, help="scale every stage's steps (e.g. 0.02 to smoke-test)")
    d.set_defaults(func=cmd_demo)
