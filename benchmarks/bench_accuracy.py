"""The accuracy benchmark: CADSTN's ablation (Table IV), the fixed-weight sweep with w chosen on
validation (Table V) and the learned fusion, over N training seeds, on synthetic sequences with
occluders, depth drop-out bursts, near-range loss and fast motion (what single frames cannot resolve).

    python benchmarks/bench_accuracy.py                    # 3 seeds, 64x64, the demo's schedule
    python benchmarks/bench_accuracy.py --seeds 5 --out bench_acc --steps-scale 2
    python benchmarks/bench_accuracy.py --image-size 128 --steps-scale 10   # on a GPU
    python benchmarks/bench_accuracy.py --quick            # every row and column in minutes; numbers mean nothing

Prints (and writes to --out as Markdown and JSON) mean +- sd per row over seeds, overall and on
clean / occluded frames (occlusion >= 0.1), paired differences over seeds with 95% t intervals,
the gate's temporal weight w1 against the occlusion fraction (PNG), the nearest-training-pose
oracle (how well the training poses cover the test poses) and the wall time. Fixed weights are
chosen on the validation split, never on test. Training runs resume where they stopped.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

OCCLUDED = 0.1  # a frame is "occluded" when at least this fraction of the hand is lost
DIFFERENCES = (("Temporal", "Baseline"), ("Spatial", "Baseline"), ("CADSTN", "Spatial"), ("CADSTN", "Temporal"),
               ("CADSTN", "Fixed w (val)"))
SUBSETS = ("all", "clean", "occluded")


def config(args):
    from keras_cadstn.config import benchmark
    cfg = benchmark(args.image_size, quick=args.quick, workdir=args.workdir, seeds=args.seeds,
                    test_sequences=args.test_sequences, temporal_init=args.temporal_init[0])
    return cfg.scaled(args.steps_scale) if args.steps_scale != 1.0 and not args.quick else cfg


def nearest_pose_oracle(train_dir: str, test_dir: str) -> float:
    """Mean error (mm) of predicting each test frame by the training frame whose palm-relative pose
    is nearest to its ground truth: the floor any method can reach by recalling training poses."""
    from keras_cadstn.data.metrics import mean_error
    from keras_cadstn.data.splits import read_test_split
    _, tr = read_test_split(os.path.join(train_dir, "*.tfrecord"))
    _, te = read_test_split(os.path.join(test_dir, "*.tfrecord"))
    rel_tr = tr["joints_xyz"].reshape(len(tr["center_xyz"]), -1, 3) - tr["center_xyz"][:, None]
    rel_te = te["joints_xyz"].reshape(len(te["center_xyz"]), -1, 3) - te["center_xyz"][:, None]
    a, b = rel_te.reshape(len(rel_te), -1), rel_tr.reshape(len(rel_tr), -1)
    d = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
    nearest = rel_tr[np.argmin(d, axis=1)]
    return mean_error(rel_te, nearest)


def run_folder(workdir: str, seed: int, temporal_init: str, fusion_data: str = "train", fusion_steps=None,
               centre_motion: bool = False, gate_input: str | None = None) -> str:
    """One run folder per seed, temporal initialisation, temporal input, gate training data and
    (when not the default) gate training steps and gate input."""
    return os.path.join(workdir, f"run_seed{seed}" + ("" if temporal_init == "baseline_frozen" else f"_{temporal_init}")
                        + ("_motion" if centre_motion else "")
                        + ("" if fusion_data == "train" else f"_fusion{fusion_data}")
                        + ("" if fusion_steps is None else f"_gate{fusion_steps}steps")
                        + ("" if gate_input is None else f"_gate{gate_input}"))


def variant_name(temporal_init: str, centre_motion: bool) -> str:
    return temporal_init + (" + centre motion" if centre_motion else "")


def share_stages(source: str, run_dir: str, stages=("baseline", "sliced3d", "spatial")) -> None:
    """A variant run reuses the seed's trained stages that it does not change (copied)."""
    import shutil
    if source == run_dir:
        return
    for stage in stages:
        if os.path.isfile(os.path.join(source, stage, "model.keras")) and not os.path.isdir(os.path.join(run_dir, stage)):
            shutil.copytree(os.path.join(source, stage), os.path.join(run_dir, stage))


