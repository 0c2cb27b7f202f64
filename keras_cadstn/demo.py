"""The main job: synthetic data -> TFRecords -> Algorithm 1 -> evaluation, tables, plots -> SavedModel."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_cadstn.models import CADSTNConfig
from keras_cadstn.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sized for a 2-core CPU (<= 15 min in all). 64x64 crops instead of the paper's 128 make every
    stage ~4x cheaper; pass --image-size 128 for the paper's crops."""

    workdir: str = os.path.join(os.path.expanduser("~"), ".cache", "keras_cadstn", "demo")
    frames_per_sequence: int = 160  # a multiple of T: test clips cover every test frame
    train_sequences: int = 8
    test_sequences: int = 2
    image_size: int = 64
    seq_len: int = 16
    batch_size: int = 64
    steps: tuple = (("baseline", 500), ("sliced3d", 500), ("spatial", 500), ("temporal", 400), ("fusion", 250))
    seed: int = 0


def predict_clips(models: dict, pattern: str, mcfg: CADSTNConfig):
    """Predictions in mm of frame models (run on every frame) and clip models, on the same test
    clips (non-overlapping windows of T, LSTM state reset per clip as the authors evaluated)."""
    from keras_cadstn.data import make_dataset
    from keras_cadstn.evaluate import predictions_to_mm

    ds = make_dataset(pattern, mode="sequences", seq_len=mcfg.seq_len, batch_size=8, include_meta=True)
    preds = {name: [] for name in models}
    gt = []
    for x, _, meta in ds:
        n, t = x.shape[:2]
        flat_meta = {k: np.reshape(v.numpy(), (n * t,) + tuple(v.shape[2:])) for k, v in meta.items()}
        for name, model in models.items():
            if len(model.input.shape) == 5:
                p = model.predict_on_batch(x)
            else:
                p = model.predict_on_batch(np.reshape(x.numpy(), (n * t,) + tuple(x.shape[2:])))
            p = p["joints"] if isinstance(p, dict) else p
            preds[name].append(predictions_to_mm(np.reshape(p, (n * t, -1)), flat_meta))
        gt.append(flat_meta["joints_xyz"].reshape(n * t, -1, 3))
    return np.concatenate(gt).astype(np.float64), {k: np.concatenate(v) for k, v in preds.items()}


def run_demo(cfg: DemoConfig = DemoConfig(), export: bool = True) -> dict:
    from keras_cadstn.data.nyu import load_nyu
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    from keras_cadstn.data.tfrecord import convert_split, read_manifest
    from keras_cadstn.evaluate import comparison_table, mean_error, plot_comparison
    from keras_cadstn.models import spatial_inference_model
    from keras_cadstn.train import train_cadstn

    data_dir = os.path.join(cfg.workdir, "synthetic_nyu")
    rec_dir = os.path.join(cfg.workdir, f"records_{cfg.image_size}")
    run_dir = os.path.join(cfg.workdir, "run")
    if not os.path.isfile(os.path.join(data_dir, "test", "joint_data.mat")):
        print(f"generating synthetic NYU-format data in {data_dir}")
        write_synthetic_nyu(data_dir, cfg.frames_per_sequence, cfg.train_sequences, cfg.test_sequences, cfg.seed)
    for split in ("train", "test"):
        out = os.path.join(rec_dir, split)
        done = os.path.isfile(os.path.join(out, "manifest.json")) and read_manifest(out).get("complete")
        if not done:
            convert_split(load_nyu(data_dir, split), out, shards=4 if split == "train" else 1, image_size=cfg.image_size)
    mcfg = CADSTNConfig(num_joints=14, image_size=cfg.image_size, seq_len=cfg.seq_len)
    steps = dict(cfg.steps)
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, steps_per_epoch=min(steps.values()) // 2,
                       checkpoint_every=100, decay_every=10 ** 9, seed=cfg.seed, verbose=2)
    trained = train_cadstn(os.path.join(rec_dir, "train", "*.tfrecord"), run_dir, mcfg, tcfg)

    spatial = spatial_inference_model(trained["spatial"])
    ablation = {"Baseline": trained["baseline"], "Sliced 3D": trained["sliced3d"], "Spatial": spatial,
                "Temporal": trained["temporal"], "CADSTN": trained["fusion"]}
    gt, preds = predict_clips(ablation, os.path.join(rec_dir, "test", "*.tfrecord"), mcfg)
    results = {"ablation": {k: mean_error(gt, v) for k, v in preds.items()}}
    sweep = {f"{w:.1f}": mean_error(gt, w * preds["Temporal"] + (1 - w) * preds["Spatial"])
             for w in np.linspace(0, 1, 11)}
    results["fixed_w"] = sweep
    results["frames_evaluated"] = int(len(gt))

    table = comparison_table(gt, preds)
    sweep_table = ("| w (temporal weight) | " + " | ".join(sweep) + " | learned |\n|" + "---|" * (len(sweep) + 2) + "\n"
                   "| mean error (mm) | " + " | ".join(f"{v:.2f}" for v in sweep.values())
                   + f" | {results['ablation']['CADSTN']:.2f} |")
    print("\nAblation on the held-out synthetic test sequences (Table IV's rows):\n" + table)
    print("\nFixed-weight combination J = w*J_temp + (1-w)*J_spa against the learned fusion (Table V):\n" + sweep_table)
    plots = plot_comparison(gt, preds, os.path.join(cfg.workdir, "plots"), title="synthetic NYU-format test")
    with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nplots: {plots}\nresults: {os.path.join(cfg.workdir, 'results.json')}")
    if export:
        path = os.path.join(cfg.workdir, "export", "cadstn", "1")
        trained["fusion"].export(path, format="tf_saved_model", verbose=False)
        print(f"SavedModel: {path}")
        results["saved_model"] = path
    return results
