"""The main job: data -> TFRecords -> Algorithm 1 -> evaluation, tables, plots -> bundle + SavedModel.

With no data given it runs on the synthetic NYU-format set, generated on first use into a cache
folder (``cadstn demo``, ``python examples/train_nyu.py``); ``data="nyu:/path"`` or ``"icvl:/path"``
runs the same path on the real datasets with the paper's schedule.
"""
from __future__ import annotations

import dataclasses
import os

from keras_cadstn import fileio
from keras_cadstn.config import REAL_FRAMES, STAGES, CADSTNConfig, DemoConfig, SynthConfig
from keras_cadstn.data import hold_out, nyu
from keras_cadstn.data.metrics import comparison_table, plot_comparison, spread
from keras_cadstn.data.real_frames import read_annotated_frames
from keras_cadstn.data.results import save_results
from keras_cadstn.data.splits import load_split
from keras_cadstn.data.synthetic import write_synthetic_nyu
from keras_cadstn.data.tfrecord import convert_split, dataset_spec_of, read_manifest
from keras_cadstn.errors import ConfigError
from keras_cadstn.export.accuracy import tracker_errors
from keras_cadstn.export.saved_model import export_saved_model
from keras_cadstn.fileio import read_json
from keras_cadstn.models.bundle import add_low_rank_step, load_bundle, save_bundle
from keras_cadstn.tracking.evaluate import real_frame_errors, summarise_real_frames
from keras_cadstn.tracking.runtime import sample_clips
from keras_cadstn.tracking.tracker import HandTracker
from keras_cadstn.training.evaluate import evaluate_stages
from keras_cadstn.training.refiner import train_refiner
from keras_cadstn.training.stages import train_cadstn


def prepare_records(cfg: DemoConfig) -> tuple:
    """Import (generating the synthetic set if needed) and convert train / val / test; returns
    (records folder, dataset name). Both steps resume where they stopped."""
    fmt, root = cfg.source()
    if cfg.data == "synthetic":
        _check_world(cfg)
        _check_synthetic_matches(root, cfg.frames_per_sequence,
                                 {"train": cfg.train_sequences + cfg.val_sequences, "test": cfg.test_sequences})
    if cfg.data == "synthetic" and not os.path.isfile(os.path.join(root, "test", "joint_data.mat")):
        print(f"generating synthetic NYU-format data in {root}")
        write_synthetic_nyu(root, cfg.frames_per_sequence, cfg.train_sequences + cfg.val_sequences,
                            cfg.test_sequences, cfg.data_seed, synth_config(cfg))
    rec_dir = os.path.join(cfg.workdir, f"records_{cfg.image_size}")
    todo = [s for s in ("train", "val", "test")
            if not (os.path.isfile(os.path.join(rec_dir, s, "manifest.json"))
                    and read_manifest(os.path.join(rec_dir, s)).get("complete"))]
    for name, split in demo_splits(cfg).items():
        if name in todo:
            convert_split(split, os.path.join(rec_dir, name), shards=4 if name == "train" else 1,
                          image_size=cfg.image_size)
            continue
        made = read_manifest(os.path.join(rec_dir, name))
        if int(made["num_frames"]) != len(split):  # records of another split (other --val/test counts)
            raise ConfigError(f"{os.path.join(rec_dir, name)}: records of {made['num_frames']} frames, this configuration's "
                              f"{name} split has {len(split)}; use another --workdir or delete that folder")
        if dataset_spec_of(made) != split.spec:  # another pre-processing (e.g. centre_scale)
            raise ConfigError(f"{os.path.join(rec_dir, name)}: records of another pre-processing ({made['dataset']}), "
                              f"this configuration's: {split.spec.to_dict()}; use another --workdir or delete that folder")
    return rec_dir, fmt


def track_test_split(cfg: DemoConfig, bundle, test_split, rec_dir: str) -> dict:
    """The tracker's error on the raw test frames (labelled centre, localiser, localiser + refiner,
    and the bundle's low-rank step, which is made here), printed as a table."""
    rows = tracker_errors(bundle, test_split)
    if cfg.fc_rank is not None:
        train = os.path.join(rec_dir, "train", "*.tfrecord")
        add_low_rank_step(bundle, cfg.fc_rank, sample_clips(bundle, cfg.low_rank_clips, records=train).crops, train)
        refined = tracker_errors(bundle, test_split, rows=("localiser + refiner",), fc_rank=cfg.fc_rank)
        rows[f"localiser + refiner, fc rank {cfg.fc_rank}"] = refined["localiser + refiner"]
    print("\nReal-time tracker on the test split (streaming, LSTM state carried through each sequence):\n"
          "| hand centre from | mean error (mm) | frames without a hand |\n|---|---|---|\n"
          + "\n".join(f"| {k} | {v['mean_error']:.2f} | {v['no_hand_frames']} |" for k, v in rows.items()))
    return rows


