"""Choosing the fusion gate without the test split: K-fold cross-validation over the validation
sequences.

The gate (Algorithm 1's last stage) trains on the validation split, so the validation split cannot
also score its variants. Here the validation sequences are cut into K folds; for every fold the
gate trains on the other folds and predicts the held-out one, and each variant is scored by its
out-of-fold error (every validation frame predicted by a gate that never saw it). The fixed fusion
weight it is compared with is chosen, per fold, on the same sequences the gate trained on. Variants
whose gate trains on the training split (the paper's setting) are scored on every validation
frame. The spatial and temporal networks are the accuracy benchmark's trained runs (the same
workdir, data and schedule: run ``bench_accuracy.py`` first, or this script trains them).

    python benchmarks/bench_gate_cv.py                 # 5 seeds, 2 folds, every gate variant
    python benchmarks/bench_gate_cv.py --quick         # every row in a couple of minutes; numbers mean nothing

Prints (and writes to --out as Markdown and JSON) per variant the out-of-fold CADSTN error (mean
+- sd over seeds, all and occluded frames), CADSTN - fixed w and each variant - the paper's gate,
paired over seeds with 95% t intervals, the spread of the gate's weight over frames, and the
variant with the lowest out-of-fold error.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_accuracy import OCCLUDED, config, run_folder  # noqa: E402

# (what the gate reads, its loss, the records it trains on); the first is the paper's gate
VARIANTS = (("crop", "l2", "train"), ("crop", "l2", "val"), ("predictions", "l2", "val"),
            ("predictions", "joint_distance", "val"))


def variant_name(variant) -> str:
    gate_input, loss, data = variant
    return f"{gate_input} gate, {loss} loss, trained on {'training' if data == 'train' else 'validation'} split"


def fold_sequences(val_split, folds: int) -> list:
    """The validation split's sequence ids dealt into ``folds`` folds (every ``folds``-th sequence)."""
    from keras_cadstn.errors import ConfigError
    ids = sorted({f.sequence_id for f in val_split.frames})
    if not 2 <= folds <= len(ids):
        raise ConfigError(f"{folds} folds need at least {folds} validation sequences; the split has {len(ids)}")
    return [set(ids[k::folds]) for k in range(folds)]


def fold_records(cfg, rec_dir: str, folds: int) -> list:
    """[(records the gate trains on, held-out records)] per fold, converted once into ``rec_dir``."""
    from keras_cadstn.data.tfrecord import convert_split, read_manifest
    from keras_cadstn.demo import demo_splits
    val = demo_splits(cfg)["val"]
    out = []
    for k, held in enumerate(fold_sequences(val, folds)):
        pair = []
        for part, keep in (("gate", lambda f: f.sequence_id not in held), ("heldout", lambda f: f.sequence_id in held)):
            folder = os.path.join(rec_dir, f"val_fold{k}of{folds}_{part}")
            manifest = os.path.join(folder, "manifest.json")
            if not (os.path.isfile(manifest) and read_manifest(folder).get("complete")):
                split = dataclasses.replace(val, frames=[f for f in val.frames if keep(f)])
                convert_split(split, folder, shards=1, image_size=cfg.image_size)
            pair.append(os.path.join(folder, "*.tfrecord"))
        out.append(tuple(pair))
    return out


