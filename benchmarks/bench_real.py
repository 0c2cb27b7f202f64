"""The tracker on real depth frames annotated by eye (development frames: tests/data/real_frames).

Per frame and overall: whether the hand is found (the crop centre within 40 mm of the annotated
palm), the crop centre's distance to the palm, and the fingertips' and wrist's image error in mm at
the palm's depth, label-free (detector and centre refiner, as deployed) and from the annotated
palm. With ``--workdir`` the same tracker's error on that demo workdir's synthetic test split is
printed beside it, so that no real-frame gain is paid for silently on synthetic data.

Run: python benchmarks/bench_real.py --bundle ~/.cache/keras_cadstn/demo/bundle | --preset NAME [--frames DIR]
     [--workdir ~/.cache/keras_cadstn/demo] [--upright auto|on|off] [--refiner] [--out DIR]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from keras_cadstn.commands import AUTO_ON_OFF  # noqa: E402
from keras_cadstn.config import REAL_FRAMES  # noqa: E402
from keras_cadstn.data.metrics import per_frame_error  # noqa: E402
from keras_cadstn.data.real_frames import JOINTS, read_annotated_frames  # noqa: E402
from keras_cadstn.data.splits import load_split  # noqa: E402
from keras_cadstn.models.bundle import load_bundle  # noqa: E402
from keras_cadstn.presets import load_preset  # noqa: E402
from keras_cadstn.tracking.evaluate import FOUND_MM, real_frame_errors, summarise_real_frames, track_split  # noqa: E402
from keras_cadstn.tracking.tracker import HandTracker  # noqa: E402


def real_table(bundle, frames, refine=None, upright=None) -> tuple:
    """(printed rows, summaries by centre) over the annotated frames."""
    tracker = HandTracker(bundle.with_camera(frames[0].camera), refine=refine, upright=upright)
    rows, summaries = [], {}
    for centre in ("localiser", "palm"):
        results = [real_frame_errors(tracker, f, centre) for f in frames]
        summaries[centre] = {"summary": summarise_real_frames(results), "frames": results}
        for r in results:
            rows.append([r["frame"], centre, "yes" if r["found"] else "no", f"{r['centre_mm']:.0f}"]
                        + [f"{r['joints_mm'][j]:.0f}" for j in JOINTS])
    return rows, summaries


def main(args):
    bundle = load_bundle(args.bundle) if args.bundle else load_preset(args.preset)
    frames = read_annotated_frames(args.frames)
    upright = AUTO_ON_OFF[args.upright]
    rows, summaries = real_table(bundle, frames, refine=True if args.refiner else None, upright=upright)
    print(f"Real frames of {args.frames} ({len(frames)}), {'bundle ' + args.bundle if args.bundle else 'preset ' + args.preset}"
          f"{' with its centre refiner' if args.refiner else ''}, upright {args.upright}; mm at the palm's depth:\n")
    print(common.table(["frame", "centre", f"found (≤ {FOUND_MM:.0f} mm)", "centre to palm"] + list(JOINTS), rows))
    print()
    overall = [[c, f"{s['summary']['found']} of {s['summary']['frames']}", f"{s['summary']['centre_median_mm']:.0f}",
                f"{s['summary']['joint_median_mm']:.1f}", f"{s['summary']['joint_mean_mm']:.1f}"]
               for c, s in summaries.items()]
    figures = {"real": summaries}
    if args.workdir:
        split = load_split("nyu", os.path.join(args.workdir, "synthetic_nyu"), "test")
        gt, pred, info = track_split(HandTracker(bundle, upright=upright), split, centre="localiser", progress=False)
        figures["synthetic_test_mm"] = synthetic = float(np.nanmean(per_frame_error(gt, pred)))
        figures["synthetic_no_hand_frames"] = info["no_hand_frames"]
        print(f"synthetic test split of {args.workdir}, label-free: {synthetic:.2f} mm mean joint error over the "
              f"{info['frames'] - info['no_hand_frames']} of {info['frames']} frames with a hand found\n")
    print(common.table(["centre", "hand found", "centre to palm, median", "joint error, median", "joint error, mean"],
                       overall))
    return figures


if __name__ == "__main__":
    p = common.parser(__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--bundle", help="a tracker bundle (cadstn demo writes DIR/bundle)")
    which.add_argument("--preset", help="a shipped preset (cadstn presets), e.g. cadstn_synthetic_64")
    p.add_argument("--frames", default=REAL_FRAMES, help="an annotated folder (camera.json, palms.tsv, joints.tsv)")
    p.add_argument("--workdir", help="a cadstn demo workdir: also its synthetic test split's label-free error")
    p.add_argument("--refiner", action="store_true", help="the tracker with the bundle's centre refiner, whether or "
                   "not its config turns it on by default")
    p.add_argument("--upright", choices=("auto", "on", "off"), default="auto", help="turn crops so the hand's axis "
                   "lies on a crop axis (HandTracker's upright; auto: as cadstn track)")
    common.run("bench_real", main, p)