def subset_masks(occlusion) -> dict:
    """{subset: boolean mask} of the test frames: all, clean, occluded (>= OCCLUDED)."""
    return {"all": np.ones(len(occlusion), bool), "clean": occlusion < OCCLUDED, "occluded": occlusion >= OCCLUDED}


def subset_errors(run: dict) -> dict:
    """{subset: {method: mean error}} of one seed's test predictions."""
    masks = subset_masks(run["test"]["meta"]["occlusion"])
    return {s: {name: float(e[m].mean()) if m.any() else float("nan") for name, e in run["test"]["frame_errors"].items()}
            for s, m in masks.items()}


def subset_parts(run: dict) -> dict:
    """{part: {subset: {method: mean mm}}} of one seed's test predictions, the error split into the
    hand's global offset and the articulation (``evaluate.error_parts``)."""
    from keras_cadstn.data.metrics import error_parts
    masks = subset_masks(run["test"]["meta"]["occlusion"])
    parts = {name: error_parts(run["test"]["gt"], p) for name, p in run["test"]["pred"].items()}
    return {part: {s: {name: float(v[part][m].mean()) if m.any() else float("nan") for name, v in parts.items()}
                   for s, m in masks.items()} for part in ("offset", "articulation")}


def subset_sweeps(run: dict) -> dict:
    """{subset: {w: mean error}} of J = w T + (1 - w) S on clean and on occluded test frames: what a
    gate that knew the occlusion could gain at best (reference only, never used to choose)."""
    from keras_cadstn.training.evaluate import fixed_weight_sweep
    t = run["test"]
    masks = subset_masks(t["meta"]["occlusion"])
    out = {}
    for subset in ("clean", "occluded"):
        mask = masks[subset]
        if mask.any():
            out[subset] = fixed_weight_sweep(t["gt"][mask], t["pred"]["Temporal"][mask], t["pred"]["Spatial"][mask])
    return out


