"""How many scenes with a person behind the hand the synthetic demo's centre refiner trains on,
chosen on validation data only.

Run `cadstn demo` first: its workdir holds the raw frames and the bundle. For each setting
(S x F: S sequences of F frames of ``SynthConfig(person=True)`` scenes added to the demo's training
frames; 0x0: none) and each refiner seed, a refiner is trained with the demo's settings into
``<workdir>/refiner_scenes/``, and measured on:
- the localiser's validation scenes (person behind the hand, sequence seeds 3000..; the hand
  detector's settings were chosen there too): the share of frames whose reference joint, refined
  from the learned detection as the tracker starts, lies within 50 mm of the palm;
- the demo's validation split: the tracker's mean joint error with the hand centre from the
  localiser moved by this refiner (the labelled-centre tracker's error printed beside it).

    python benchmarks/bench_refiner_scenes.py [--workdir ~/.cache/keras_cadstn/demo]
        [--settings 0x0 16x40 32x20 32x40] [--seeds 2] [--tracked-passes 1 2]

``--tracked-passes A B ...``: the tracker error with each number of refiner passes from the last
frame's refined joint (``RefinerConfig.tracked_iterations``; the table shows the first), and each
against the first, paired over every refiner trained here, with a 95% t interval.
"""
import argparse
import dataclasses
import json
import os
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_cadstn.models import RefinerConfig  # noqa: E402


def setting(text: str) -> tuple:
    sequences, _, frames = text.partition("x")
    try:
        return int(sequences), int(frames)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SEQUENCESxFRAMES such as 32x40, got {text!r}") from None


def main():
    import bench_localiser
    from keras_cadstn.demo import DEFAULT_WORKDIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(DEFAULT_WORKDIR, "demo"), help="a `cadstn demo` workdir")
    p.add_argument("--settings", nargs="+", type=setting, default=[(0, 0), (16, 40), (32, 20), (32, 40)])
    p.add_argument("--seeds", type=int, default=2, help="refiner training seeds per setting")
    p.add_argument("--scenes", type=int, default=6, help="validation scenes with a person (seeds 3000..)")
    p.add_argument("--tracked-passes", type=int, nargs="+", default=[RefinerConfig.tracked_iterations],
                   help="refiner passes from the last frame's joint to measure the tracker with (first: the table's)")
    args = p.parse_args()
    if min(args.tracked_passes) < 1:
        p.error("--tracked-passes must be >= 1")

    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.demo import DemoConfig, demo_splits, refiner_training_splits, tracker_errors
    from keras_cadstn.refine import train_refiner
    from keras_cadstn.tracking import HandLocaliser
    start = time.perf_counter()
    cfg = DemoConfig(workdir=args.workdir)
    splits, base = demo_splits(cfg), load_bundle(os.path.join(args.workdir, "bundle"))
    choice_dir = os.path.join(args.workdir, "refiner_scenes")
    scenes = types.SimpleNamespace(sequences=args.scenes, frames=80, seed=3000)
    rows = {}
    # the labelled-centre row does not depend on the refiner: run once
    labelled = tracker_errors(base, splits["val"], rows=("labelled",))["labelled"]["mean_error"]
    for sequences, frames in args.settings:
        name = f"{sequences}x{frames}"
        # each setting's scenes in a folder of their own (person_scenes refuses other counts in one)
        train_splits = refiner_training_splits(dataclasses.replace(
            cfg, workdir=os.path.join(choice_dir, name), refiner_person_sequences=sequences,
            refiner_person_frames=frames), splits["train"])
        for seed in range(args.seeds):
            refiner = train_refiner(train_splits, os.path.join(choice_dir, name, f"seed{seed}"), cfg.refiner,
                                    dataclasses.replace(cfg.train, seed=seed), splits["val"])
            bundle = dataclasses.replace(base, refiner=refiner, refiner_config=cfg.refiner)
            tracker_mm = []  # per entry of --tracked-passes
            for passes in args.tracked_passes:
                errors = tracker_errors(bundle.with_refiner_settings(tracked_iterations=passes), splits["val"],
                                        rows=("localiser + refiner",))
                tracker_mm.append(errors["localiser + refiner"]["mean_error"])
            found, _ = bench_localiser.synthetic_scenes(scenes, HandLocaliser(), bundle)  # from detections
            refined = np.asarray([r[-1] for r in found])
            rows.setdefault(name, []).append({"within_50mm": float(np.mean(refined <= 50.0)),
                                              "tracker_mm": tracker_mm})
            print(f"{name} seed {seed}: {json.dumps(rows[name][-1])}", flush=True)
    print(f"\nCentre refiner: scenes with a person behind the hand added to the demo's training frames "
          f"({args.seeds} refiner seeds each; validation data only)\n")
    print("| person scenes (sequences x frames) | reference joint within 50 mm of the palm, validation scenes "
          "(per seed) | tracker error on the validation split, mm (per seed) |")
    print("|---|---|---|")
    for name, runs in rows.items():
        print(f"| {name} | " + " / ".join(f"{r['within_50mm']:.1%}" for r in runs) + " | "
              + " / ".join(f"{r['tracker_mm'][0]:.2f}" for r in runs) + " |")
    if len(args.tracked_passes) > 1:
        from keras_cadstn.evaluate import paired_difference
        by_passes = np.asarray([r["tracker_mm"] for runs in rows.values() for r in runs])  # (refiners, passes)
        print(f"\nRefiner passes from the last frame's joint, tracker error on the validation split paired over "
              f"{len(by_passes)} refiners (mm):\n")
        print("| passes | mean error | minus the first | 95% interval | per refiner |")
        print("|---|---|---|---|---|")
        print(f"| {args.tracked_passes[0]} | {by_passes[:, 0].mean():.2f} | +0.00 | - | - |")
        for k, passes in enumerate(args.tracked_passes[1:], start=1):
            d = paired_difference(by_passes[:, k], by_passes[:, 0])
            print(f"| {passes} | {by_passes[:, k].mean():.2f} | {d['mean']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | "
                  + " / ".join(f"{x:+.2f}" for x in by_passes[:, k] - by_passes[:, 0]) + " |")
    print(f"\nLabelled-centre tracker on the validation split: {labelled:.2f} mm. "
          f"{args.scenes} validation scenes x 80 frames; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
