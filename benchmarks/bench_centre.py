"""Where the crop's centre lands, for each ``centre_scale`` (DatasetSpec): on a preset recipe's synthetic
validation split (never its test split), the labelled centre's distance to the palm joint and the
label-free centre's (hand detector, then the centre of mass), and how often the label-free centre lies
within 40 mm of the palm joint. The choice of the presets' ``centre_scale`` rests on this table.

Run: python benchmarks/bench_centre.py [--preset cadstn_synthetic_64] [--workdir DIR] [--scales 1 0.67 0.5 0.4]
     [--every 8] [--out DIR]
(the workdir holds the recipe's synthetic data: `python tools/train_preset.py NAME` makes it first)
"""
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from keras_cadstn.config import DEFAULT_PRESET, preset  # noqa: E402
from keras_cadstn.data.preprocessing import hand_center  # noqa: E402
from keras_cadstn.demo import demo_splits  # noqa: E402
from keras_cadstn.errors import NoHandError  # noqa: E402
from keras_cadstn.tracking.evaluate import FOUND_MM  # noqa: E402
from keras_cadstn.tracking.localiser import HandLocaliser  # noqa: E402


def centre_distances(split, scales, localiser, every: int = 8) -> dict:
    """{scale: (labelled centre to palm (N,), label-free centre to palm (N,), inf where none)} mm."""
    spec, cam = split.spec, split.spec.camera
    out = {s: ([], []) for s in scales}
    for frame in split.frames[::every]:
        depth = cam.to_mm(split.read_depth(frame.path))
        palm_xyz = frame.joints_xyz[spec.reference_joint]
        found = localiser.find_palm(depth, cam)
        for s in scales:
            cube = np.asarray(frame.cube, np.float64) * s
            try:
                labelled = np.linalg.norm(cam.uvd_to_xyz(hand_center(depth, frame.joints_uvd[spec.reference_joint],
                                                                     cube, cam)) - palm_xyz)
            except NoHandError:
                labelled = np.inf
            free = localiser.centre_from_palm(depth, found, cube, cam)
            out[s][0].append(labelled)
            out[s][1].append(np.inf if free is None else np.linalg.norm(cam.uvd_to_xyz(free) - palm_xyz))
    return {s: (np.asarray(a), np.asarray(b)) for s, (a, b) in out.items()}


def main(args):
    job = preset(args.preset, args.workdir).job
    split = demo_splits(dataclasses.replace(job, centre_scale=1.0))["val"]  # the scales below replace it
    results = centre_distances(split, args.scales, HandLocaliser(), args.every)
    rows, figures = [], {}
    for s, (labelled, free) in results.items():
        fin = labelled[np.isfinite(labelled)]
        figures[str(s)] = row = {
            "labelled_median_mm": float(np.median(fin)), "labelled_p90_mm": float(np.percentile(fin, 90)),
            "labelled_no_hand": int(np.sum(~np.isfinite(labelled))), "label_free_median_mm": float(np.median(free)),
            "label_free_within_40mm": float(np.mean(free <= FOUND_MM))}
        rows.append([s, f"{row['labelled_median_mm']:.1f} / {row['labelled_p90_mm']:.1f}", row["labelled_no_hand"],
                     f"{row['label_free_median_mm']:.1f}", f"{100 * row['label_free_within_40mm']:.0f}%"])
    print(f"{len(next(iter(results.values()))[0])} frames of the validation split of {job.workdir} (every "
          f"{args.every}th), package detector; mm from the palm joint:\n")
    print(common.table(["centre_scale", "labelled centre, median / p90", "labelled: no hand in the cube",
                        "label-free centre, median", f"label-free within {FOUND_MM:.0f} mm"], rows))
    return figures


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--preset", default=DEFAULT_PRESET, help="the recipe whose synthetic data is measured")
    p.add_argument("--workdir", help="the recipe's workdir (default: its own in the cache)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.67, 0.5, 0.4])
    p.add_argument("--every", type=int, default=8, help="every N-th validation frame")
    common.run("bench_centre", main, p)
