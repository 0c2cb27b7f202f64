"""The main job: data -> TFRecords -> Algorithm 1 -> evaluation, tables, plots -> bundle + SavedModel.

With no data given it runs on the synthetic NYU-format set, generated on first use into a cache
folder (``cadstn demo``, ``python examples/train_nyu.py``); ``data="nyu:/path"`` or ``"icvl:/path"``
runs the same path on the real datasets with the paper's schedule.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn import atomic
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.models import CADSTNConfig
from keras_cadstn.models.config import RefinerConfig
from keras_cadstn.train import STAGES, TrainConfig

DEFAULT_WORKDIR = os.path.join(os.path.expanduser("~"), ".cache", "keras_cadstn")
# the accuracy benchmark's schedule (benchmarks/bench_accuracy.py), whose temporal stage runs 1000
# steps; the demo's runs 600 so that the whole demo fits its 10 minutes on 2 CPU cores (the
# temporal stage is the slowest per step: an LSTM(1024) over 4 clips a step)
BENCHMARK_STEPS = {"baseline": 500, "sliced3d": 500, "spatial": 500, "temporal": 1000, "fusion": 200, "refine": 1500}
DEMO_TRAINING = TrainConfig(steps={**BENCHMARK_STEPS, "temporal": 600}, batch_size=64, checkpoint_every=250,
                            schedule="cosine", fusion_learning_rate=3e-4, verbose=2)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Defaults: the synthetic demo sized for a 2-core CPU (<= 10 min). 64x64 crops instead of the
    paper's 128 make every stage ~4x cheaper; ``DemoConfig.paper(data)`` is the paper's setup.
    ``val_sequences`` training sequences are held out as the validation split (real data: the
    last tenth of the training frames); fixed fusion weights are chosen there, never on test."""

    data: str = "synthetic"  # or "nyu:/path/to/nyu", "icvl:/path/to/icvl"
    workdir: str = os.path.join(DEFAULT_WORKDIR, "demo")
    frames_per_sequence: int = 160  # synthetic only
    train_sequences: int = 8
    val_sequences: int = 2
    test_sequences: int = 2
    data_seed: int = 0  # the synthetic data set's seed (training seeds are 0 .. seeds - 1)
    synth_events: bool = True  # occluders, depth drop-out bursts, near-range loss, fast motion
    image_size: int = 64
    seq_len: int = 16
    network: tuple = ()  # CADSTNConfig overrides as (name, value) pairs, e.g. (("fc_units", 64),)
    seeds: int = 1  # independent training runs; the tables give mean and spread
    # ours, measured (README): the gate trains on the validation split, records the spatial and
    # temporal networks have not fitted ("train": on the training split, as the paper)
    gate_data: str = "val"
    train: TrainConfig = DEMO_TRAINING
    # the hand-centre refiner shipped in the bundle (keras_cadstn.refine), trained on the raw
    # training frames; None: a bundle without one (the tracker then uses the localiser's centre)
    refiner: RefinerConfig | None = RefinerConfig()
    # ours, synthetic data only: the refiner also trains on this many sequences of this many frames
    # with a person behind the hand (SynthConfig(person=True)). The demo's scenes have none, real
    # recordings always do, and a refiner that never saw one walks onto an object beside the hand;
    # real training frames already show the body. 32 x 20 chosen on validation data (README).
    refiner_person_sequences: int = 32
    refiner_person_frames: int = 20
    # ours: the bundle also stores its streaming step with fc layers of this rank, fitted to
    # ``low_rank_clips`` clips of training crops (``bundle.add_low_rank_step``; the tracker's
    # ``fc_rank``), and the tracker table gets its row; None: none. Chosen on the validation split
    # (benchmarks/bench_low_rank.py, README)
    fc_rank: int | None = 16
    low_rank_clips: int = 64

    @classmethod
    def paper(cls, data: str, workdir: str | None = None) -> "DemoConfig":
        """The paper's schedule (TrainConfig's defaults) and 128x128 crops on a real dataset."""
        return cls(data=data, workdir=workdir or os.path.join(DEFAULT_WORKDIR, data.split(":")[0]),
                   image_size=128, train=TrainConfig())

    def scaled(self, factor: float) -> "DemoConfig":
        """Every stage's steps times ``factor`` (at least 2), e.g. 0.02 to smoke-test the path."""
        steps = {s: max(int(n * factor), 2) for s, n in self.train.steps.items()}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, steps=steps))

    def dataset(self) -> tuple:
        """('synthetic'|'nyu'|'icvl', root or None)."""
        if self.data == "synthetic":
            return "synthetic", None
        name, sep, root = self.data.partition(":")
        if not sep or name not in ("nyu", "icvl") or not root:
            raise ConfigError(f"data must be 'synthetic', 'nyu:/path' or 'icvl:/path'; got {self.data!r}")
        if not os.path.isdir(root):
            raise DataError(f"{name} data folder {root!r} does not exist")
        return name, root

    def source(self) -> tuple:
        """(on-disk format 'nyu'|'icvl', root folder): the synthetic set is NYU-format in the workdir."""
        name, root = self.dataset()
        return ("nyu", os.path.join(self.workdir, "synthetic_nyu")) if name == "synthetic" else (name, root)