def real_frame_report(bundle, folder: str = REAL_FRAMES) -> dict | None:
    """The tracker on the annotated real frames (label-free and from the annotated palm), printed
    as a table; None where the folder is not there (an installed package without its tests)."""
    if not os.path.isfile(os.path.join(folder, "joints.tsv")):
        print(f"\n(no annotated real frames at {folder}: real-frame table skipped)")
        return None
    frames = read_annotated_frames(folder)
    tracker = HandTracker(bundle.with_camera(frames[0].camera))
    report = {c: summarise_real_frames([real_frame_errors(tracker, f, c) for f in frames]) for c in ("localiser", "palm")}
    print(f"\nReal depth frames ({folder}; fingertips and wrist annotated by eye, error in mm at the palm's depth):\n"
          "| hand centre from | hand found (centre <= 40 mm from the palm) | joint error, median | mean |\n"
          "|---|---|---|---|\n" + "\n".join(
              f"| {'label-free' if c == 'localiser' else 'annotated palm'} | {r['found']} of {r['frames']} | "
              f"{r['joint_median_mm']:.1f} | {r['joint_mean_mm']:.1f} |" for c, r in report.items()))
    return report


def synth_config(cfg: DemoConfig, person: bool = False) -> SynthConfig:
    """The synthetic world of the main job: its events, hand and poses."""
    return SynthConfig(events=cfg.synth_events, person=person, hand=cfg.hand, poses=cfg.poses, sensor=cfg.sensor,
                       scenes=tuple(cfg.scenes))


WORLD_FILE = "synthetic_world.json"
WORLD_BEFORE = {"hand": "spheres", "poses": "grasp", "sensor": "basic", "scenes": [1.0, 0.0, 0.0, 0.0]}  # no file yet


def _check_world(cfg: DemoConfig) -> None:
    """A workdir's data, records and trained stages belong to the synthetic world it was made in:
    another --hand or --poses needs another workdir (the file says which; a workdir made before the
    file existed holds the procedural hand)."""
    path = os.path.join(cfg.workdir, WORLD_FILE)
    world = {"hand": cfg.hand, "poses": cfg.poses, "sensor": cfg.sensor, "scenes": list(cfg.scenes)}
    made = read_json(path) if os.path.isfile(path) else (
        {**world, **WORLD_BEFORE} if os.path.isdir(os.path.join(cfg.workdir, "synthetic_nyu")) else None)
    if made is not None and made != world:
        raise ConfigError(f"{cfg.workdir} was made with the synthetic world {made}, this run asks for {world}; "
                          f"use another --workdir")
    if not os.path.isfile(path):
        os.makedirs(cfg.workdir, exist_ok=True)
        fileio.write_json(path, world)


def demo_splits(cfg: DemoConfig) -> dict:
    """The imported train / val / test splits (val: held-out training sequences)."""
    fmt, root = cfg.source()
    train, val = hold_out(load_split(fmt, root, "train"), cfg.val_sequences if cfg.data == "synthetic" else None)
    splits = {"train": train, "val": val, "test": load_split(fmt, root, "test")}
    return {name: dataclasses.replace(s, spec=dataclasses.replace(s.spec, centre_scale=cfg.centre_scale))
            for name, s in splits.items()}


# write_synthetic_nyu seeds sequence k with seed * 1000 + k: 4000.. keeps these scenes apart from
# the demo's (0..), the localiser benchmark's (1000..) and the hand detector's (2000.., 3000..)
PERSON_SCENES_SEED = 4


def person_scenes(cfg: DemoConfig):
    """The imported scenes with a person behind the hand that the synthetic demo's refiner also
    trains on (generated into the workdir on first use), or None (real data, or none asked for)."""
    if cfg.data != "synthetic" or cfg.refiner is None or cfg.refiner_person_sequences <= 0:
        return None
    root = os.path.join(cfg.workdir, "synthetic_person_nyu")
    _check_synthetic_matches(root, cfg.refiner_person_frames, {"train": cfg.refiner_person_sequences})
    if not os.path.isfile(os.path.join(root, "train", "joint_data.mat")):
        print(f"generating synthetic scenes with a person behind the hand for the centre refiner in {root}")
        write_synthetic_nyu(root, cfg.refiner_person_frames, cfg.refiner_person_sequences, 0, PERSON_SCENES_SEED,
                            synth_config(cfg, person=True))
    return load_split("nyu", root, "train")


def refiner_training_splits(cfg: DemoConfig, train_split) -> list:
    """What the refiner trains on: the training split, and ``person_scenes`` where there are any."""
    person = person_scenes(cfg)
    return [train_split] + ([person] if person is not None else [])


def _check_synthetic_matches(root: str, frames_per_sequence: int, sequences: dict) -> None:
    """Synthetic data already at ``root`` must be what this configuration would generate
    (``sequences``: split -> number of sequences): a resumed generation keeps the PNGs it finds,
    which belong to other sequences if the counts changed."""
    for split, count in sequences.items():
        starts = os.path.join(root, split, nyu.SEQUENCE_STARTS_FILE)
        if os.path.isfile(starts):
            found = [int(line) for line in open(starts).read().split()]
            wanted = [k * frames_per_sequence for k in range(count)]
            if found != wanted:
                raise ConfigError(f"{os.path.join(root, split)} holds synthetic sequences starting at {found[:4]}... "
                                  f"({len(found)} sequences); this configuration makes {count} of "
                                  f"{frames_per_sequence} frames: use another --workdir or delete {root}")


