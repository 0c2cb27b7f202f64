"""The main job: data -> TFRecords -> Algorithm 1 -> evaluation, tables, plots -> bundle + SavedModel.

With no data given it runs on the synthetic NYU-format set, generated on first use into a cache
folder (``cadstn demo``, ``python examples/train_nyu.py``); ``data="nyu:/path"`` or ``"icvl:/path"``
runs the same path on the real datasets with the paper's schedule.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.models import CADSTNConfig
from keras_cadstn.train import STAGES, TrainConfig

DEFAULT_WORKDIR = os.path.join(os.path.expanduser("~"), ".cache", "keras_cadstn")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Defaults: the synthetic demo sized for a 2-core CPU (<= 15 min in all). 64x64 crops instead
    of the paper's 128 make every stage ~4x cheaper; ``DemoConfig.paper(data)`` is the paper's setup."""

    data: str = "synthetic"  # or "nyu:/path/to/nyu", "icvl:/path/to/icvl"
    workdir: str = os.path.join(DEFAULT_WORKDIR, "demo")
    frames_per_sequence: int = 160  # synthetic only
    train_sequences: int = 8
    test_sequences: int = 2
    image_size: int = 64
    seq_len: int = 16
    batch_size: int = 64
    steps: tuple = (("baseline", 500), ("sliced3d", 500), ("spatial", 500), ("temporal", 1000), ("fusion", 200))
    checkpoint_every: int = 100
    learning_rate: float = 1e-3
    decay_every: int = 10 ** 9  # short schedules: no decay
    strategy: str = "default"
    mixed_precision: bool = False
    network: tuple = ()  # CADSTNConfig overrides as (name, value) pairs, e.g. (("fc_units", 64),)
    seed: int = 0

    @classmethod
    def paper(cls, data: str, workdir: str | None = None) -> "DemoConfig":
        """The paper's schedule (TrainConfig's defaults) and 128x128 crops on a real dataset."""
        t = TrainConfig()
        return cls(data=data, workdir=workdir or os.path.join(DEFAULT_WORKDIR, data.split(":")[0]),
                   image_size=128, batch_size=t.batch_size, steps=tuple(t.steps.items()),
                   checkpoint_every=t.checkpoint_every, decay_every=t.decay_every)

    def scaled(self, factor: float) -> "DemoConfig":
        """Every stage's steps times ``factor`` (at least 2), e.g. 0.02 to smoke-test the path."""
        return dataclasses.replace(self, steps=tuple((s, max(int(n * factor), 2)) for s, n in self.steps))

    def dataset(self) -> tuple:
        """('synthetic'|'nyu'|'icvl', root or None)."""
        if self.data == "synthetic":
            return "synthetic", None
        name, sep, root = self.data.partition(":")
        if not sep or name not in ("nyu", "icvl") or not root:
            raise ValueError(f"data must be 'synthetic', 'nyu:/path' or 'icvl:/path'; got {self.data!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{name} data folder {root!r} does not exist")
        return name, root

    def source(self) -> tuple:
        """(on-disk format 'nyu'|'icvl', root folder): the synthetic set is NYU-format in the workdir."""
        name, root = self.dataset()
        return ("nyu", os.path.join(self.workdir, "synthetic_nyu")) if name == "synthetic" else (name, root)


def prepare_records(cfg: DemoConfig) -> tuple:
    """Import (generating the synthetic set if needed) and convert train/test; returns
    (records folder, dataset name). Both steps resume where they stopped."""
    from keras_cadstn.data import load_split
    from keras_cadstn.data.tfrecord import convert_split, read_manifest

    fmt, root = cfg.source()
    if cfg.data == "synthetic" and not os.path.isfile(os.path.join(root, "test", "joint_data.mat")):
        from keras_cadstn.data.synthetic import write_synthetic_nyu
        print(f"generating synthetic NYU-format data in {root}")
        write_synthetic_nyu(root, cfg.frames_per_sequence, cfg.train_sequences, cfg.test_sequences, cfg.seed)
    rec_dir = os.path.join(cfg.workdir, f"records_{cfg.image_size}")
    for split in ("train", "test"):
        out = os.path.join(rec_dir, split)
        done = os.path.isfile(os.path.join(out, "manifest.json")) and read_manifest(out).get("complete")
        if not done:
            convert_split(load_split(fmt, root, split), out, shards=4 if split == "train" else 1,
                          image_size=cfg.image_size)
    return rec_dir, fmt


def fixed_weight_sweep(gt, j_temporal, j_spatial, mean_error) -> dict:
    """Table V: J = w * J_temp + (1 - w) * J_spa for fixed w in 0, 0.1, ..., 1."""
    return {f"{w:.1f}": mean_error(gt, w * j_temporal + (1 - w) * j_spatial) for w in np.linspace(0, 1, 11)}