def prepare_records(cfg: DemoConfig) -> tuple:
    """Import (generating the synthetic set if needed) and convert train / val / test; returns
    (records folder, dataset name). Both steps resume where they stopped."""
    from keras_cadstn.data.tfrecord import convert_split, read_manifest

    fmt, root = cfg.source()
    if cfg.data == "synthetic":
        _check_synthetic_matches(root, cfg.frames_per_sequence,
                                 {"train": cfg.train_sequences + cfg.val_sequences, "test": cfg.test_sequences})
    if cfg.data == "synthetic" and not os.path.isfile(os.path.join(root, "test", "joint_data.mat")):
        from keras_cadstn.data.synthetic import write_synthetic_nyu
        print(f"generating synthetic NYU-format data in {root}")
        from keras_cadstn.data.synthetic import SynthConfig
        write_synthetic_nyu(root, cfg.frames_per_sequence, cfg.train_sequences + cfg.val_sequences,
                            cfg.test_sequences, cfg.data_seed, SynthConfig(events=cfg.synth_events))
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
    return rec_dir, fmt


def demo_splits(cfg: DemoConfig) -> dict:
    """The imported train / val / test splits (val: held-out training sequences)."""
    from keras_cadstn.data import hold_out, load_split
    fmt, root = cfg.source()
    train, val = hold_out(load_split(fmt, root, "train"), cfg.val_sequences if cfg.data == "synthetic" else None)
    return {"train": train, "val": val, "test": load_split(fmt, root, "test")}


# write_synthetic_nyu seeds sequence k with seed * 1000 + k: 4000.. keeps these scenes apart from
# the demo's (0..), the localiser benchmark's (1000..) and the hand detector's (2000.., 3000..)
PERSON_SCENES_SEED = 4


def person_scenes(cfg: DemoConfig):
    """The imported scenes with a person behind the hand that the synthetic demo's refiner also
    trains on (generated into the workdir on first use), or None (real data, or none asked for)."""
    if cfg.data != "synthetic" or cfg.refiner is None or cfg.refiner_person_sequences <= 0:
        return None
    from keras_cadstn.data import load_split
    from keras_cadstn.data.synthetic import SynthConfig, write_synthetic_nyu
    root = os.path.join(cfg.workdir, "synthetic_person_nyu")
    _check_synthetic_matches(root, cfg.refiner_person_frames, {"train": cfg.refiner_person_sequences})
    if not os.path.isfile(os.path.join(root, "train", "joint_data.mat")):
        print(f"generating synthetic scenes with a person behind the hand for the centre refiner in {root}")
        write_synthetic_nyu(root, cfg.refiner_person_frames, cfg.refiner_person_sequences, 0, PERSON_SCENES_SEED,
                            SynthConfig(events=cfg.synth_events, person=True))
    return load_split("nyu", root, "train")


def refiner_training_splits(cfg: DemoConfig, train_split) -> list:
    """What the refiner trains on: the training split, and ``person_scenes`` where there are any."""
    person = person_scenes(cfg)
    return [train_split] + ([person] if person is not None else [])


def _check_synthetic_matches(root: str, frames_per_sequence: int, sequences: dict) -> None:
    """Synthetic data already at ``root`` must be what this configuration would generate
    (``sequences``: split -> number of sequences): a resumed generation keeps the PNGs it finds,
    which belong to other sequences if the counts changed."""
    from keras_cadstn.data import nyu
    for split, count in sequences.items():
        starts = os.path.join(root, split, nyu.SEQUENCE_STARTS_FILE)
        if os.path.isfile(starts):
            found = [int(line) for line in open(starts).read().split()]
            wanted = [k * frames_per_sequence for k in range(count)]
            if found != wanted:
                raise ConfigError(f"{os.path.join(root, split)} holds synthetic sequences starting at {found[:4]}... "
                                  f"({len(found)} sequences); this configuration makes {count} of "
                                  f"{frames_per_sequence} frames: use another --workdir or delete {root}")