def run_demo(cfg: DemoConfig = DemoConfig(), export: bool = True) -> dict:

    if cfg.train.strategy == "multiworker":  # the demo evaluates and exports in every process it runs in
        raise ConfigError("the demo runs on one machine; train on several with `cadstn train --strategy multiworker` "
                          "(docs/distributed.md)")
    rec_dir, fmt = prepare_records(cfg)
    spec = dataset_spec_of(read_manifest(os.path.join(rec_dir, "train")))
    mcfg = CADSTNConfig(num_joints=spec.num_joints, image_size=cfg.image_size, seq_len=cfg.seq_len,
                        **dict(cfg.network))
    needed = STAGES + (("refine",) if cfg.refiner is not None else ())
    missing = [s for s in needed if s not in cfg.train.steps]
    if missing:
        raise ConfigError(f"steps must name every stage {needed}; missing {missing}")
    runs = []
    for seed in range(cfg.seeds):
        tcfg = dataclasses.replace(cfg.train, seed=seed, augment=cfg.train.augment and fmt == "nyu")
        run_dir = os.path.join(cfg.workdir, "run" if seed == 0 else f"run_seed{seed}")
        trained = train_cadstn(os.path.join(rec_dir, "train", "*.tfrecord"), run_dir, mcfg, tcfg,
                               fusion_pattern=os.path.join(rec_dir, cfg.gate_data, "*.tfrecord"))
        print(f"evaluating seed {seed} on the validation and test splits (labelled hand centre, as the paper evaluates)")
        runs.append((trained, evaluate_stages(trained, rec_dir, cfg.seq_len)))
    refiner, splits = None, demo_splits(cfg)
    if cfg.refiner is not None:
        refiner = train_refiner(refiner_training_splits(cfg, splits["train"]), os.path.join(cfg.workdir, "run"),
                                cfg.refiner,
                                dataclasses.replace(cfg.train, seed=0), splits["val"])
    trained, first = runs[0]
    gt, preds = first["test"]["gt"], first["test"]["pred"]
    table = {name: spread([r["test"]["errors"][name] for _, r in runs]) for name in first["test"]["errors"]}
    results = {"data": cfg.data, "frames_evaluated": int(len(gt)), "centre": "labelled", "seeds": cfg.seeds,
               "ablation": {k: v["mean"] for k, v in table.items()}, "ablation_spread": table,
               "per_seed": [r["test"]["errors"] for _, r in runs], "w_from_validation": [r["w_val"] for _, r in runs]}
    print(f"\nAblation on the test split (Table IV's rows; 'Fixed w' = the fixed weight chosen on validation), "
          f"mean error over {cfg.seeds} seed(s)"
          + (" with the standard deviation across them" if cfg.seeds > 1 else
             ". One seed is a plumbing check: the spread across seeds is in docs/results.md")
          + ":\n| method | mean error (mm) |\n|---|---|\n"
          + "\n".join(f"| {k} | {v['mean']:.2f}" + (f" ± {v['sd']:.2f}" if cfg.seeds > 1 else "") + " |"
                      for k, v in table.items()))
    print("\nSeed 0 in detail:\n" + comparison_table(gt, preds))

    res_dir = os.path.join(cfg.workdir, "results")
    save_results(os.path.join(res_dir, "ground_truth.txt"), gt, fmt, "uvd")
    for name, pred in preds.items():  # the public format: compare with other methods via `cadstn eval`
        save_results(os.path.join(res_dir, name.lower().replace(" ", "_") + ".txt"), pred, fmt, "uvd")
    plots = plot_comparison(gt, preds, os.path.join(cfg.workdir, "plots"), spec.joint_names,
                            title=f"{cfg.data} test split")
    print(f"\nplots: {', '.join(plots)}\nresults files ({fmt} uvd format): {res_dir}")
    bundle = load_bundle(save_bundle(os.path.join(cfg.workdir, "bundle"), trained["fusion"], spec, mcfg, refiner,
                                     cfg.refiner))
    results["bundle"] = bundle.path
    results["tracker"] = track_test_split(cfg, bundle, splits["test"], rec_dir)
    results["real_frames"] = real_frame_report(bundle)
    if export:
        report = export_saved_model(bundle, os.path.join(cfg.workdir, "export"), name="cadstn", version=1)
        print(f"bundle: {bundle.path}\nSavedModel (TF Serving layout, checked: max |error| {report.max_abs_mm:.5f} mm): "
              f"{report.path}")
        results["saved_model"] = report.path
    fileio.write_json(os.path.join(cfg.workdir, "results.json"), results)
    print(f"results: {os.path.join(cfg.workdir, 'results.json')}")
    return results
