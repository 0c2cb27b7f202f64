"""The tracker with and without the upright turn (``HandTracker(upright=...)``): crops turned so the
hand's principal axis lies on the nearest crop axis, against crops as cut.

Per bundle: the annotated real frames (label-free, each frame's mean fingertip and wrist error,
paired on/off); with ``--workdir`` a split of a preset recipe's workdir (its split sizes; labelled
centre and label-free, streaming); with ``--scene-frames N`` synthetic scenes with a person in view (each of
``SCENES``, 6 sequences of N frames, generated once into the cache, labelled centre). Over all
bundles, the real frames' per-frame difference with a bootstrap 95% interval.

Run: python benchmarks/bench_upright.py --bundles preset:cadstn_synthetic_64 [DIR/bundle ...]
     [--workdir DIR --split val] [--scene-frames 40] [--out DIR]
"""
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from keras_cadstn.config import REAL_FRAMES, SCENES, SynthConfig, cache_dir, preset  # noqa: E402
from keras_cadstn.data.metrics import per_frame_error  # noqa: E402
from keras_cadstn.data.real_frames import JOINTS, read_annotated_frames  # noqa: E402
from keras_cadstn.data.splits import load_split  # noqa: E402
from keras_cadstn.data.synthetic import write_synthetic_nyu  # noqa: E402
from keras_cadstn.demo import demo_splits  # noqa: E402
from keras_cadstn.fileio import read_json  # noqa: E402
from keras_cadstn.models.bundle import load_bundle  # noqa: E402
from keras_cadstn.presets import load_preset  # noqa: E402
from keras_cadstn.tracking.evaluate import real_frame_errors, track_split  # noqa: E402
from keras_cadstn.tracking.tracker import HandTracker  # noqa: E402

SCENE_SEED = 50  # write_synthetic_nyu seeds 50000..: apart from every other synthetic set


def real_frame_means(bundle, frames, upright: bool) -> np.ndarray:
    tracker = HandTracker(bundle.with_camera(frames[0].camera), upright=upright)
    return np.array([np.mean([r["joints_mm"][j] for j in JOINTS]) for r in (real_frame_errors(tracker, f) for f in frames)])


def split_errors(bundle, split, centre: str) -> dict:
    return {up: float(np.nanmean(per_frame_error(*track_split(HandTracker(bundle, upright=up), split, centre, False)[:2])))
            for up in (False, True)}


def scene_split(name: str, frames: int, spec):
    """6 sequences of one scene (the preset world's hand and poses), generated on first use."""
    root = os.path.join(cache_dir(), "upright_scenes", f"{name}_{frames}")
    if not os.path.isfile(os.path.join(root, "train", "joint_data.mat")):
        weights = tuple(float(s == name) for s in SCENES)
        write_synthetic_nyu(root, frames, 6, 0, SCENE_SEED + SCENES.index(name),
                            SynthConfig(person=True, scenes=weights, poses="grasp_wide", events=False))
    split = load_split("nyu", root, "train")
    return dataclasses.replace(split, spec=dataclasses.replace(split.spec, centre_scale=spec.centre_scale))


def main(args):
    frames = read_annotated_frames(REAL_FRAMES)
    rows, diffs, figures = [], [], {}
    for name in args.bundles:
        bundle = load_preset(name.split(":", 1)[1]) if name.startswith("preset:") else load_bundle(name)
        off, on = real_frame_means(bundle, frames, False), real_frame_means(bundle, frames, True)
        diffs.append(on - off)
        fig = figures[name] = {"real_off_mm": off.tolist(), "real_on_mm": on.tolist()}
        rows.append([name, "real frames, label-free (mean per frame)", f"{off.mean():.2f}", f"{on.mean():.2f}"])
        if args.workdir:
            world = read_json(os.path.join(args.workdir, "synthetic_world.json"))
            job = dataclasses.replace(preset("cadstn_synthetic_64", args.workdir).job, poses=world["poses"])
            split = demo_splits(job)[args.split]
            for centre in ("labelled", "localiser"):
                e = fig[f"{args.split}_{centre}"] = split_errors(bundle, split, centre)
                rows.append([name, f"{args.workdir} {args.split}, {centre}", f"{e[False]:.2f}", f"{e[True]:.2f}"])
        for scene in SCENES if args.scene_frames else ():
            e = fig[f"scene_{scene}"] = split_errors(bundle, scene_split(scene, args.scene_frames, bundle.spec), "labelled")
            rows.append([name, f"scene {scene}, labelled", f"{e[False]:.2f}", f"{e[True]:.2f}"])
    print(common.table(["bundle", "frames", "upright off (mm)", "upright on (mm)"], rows))
    d = np.concatenate(diffs)
    boots = np.random.default_rng(0).choice(d, (10000, d.size)).mean(1)
    figures["real_on_minus_off"] = {"mean": float(d.mean()), "low": float(np.percentile(boots, 2.5)),
                                    "high": float(np.percentile(boots, 97.5)), "pairs": int(d.size)}
    print(f"\nreal frames, on - off per frame and bundle: {d.mean():+.1f} mm, bootstrap 95% interval over the "
          f"{d.size} pairs [{np.percentile(boots, 2.5):+.1f}, {np.percentile(boots, 97.5):+.1f}]")
    return figures


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--bundles", nargs="+", default=["preset:cadstn_synthetic_64"],
                   help="bundle folders, or preset:NAME for a shipped preset")
    p.add_argument("--workdir", help="a preset recipe's workdir (its synthetic_world.json and data; "
                   "tools/train_preset.py NAME --remeasure --workdir DIR makes one without training)")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--scene-frames", type=int, default=0, help="frames per sequence of the person scenes (0: none)")
    common.run("bench_upright", main, p)