def link_networks(source: str, run_dir: str) -> None:
    """The gate's run folder reads the seed's trained spatial and temporal networks (linked, not copied)."""
    os.makedirs(run_dir, exist_ok=True)
    for stage in ("spatial", "temporal"):
        link = os.path.join(run_dir, stage)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(source, stage)), link)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, help="training seeds (default 5; --quick 2)")
    p.add_argument("--folds", type=int, default=2, help="folds of the validation sequences (default 2)")
    p.add_argument("--out", default="bench_gate_cv", help="folder for the tables (Markdown, JSON)")
    p.add_argument("--workdir", help="the accuracy benchmark's workdir (default ~/.cache/keras_cadstn/bench_<size>)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="tiny configuration for smoke tests")
    args = p.parse_args(argv)
    start = time.time()
    import keras

    from keras_cadstn.data.tfrecord import dataset_spec_of, read_manifest
    from keras_cadstn.demo import prepare_records
    from keras_cadstn.evaluate import (fixed_weight_sweep, ground_truth, paired_difference, per_frame_error,
                                       predict_frames_or_clips, predictions_mm, read_test_split, spread)
    from keras_cadstn.models import CADSTNConfig, gate_weights_model, spatial_inference_model
    from keras_cadstn.train import load_stage, train_cadstn

    bench_args = argparse.Namespace(workdir=args.workdir, quick=args.quick, image_size=args.image_size, seeds=None,
                                    test_sequences=16, steps_scale=1.0, temporal_init=["baseline_finetune"])
    cfg = config(bench_args)
    if args.quick and not args.workdir:  # not the accuracy benchmark's quick data: this one holds out more
        cfg = dataclasses.replace(cfg, workdir=os.path.join(os.path.dirname(cfg.workdir), "bench_gate_cv_quick"))
    seeds = args.seeds or (2 if args.quick else 5)
    if args.quick:  # two validation sequences at least: one per fold
        cfg = dataclasses.replace(cfg, val_sequences=max(cfg.val_sequences, args.folds))
    cfg = dataclasses.replace(cfg, seeds=seeds)
    rec_dir, _ = prepare_records(cfg)
    spec = dataset_spec_of(read_manifest(os.path.join(rec_dir, "train")))
    folds = fold_records(cfg, rec_dir, args.folds)
    train_pattern = os.path.join(rec_dir, "train", "*.tfrecord")
    seq_len = cfg.seq_len

    def read(pattern):
        crops, meta = read_test_split(pattern)
        return crops, meta, ground_truth(meta)
    parts = [(read(gate_pattern), read(held_pattern)) for gate_pattern, held_pattern in folds]
    occluded = np.concatenate([held[1]["occlusion"] >= OCCLUDED for _, held in parts])
    results = {v: {"all": [], "occluded": [], "w1_sd": []} for v in VARIANTS}
    fixed_scores = {"all": [], "occluded": []}  # the fixed weight, per seed
    base_cfg = CADSTNConfig(num_joints=spec.num_joints, image_size=cfg.image_size, seq_len=seq_len,
                            **{**dict(cfg.network), "centre_motion": False})
    for seed in range(seeds):
        main_run = run_folder(cfg.workdir, seed, "baseline_finetune", "val")
        tcfg = dataclasses.replace(cfg.train, seed=seed, temporal_init="baseline_finetune")
        # the seed's spatial and temporal networks (trained here if the accuracy benchmark has not)
        train_cadstn(train_pattern, main_run, base_cfg, tcfg, stages=("baseline", "sliced3d", "spatial", "temporal"))
        nets = {"Spatial": spatial_inference_model(load_stage(main_run, "spatial")),
                "Temporal": load_stage(main_run, "temporal")}
        fold_preds = [(predictions_mm(nets, g[0], g[1], seq_len), predictions_mm(nets, h[0], h[1], seq_len))
                      for g, h in parts]
        gt = np.concatenate([h[2] for _, h in parts])
        # the fixed weight: per fold, the best on the sequences its gate trains on
        fixed = []
        for (g, h), (pg, ph) in zip(parts, fold_preds):
            sweep = fixed_weight_sweep(g[2], pg["Temporal"], pg["Spatial"])
            w = min(sweep, key=sweep.get)
            fixed.append(w * ph["Temporal"] + (1 - w) * ph["Spatial"])
        fixed_err = per_frame_error(gt, np.concatenate(fixed))
        fixed_scores["all"].append(float(fixed_err.mean()))
        fixed_scores["occluded"].append(float(fixed_err[occluded].mean()) if occluded.any() else float("nan"))
        keras.backend.clear_session()
        for variant in VARIANTS:
            gate_input, loss, data = variant
            mcfg = dataclasses.replace(base_cfg, gate_input=gate_input)
            vcfg = dataclasses.replace(tcfg, fusion_loss=loss)
            preds, w1 = [], []
            for k, ((gate_pattern, _), (g, h)) in enumerate(zip(folds, parts)):
                # a gate trained on the training split never sees validation frames: one run for
                # every fold (trained at the first, loaded at the others)
                run_dir = os.path.join(cfg.workdir, "gate_cv", f"seed{seed}_{gate_input}_{loss}_{data}"
                                       + (f"_fold{k}of{args.folds}" if data == "val" else ""))
                link_networks(main_run, run_dir)
                fusion = train_cadstn(train_pattern, run_dir, mcfg, vcfg, stages=("fusion",),
                                      fusion_pattern=train_pattern if data == "train" else gate_pattern)["fusion"]
                preds.append(predictions_mm({"CADSTN": fusion}, h[0], h[1], seq_len)["CADSTN"])
                w1.append(predict_frames_or_clips(gate_weights_model(fusion), h[0], h[1], seq_len).mean(axis=1))
                keras.backend.clear_session()
            err = per_frame_error(gt, np.concatenate(preds))
            r = results[variant]
            r["all"].append(float(err.mean()))
            r["occluded"].append(float(err[occluded].mean()) if occluded.any() else float("nan"))
            r["w1_sd"].append(float(np.mean([w.std() for w in w1])))  # within a fold: one gate's frames
            print(f"seed {seed}, {variant_name(variant)}: out-of-fold CADSTN {err.mean():.2f} mm "
                  f"(fixed w {fixed_err.mean():.2f})", flush=True)

    paper = VARIANTS[0]
    rows = {}
    for v, r in results.items():
        row = rows[variant_name(v)] = {"gate_w1_sd_over_frames": spread(r["w1_sd"])}
        for subset in ("all", "occluded"):
            row[subset] = spread(r[subset])
            row[f"minus_fixed_{subset}"] = paired_difference(r[subset], fixed_scores[subset])
            row[f"minus_paper_{subset}"] = paired_difference(r[subset], results[paper][subset])
    chosen = min(rows, key=lambda name: rows[name]["all"]["mean"])
    wall = time.time() - start

    def ms(s):
        return f"{s['mean']:.2f} ± {s['sd']:.2f}"

    def ci(d):
        return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
    n_frames = len(gt)
    md = (f"Gate variants by {args.folds}-fold cross-validation over the validation sequences: {seeds} seeds, "
          f"{cfg.image_size}x{cfg.image_size}, {n_frames} validation frames ({int(occluded.sum())} occluded, >= "
          f"{OCCLUDED}); out-of-fold errors (mm); wall time {wall / 60:.1f} min\n\n"
          "| gate | CADSTN all | CADSTN occluded | CADSTN - fixed w (all) | (occluded) | - paper's gate (all) | "
          "(occluded) | sd of w1 over frames |\n|---|---|---|---|---|---|---|---|\n"
          + "\n".join(f"| {name} | {ms(r['all'])} | {ms(r['occluded'])} | {ci(r['minus_fixed_all'])} | "
                      f"{ci(r['minus_fixed_occluded'])} | {ci(r['minus_paper_all'])} | {ci(r['minus_paper_occluded'])} | "
                      f"{r['gate_w1_sd_over_frames']['mean']:.3f} |" for name, r in rows.items())
          + f"\n\nLowest out-of-fold error: {chosen}\n")
    print("\n" + md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gate_cv.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "gate_cv.json"), "w") as f:
        json.dump({"config": {"seeds": seeds, "folds": args.folds, "image_size": cfg.image_size,
                              "steps": cfg.train.steps, "validation_frames": int(n_frames),
                              "occluded_frames": int(occluded.sum())},
                   "variants": rows, "per_seed": {variant_name(v): r for v, r in results.items()},
                   "fixed_w_per_seed": fixed_scores,
                   "chosen": chosen, "wall_s": wall}, f, indent=1)
    print(f"wrote {args.out}/gate_cv.md, gate_cv.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