def gate_plot(runs: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0, 1, 11)
    for k, run in enumerate(runs):
        occ, w1 = run["test"]["meta"]["occlusion"], run["test"]["gate_w1"]
        ax.scatter(occ, w1, s=4, alpha=0.3, label=f"seed {k} frames")
        idx = np.digitize(occ, bins) - 1
        centres = [(bins[i] + bins[i + 1]) / 2 for i in range(10) if (idx == i).any()]
        means = [w1[idx == i].mean() for i in range(10) if (idx == i).any()]
        ax.plot(centres, means, "-o", label=f"seed {k} mean per bin")
    ax.set(xlabel="occlusion fraction of the frame", ylabel="gate w1 (weight of the temporal network)",
           ylim=(0, 1), title="Learned fusion: temporal weight against occlusion (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, help="training seeds (default 3; --quick 2)")
    p.add_argument("--out", default="bench_accuracy", help="folder for the tables (Markdown, JSON) and plots")
    p.add_argument("--workdir", help="data, records and runs (default ~/.cache/keras_cadstn/bench_<size>)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps-scale", type=float, default=1.0)
    p.add_argument("--temporal-init", nargs="+", default=["baseline_finetune"],
                   choices=("baseline_frozen", "baseline_finetune", "scratch"),
                   help="how the temporal encoder starts; with several, the later ones retrain only the temporal and "
                        "fusion stages (same Baseline/Sliced-3D/Spatial runs) and are compared with the first, paired by seed")
    p.add_argument("--centre-motion", nargs="+", choices=("on", "off"),
                   help="whether the temporal network reads the crop centre's motion (default: CADSTNConfig's "
                        "default); with both, each is a variant as with --temporal-init (the first gives the main tables)")
    p.add_argument("--fusion-data", choices=("train", "val"), default="val",
                   help="records the gate trains on: the training split (the paper) or the validation split")
    p.add_argument("--fusion-steps", type=int, help="the gate's training steps (default: the demo's); the other "
                   "stages are shared with the default runs")
    p.add_argument("--gate-input", choices=("crop", "predictions"),
                   help="what the gate looks at (CADSTNConfig.gate_input; default: its default); another than the "
                        "default trains only the gate, the other stages shared with the default runs")
    p.add_argument("--test-sequences", type=int, default=16,
                   help="test sequences of 80 frames (their seeds follow the training and validation ones, so more "
                        "test sequences leave the training data and trained runs as they are)")
    p.add_argument("--quick", action="store_true", help="tiny configuration for smoke tests")
    args = p.parse_args(argv)
    start = time.time()
    from keras_cadstn.config import CADSTNConfig
    args.centre_motion = args.centre_motion or ["on" if CADSTNConfig().centre_motion else "off"]

    from keras_cadstn.data.metrics import paired_difference, spread
    from keras_cadstn.data.tfrecord import dataset_spec_of, read_manifest
    from keras_cadstn.demo import prepare_records
    from keras_cadstn.training.evaluate import evaluate_stages
    from keras_cadstn.training.stages import train_cadstn

    cfg = config(args)
    if args.fusion_steps:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps={**cfg.train.steps,
                                                                                   "fusion": args.fusion_steps}))
    rec_dir, _ = prepare_records(cfg)
    spec = dataset_spec_of(read_manifest(os.path.join(rec_dir, "train")))
    network = dict(cfg.network)
    other_gate = args.gate_input if args.gate_input and args.gate_input != CADSTNConfig().gate_input else None
    if other_gate:
        network["gate_input"] = other_gate
    variants = {}
    first = (args.temporal_init[0], args.centre_motion[0] == "on")
    for init in args.temporal_init:
        for motion in (m == "on" for m in args.centre_motion):
            mcfg = CADSTNConfig(num_joints=spec.num_joints, image_size=cfg.image_size, seq_len=cfg.seq_len,
                                **{**network, "centre_motion": motion})
            runs = []
            for seed in range(cfg.seeds):
                t0 = time.time()
                run_dir = run_folder(cfg.workdir, seed, init, args.fusion_data, args.fusion_steps, motion, other_gate)
                share_stages(run_folder(cfg.workdir, seed, first[0], args.fusion_data, centre_motion=first[1]), run_dir)
                if args.fusion_data != "train":  # the same networks, only the gate trained on other records
                    share_stages(run_folder(cfg.workdir, seed, init, centre_motion=motion), run_dir, ("temporal",))
                if args.fusion_steps or other_gate:  # the default runs' networks, only the gate trained otherwise
                    share_stages(run_folder(cfg.workdir, seed, init, args.fusion_data, centre_motion=motion), run_dir,
                                 ("baseline", "sliced3d", "spatial", "temporal"))
                tcfg = dataclasses.replace(cfg.train, seed=seed, temporal_init=init)
                trained = train_cadstn(os.path.join(rec_dir, "train", "*.tfrecord"), run_dir, mcfg, tcfg,
                                       fusion_pattern=os.path.join(rec_dir, args.fusion_data, "*.tfrecord"))
                runs.append(evaluate_stages(trained, rec_dir, cfg.seq_len))
                print(f"{variant_name(init, motion)} seed {seed}: {time.time() - t0:.0f} s; test errors "
                      + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1]["test"]["errors"].items()), flush=True)
            variants[variant_name(init, motion)] = runs
    runs = variants[variant_name(*first)]

    per_seed = [subset_errors(r) for r in runs]
    methods = list(runs[0]["test"]["errors"])
    occ = runs[0]["test"]["meta"]["occlusion"]
    table = {s: {m: spread([e[s][m] for e in per_seed]) for m in methods} for s in SUBSETS}
    diffs = {s: {f"{a} - {b}": paired_difference([e[s][a] for e in per_seed], [e[s][b] for e in per_seed])
                 for a, b in DIFFERENCES} for s in SUBSETS}
    masks = subset_masks(occ)
    gate_per_seed = {s: [float(r["test"]["gate_w1"][masks[s]].mean()) if masks[s].any() else float("nan") for r in runs]
                     for s in ("clean", "occluded")}
    gate = {s: spread(v) for s, v in gate_per_seed.items()}
    gate_gap = paired_difference(gate_per_seed["occluded"], gate_per_seed["clean"])
    sweep_test = {w: spread([r["test"]["sweep"][w] for r in runs]) for w in runs[0]["test"]["sweep"]}
    sweeps = [subset_sweeps(r) for r in runs]
    best_w = {s_: [min(sw[s_], key=sw[s_].get) for sw in sweeps if s_ in sw] for s_ in ("clean", "occluded")}
    parts_per_seed = [subset_parts(r) for r in runs]
    parts = {part: {s: {m: spread([p[part][s][m] for p in parts_per_seed]) for m in methods} for s in ("clean", "occluded")}
             for part in ("offset", "articulation")}
    parts_diff = {part: {s: paired_difference([p[part][s]["Temporal"] for p in parts_per_seed],
                                              [p[part][s]["Baseline"] for p in parts_per_seed]) for s in ("clean", "occluded")}
                  for part in ("offset", "articulation")}
    oracle = nearest_pose_oracle(os.path.join(rec_dir, "train"), os.path.join(rec_dir, "test"))
    wall = time.time() - start

    n = cfg.seeds
    lines = [f"Accuracy benchmark: {n} seeds, {cfg.image_size}x{cfg.image_size}, steps "
             + ", ".join(f"{k} {v}" for k, v in cfg.train.steps.items() if k != "refine")  # not trained here
             + f", temporal network {variant_name(*first)}, gate on the {other_gate or CADSTNConfig().gate_input} trained on "
             f"{args.fusion_data} with the {cfg.train.fusion_loss} loss; test split {len(occ)} frames, "
             f"{int((occ >= OCCLUDED).sum())} occluded (>= {OCCLUDED}); wall time {wall / 60:.1f} min", "",
             "Mean error (mm), mean ± sd over seeds:", "", "| method | all | clean | occluded |", "|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{table[s][m]['mean']:.2f} ± {table[s][m]['sd']:.2f}" for s in SUBSETS) + " |")
    lines += ["", "Paired differences over seeds (mm; negative = the first is better), mean [95% interval]:", "",
              "| difference | all | clean | occluded |", "|---|---|---|---|"]
    for name in diffs["all"]:
        lines.append(f"| {name} | " + " | ".join(
            f"{diffs[s][name]['mean']:+.2f} [{diffs[s][name]['low']:+.2f}, {diffs[s][name]['high']:+.2f}]" for s in SUBSETS) + " |")
    lines += ["", "Fixed weight w on the temporal network: chosen on validation per seed: "
              + ", ".join(f"{r['w_val']:.1f}" for r in runs) + "; test error of every w (mean over seeds, for reference only):",
              "", "| w | " + " | ".join(f"{w:.1f}" for w in sweep_test) + " |", "|---|" + "---|" * len(sweep_test),
              "| mm | " + " | ".join(f"{v['mean']:.2f}" for v in sweep_test.values()) + " |", "",
              f"Gate w1 (temporal weight), mean over test frames: clean {gate['clean']['mean']:.3f} ± {gate['clean']['sd']:.3f}, "
              f"occluded {gate['occluded']['mean']:.3f} ± {gate['occluded']['sd']:.3f} (sd over seeds); occluded - clean, "
              f"paired over seeds: {gate_gap['mean']:+.4f} [{gate_gap['low']:+.4f}, {gate_gap['high']:+.4f}]",
              "Best fixed w per subset of the test frames, per seed (what an occlusion-aware gate could reach at "
              "best; reference only): clean " + ", ".join(f"{w:.1f}" for w in best_w["clean"]) + "; occluded "
              + ", ".join(f"{w:.1f}" for w in best_w["occluded"]),
              f"Nearest-training-pose oracle on the test split: {oracle:.2f} mm", "",
              "Where the error lies (mm, mean ± sd over seeds): offset = |mean over joints of prediction - truth| "
              "(where the whole hand is placed), articulation = mean joint error with that offset removed:", "",
              "| method | offset clean | offset occluded | articulation clean | articulation occluded |",
              "|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{parts[part][s][m]['mean']:.2f} ± {parts[part][s][m]['sd']:.2f}"
                                              for part in ("offset", "articulation") for s in ("clean", "occluded")) + " |")
    lines.append("| Temporal - Baseline (paired, 95% interval) | " + " | ".join(
        f"{parts_diff[part][s]['mean']:+.2f} [{parts_diff[part][s]['low']:+.2f}, {parts_diff[part][s]['high']:+.2f}]"
        for part in ("offset", "articulation") for s in ("clean", "occluded")) + " |")
    comparison = {}
    if len(variants) > 1:
        first_name = variant_name(*first)
        base = [subset_errors(r) for r in variants[first_name]]

        def interval(d):
            return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
        lines += ["", f"Temporal network variants (same Baseline/Spatial runs; differences paired by seed; "
                  f"\"vs first\": against {first_name}):", "",
                  "| temporal network | validation: Temporal all | (occluded) | validation: Temporal vs first (all) | "
                  "(occluded) | Temporal all | Temporal occluded | Temporal - Baseline (occluded) | CADSTN all | "
                  "CADSTN - Fixed w (val) | gate w1 occluded - clean | Temporal vs first (all) | (occluded) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, vruns in variants.items():
            errs = [subset_errors(r) for r in vruns]
            vmasks = subset_masks(vruns[0]["test"]["meta"]["occlusion"])
            w1 = {s_: [float(r["test"]["gate_w1"][vmasks[s_]].mean()) for r in vruns] for s_ in ("clean", "occluded")}
            row = {s_: spread([e[s_]["Temporal"] for e in errs]) for s_ in ("all", "occluded")}
            row["val"] = {s_: spread([r["val_errors"]["Temporal"][s_] for r in vruns]) for s_ in ("all", "occluded")}
            row["val_diff"] = {s_: paired_difference([r["val_errors"]["Temporal"][s_] for r in vruns],
                                                     [r["val_errors"]["Temporal"][s_] for r in variants[first_name]])
                               for s_ in ("all", "occluded")}
            row["cadstn"] = spread([e["all"]["CADSTN"] for e in errs])
            row["temporal_minus_baseline_occluded"] = paired_difference([e["occluded"]["Temporal"] for e in errs],
                                                                        [e["occluded"]["Baseline"] for e in errs])
            row["cadstn_minus_fixed"] = paired_difference([e["all"]["CADSTN"] for e in errs],
                                                          [e["all"]["Fixed w (val)"] for e in errs])
            row["gate_occluded_minus_clean"] = paired_difference(w1["occluded"], w1["clean"])
            row["diff"] = {s_: paired_difference([e[s_]["Temporal"] for e in errs], [e[s_]["Temporal"] for e in base])
                           for s_ in ("all", "occluded")}
            comparison[name] = row
            g = row["gate_occluded_minus_clean"]
            lines.append(f"| {name} | " + " | ".join(f"{row['val'][s_]['mean']:.2f} ± {row['val'][s_]['sd']:.2f}"
                                                     for s_ in ("all", "occluded"))
                         + " | " + " | ".join(interval(row["val_diff"][s_]) for s_ in ("all", "occluded"))
                         + f" | {row['all']['mean']:.2f} ± {row['all']['sd']:.2f} | {row['occluded']['mean']:.2f} ± "
                         f"{row['occluded']['sd']:.2f} | {interval(row['temporal_minus_baseline_occluded'])} | "
                         f"{row['cadstn']['mean']:.2f} ± {row['cadstn']['sd']:.2f} | {interval(row['cadstn_minus_fixed'])} | "
                         f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] | "
                         + " | ".join(interval(row["diff"][s_]) for s_ in ("all", "occluded")) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "accuracy.md"), "w") as f:
        f.write(text + "\n\n`python benchmarks/bench_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n")
    with open(os.path.join(args.out, "accuracy.json"), "w") as f:
        json.dump({"config": {"seeds": n, "image_size": cfg.image_size, "steps": cfg.train.steps,
                              "temporal_init": args.temporal_init, "centre_motion": args.centre_motion,
                              "gate_input": other_gate or CADSTNConfig().gate_input,
                              "fusion_data": args.fusion_data, "quick": args.quick},
                   "errors": table, "differences": diffs, "gate_w1": gate, "gate_w1_per_seed": gate_per_seed,
                   "gate_w1_occluded_minus_clean": gate_gap, "w_val": [r["w_val"] for r in runs],
                   "sweep_test": sweep_test, "best_w_by_subset": best_w, "oracle_mm": oracle, "wall_s": wall,
                   "per_seed": per_seed, "error_parts": parts, "error_parts_temporal_minus_baseline": parts_diff,
                   "temporal_variants": comparison}, f, indent=1, default=float)
    gate_plot(runs, os.path.join(args.out, "gate_vs_occlusion.png"))
    print(f"\nwrote {args.out}/accuracy.md, accuracy.json, gate_vs_occlusion.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