def tracker_errors(bundle, cfg: DemoConfig) -> dict:
    """The HandTracker over the raw test frames, hand centre from the labels and from the localiser."""
    from keras_cadstn.data import load_split
    from keras_cadstn.evaluate import mean_error
    from keras_cadstn.tracking import HandTracker, track_split

    split = load_split(*cfg.source(), "test")
    tracker = HandTracker(bundle.with_camera(split.spec.camera))
    out = {}
    for centre in ("labelled", "localiser"):
        gt, pred, info = track_split(tracker, split, centre)
        found = ~np.isnan(pred).any(axis=(1, 2))
        out[centre] = {"mean_error": mean_error(gt[found], pred[found]) if found.any() else float("nan"),
                       "no_hand_frames": info["no_hand_frames"], "frames": info["frames"]}
    return out


def run_demo(cfg: DemoConfig = DemoConfig(), export: bool = True) -> dict:
    from keras_cadstn.bundle import load_bundle, save_bundle
    from keras_cadstn.data.tfrecord import dataset_spec_of, read_manifest
    from keras_cadstn.evaluate import comparison_table, mean_error, plot_comparison, predict_split, save_results
    from keras_cadstn.models import spatial_inference_model
    from keras_cadstn.train import train_cadstn

    rec_dir, fmt = prepare_records(cfg)
    spec = dataset_spec_of(read_manifest(os.path.join(rec_dir, "train")))
    mcfg = CADSTNConfig(num_joints=spec.num_joints, image_size=cfg.image_size, seq_len=cfg.seq_len,
                        **dict(cfg.network))
    steps = dict(cfg.steps)
    missing = [s for s in STAGES if s not in steps]
    if missing:
        raise ValueError(f"steps must name every stage {STAGES}; missing {missing}")
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       checkpoint_every=cfg.checkpoint_every, decay_every=cfg.decay_every, seed=cfg.seed,
                       augment=fmt == "nyu", strategy=cfg.strategy, mixed_precision=cfg.mixed_precision,
                       verbose=2)
    trained = train_cadstn(os.path.join(rec_dir, "train", "*.tfrecord"), os.path.join(cfg.workdir, "run"), mcfg, tcfg)

    spatial = spatial_inference_model(trained["spatial"])
    ablation = {"Baseline": trained["baseline"], "Sliced 3D": trained["sliced3d"], "Spatial": spatial,
                "Temporal": trained["temporal"], "CADSTN": trained["fusion"]}
    print("evaluating on the test split (labelled hand centre, as the paper evaluates)")
    gt, preds = predict_split(ablation, os.path.join(rec_dir, "test", "*.tfrecord"), cfg.seq_len)
    results = {"data": cfg.data, "frames_evaluated": int(len(gt)), "centre": "labelled",
               "ablation": {k: mean_error(gt, v) for k, v in preds.items()},
               "fixed_w": fixed_weight_sweep(gt, preds["Temporal"], preds["Spatial"], mean_error)}
    sweep = results["fixed_w"]
    sweep_table = ("| w (temporal weight) | " + " | ".join(sweep) + " | learned |\n|" + "---|" * (len(sweep) + 2) + "\n"
                   "| mean error (mm) | " + " | ".join(f"{v:.2f}" for v in sweep.values())
                   + f" | {results['ablation']['CADSTN']:.2f} |")
    print("\nAblation on the test split (Table IV's rows):\n" + comparison_table(gt, preds))
    print("\nFixed-weight combination J = w*J_temp + (1-w)*J_spa against the learned fusion (Table V):\n" + sweep_table)

    res_dir = os.path.join(cfg.workdir, "results")
    save_results(os.path.join(res_dir, "ground_truth.txt"), gt, fmt, "uvd")
    for name, pred in preds.items():  # the public format: compare with other methods via `cadstn eval`
        save_results(os.path.join(res_dir, name.lower().replace(" ", "_") + ".txt"), pred, fmt, "uvd")
    plots = plot_comparison(gt, preds, os.path.join(cfg.workdir, "plots"), spec.joint_names,
                            title=f"{cfg.data} test split")
    print(f"\nplots: {', '.join(plots)}\nresults files ({fmt} uvd format): {res_dir}")
    bundle = load_bundle(save_bundle(os.path.join(cfg.workdir, "bundle"), trained["fusion"], spec, mcfg))
    results["bundle"] = bundle.path
    results["tracker"] = tracker_errors(bundle, cfg)
    print("\nReal-time tracker on the test split (streaming, LSTM state carried through each sequence):\n"
          "| hand centre from | mean error (mm) | frames without a hand |\n|---|---|---|\n"
          + "\n".join(f"| {k} | {v['mean_error']:.2f} | {v['no_hand_frames']} |" for k, v in results["tracker"].items()))
    if export:
        from keras_cadstn.export import export_saved_model
        report = export_saved_model(bundle, os.path.join(cfg.workdir, "export"), name="cadstn", version=1)
        print(f"bundle: {bundle.path}\nSavedModel (TF Serving layout, checked: max |error| {report.max_abs_mm:.5f} mm): "
              f"{report.path}")
        results["saved_model"] = report.path
    from keras_cadstn.data.tfrecord import write_json_atomic
    write_json_atomic(os.path.join(cfg.workdir, "results.json"), results)
    print(f"results: {os.path.join(cfg.workdir, 'results.json')}")
    return results