TRACKER_ROWS = {"labelled": ("labelled", False), "localiser": ("localiser", False),
                "localiser + refiner": ("localiser", True)}


def tracker_errors(bundle, split, backend: str = "keras", precision: str = "float32",
                   paths: dict | None = None, rows=tuple(TRACKER_ROWS), fc_rank: int | None = None) -> dict:
    """The HandTracker over the raw frames of ``split`` (the test split: ``demo_splits(cfg)['test']``),
    hand centre from the labels, from the localiser, and from the localiser moved by the bundle's
    centre refiner (where it has one). ``paths``: the exported models to run
    (``export.export_for_tracker``; default: exported into the cache). ``rows``: which of
    ``TRACKER_ROWS`` to run (default all). ``fc_rank``: the step with low-rank fc layers."""
    from keras_cadstn.evaluate import mean_error
    from keras_cadstn.export import export_for_tracker
    from keras_cadstn.tracking import HandTracker, track_split

    bundle = bundle.with_camera(split.spec.camera)
    paths = paths or export_for_tracker(bundle, backend, precision, fc_rank=fc_rank)
    trackers, out = {}, {}  # one per refine setting: the labelled rows never use the refiner
    for row in rows:
        centre, refine = TRACKER_ROWS[row]
        if refine and bundle.refiner is None:
            continue
        if refine not in trackers:
            trackers[refine] = HandTracker(bundle, backend, precision, refine=refine, fc_rank=fc_rank, **paths)
        gt, pred, info = track_split(trackers[refine], split, centre)
        found = ~np.isnan(pred).any(axis=(1, 2))
        out[row] = {"mean_error": mean_error(gt[found], pred[found]) if found.any() else float("nan"),
                       "no_hand_frames": info["no_hand_frames"], "frames": info["frames"]}
    return out


def run_demo(cfg: DemoConfig = DemoConfig(), export: bool = True) -> dict:
    from keras_cadstn.bundle import load_bundle, save_bundle
    from keras_cadstn.data.tfrecord import dataset_spec_of, read_manifest
    from keras_cadstn.evaluate import comparison_table, evaluate_stages, plot_comparison, save_results, spread
    from keras_cadstn.train import train_cadstn

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
        from keras_cadstn.refine import train_refiner
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
             ". One seed is a plumbing check: the run-to-run spread is in the README (benchmarks/bench_accuracy.py)")
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
    results["tracker"] = tracker_errors(bundle, splits["test"])
    if cfg.fc_rank is not None:
        from keras_cadstn.bundle import add_low_rank_step
        from keras_cadstn.runtime import sample_clips
        train = os.path.join(rec_dir, "train", "*.tfrecord")
        add_low_rank_step(bundle, cfg.fc_rank, sample_clips(bundle, cfg.low_rank_clips, records=train).crops, train)
        refined = tracker_errors(bundle, splits["test"], rows=("localiser + refiner",), fc_rank=cfg.fc_rank)
        results["tracker"][f"localiser + refiner, fc rank {cfg.fc_rank}"] = refined["localiser + refiner"]
    print("\nReal-time tracker on the test split (streaming, LSTM state carried through each sequence):\n"
          "| hand centre from | mean error (mm) | frames without a hand |\n|---|---|---|\n"
          + "\n".join(f"| {k} | {v['mean_error']:.2f} | {v['no_hand_frames']} |" for k, v in results["tracker"].items()))
    if export:
        from keras_cadstn.export import export_saved_model
        report = export_saved_model(bundle, os.path.join(cfg.workdir, "export"), name="cadstn", version=1)
        print(f"bundle: {bundle.path}\nSavedModel (TF Serving layout, checked: max |error| {report.max_abs_mm:.5f} mm): "
              f"{report.path}")
        results["saved_model"] = report.path
    atomic.write_json(os.path.join(cfg.workdir, "results.json"), results)
    print(f"results: {os.path.join(cfg.workdir, 'results.json')}")
    return results
