"""Low-rank fc layers for the tracker's step (``models.low_rank``): which rank, at what cost.

Each rank's step is fitted to ``--clips`` clips of training crops (``bundle.add_low_rank_step``, as
``cadstn compress`` does), in a scratch copy of the bundle. The rank is chosen on the validation
split only: the smallest of ``--ranks`` whose tracker error (Keras float32, hand centre from the
localiser moved by the centre refiner, as deployed) lies within ``--margin`` mm of the full-rank
step's. The test split then gives, for the full-rank and the chosen step, the error with the
labelled and with the refined centre, and the difference, paired frame by frame, with a 95% t
interval over blocks of 16 consecutive frames (neighbouring frames' errors are not independent);
then TFLite dynamic_int8 and int8 at the chosen rank against their full-rank counterparts.

Run `cadstn demo` first (`--image-size 128` for the paper's size, whose fc layers this is about):

    python benchmarks/bench_low_rank.py --workdir DIR [--ranks 256 128 64 32 16] [--margin 0.1]
"""
import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BLOCK = 16  # frames per block of the paired interval


def frame_errors(bundle, split, centre, backend="keras", precision="float32", paths=None, fc_rank=None,
                 **tracker_options):
    """(N,) mean joint error per frame of the streaming tracker (NaN where it found no hand);
    ``tracker_options``: more ``HandTracker`` arguments."""
    from keras_cadstn.evaluate import per_frame_error
    from keras_cadstn.tracking import HandTracker, track_split
    tracker = HandTracker(bundle, backend, precision, refine=centre == "refined", fc_rank=fc_rank, **(paths or {}),
                          **tracker_options)
    gt, pred, _ = track_split(tracker, split, "labelled" if centre == "labelled" else "localiser", progress=False)
    errors = np.full(len(gt), np.nan)
    found = ~np.isnan(pred).any(axis=(1, 2))
    errors[found] = per_frame_error(gt[found], pred[found])
    return errors


def blocks(errors):
    """Means over consecutive blocks of BLOCK frames (frames without a hand left out)."""
    n = len(errors) // BLOCK * BLOCK
    return np.nanmean(errors[:n].reshape(-1, BLOCK), axis=1)


def main():
    from keras_cadstn.demo import DEFAULT_WORKDIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(DEFAULT_WORKDIR, "demo"), help="a `cadstn demo` workdir")
    p.add_argument("--ranks", type=int, nargs="+", default=[256, 128, 64, 32, 16])
    p.add_argument("--clips", type=int, default=64, help="clips of T training crops the factors are fitted to")
    p.add_argument("--margin", type=float, default=0.1, help="mm over the full-rank validation error allowed")
    p.add_argument("--precisions", nargs="*", default=["dynamic_int8", "int8"], help="TFLite, on the test split")
    args = p.parse_args()

    from keras_cadstn.bundle import add_low_rank_step, load_bundle
    from keras_cadstn.demo import DemoConfig, demo_splits
    from keras_cadstn.evaluate import paired_difference
    from keras_cadstn.export import export_for_tracker, keras_artifact_model
    from keras_cadstn.models.low_rank import weight_count
    from keras_cadstn.runtime import sample_clips
    start = time.perf_counter()
    splits = demo_splits(DemoConfig(workdir=args.workdir))
    scratch = tempfile.mkdtemp(prefix="bench_low_rank_")
    # a copy: the steps of every rank tried are written into it, not into the user's bundle
    copy = shutil.copytree(os.path.join(args.workdir, "bundle"), os.path.join(scratch, "bundle"))
    bundle = load_bundle(copy).with_camera(splits["test"].spec.camera)
    records = os.path.join(args.workdir, f"records_{bundle.image_size}")
    train = os.path.join(records, "train", "*.tfrecord")
    crops = sample_clips(bundle, args.clips, records=train).crops
    weights = {None: weight_count(keras_artifact_model(bundle, "step"))}

    print(f"Validation split ({len(splits['val'].frames)} frames), Keras float32, localiser + refiner centre; "
          f"factors fitted to {len(crops)} training crops:\n")
    print("| fc rank | step weights (M) | mean joint error (mm) |")
    print("|---|---|---|")
    validation = {}
    for rank in [None] + sorted(args.ranks, reverse=True):
        if rank is not None:
            add_low_rank_step(bundle, rank, crops, train)
            weights[rank] = weight_count(keras_artifact_model(bundle, "step", fc_rank=rank))
        validation[rank] = float(np.nanmean(frame_errors(bundle, splits["val"], "refined", fc_rank=rank)))
        print(f"| {rank or 'full'} | {weights[rank] / 1e6:.1f} | {validation[rank]:.2f} |", flush=True)
    within = [r for r in args.ranks if validation[r] <= validation[None] + args.margin]
    chosen = min(within) if within else None
    print(f"\nchosen on validation: {'fc rank ' + str(chosen) if chosen else 'full rank (no rank within the margin)'} "
          f"(the smallest within {args.margin} mm of full rank)")
    if chosen is None:
        return

    test = splits["test"]
    samples = sample_clips(bundle, 20, records=os.path.join(records, "test", "*.tfrecord"))
    calibration = sample_clips(bundle, 20, records=train)
    variants = [("keras", "float32")] + [("tflite", precision) for precision in args.precisions]
    print(f"\nTest split ({len(test.frames)} frames): full rank vs fc rank {chosen}; difference paired by frame, "
          f"95% interval over blocks of {BLOCK} frames:\n")
    print("| tracker | centre | full rank (mm) | rank {0} (mm) | rank {0} - full (mm) |".format(chosen))
    print("|---|---|---|---|---|")
    for backend, precision in variants:
        paths = {rank: export_for_tracker(bundle, backend, precision, os.path.join(scratch, f"{backend}_{precision}"),
                                          samples, calibration, fc_rank=rank) for rank in (None, chosen)}
        for centre in ("labelled", "refined"):
            full, low = (frame_errors(bundle, test, centre, backend, precision, paths[rank], rank)
                         for rank in (None, chosen))
            d = paired_difference(blocks(low), blocks(full))
            print(f"| {backend} {precision} | {centre} | {np.nanmean(full):.2f} | {np.nanmean(low):.2f} | "
                  f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |", flush=True)
    print(f"\nstep weights: {weights[None] / 1e6:.1f} M full rank, {weights[chosen] / 1e6:.1f} M at rank {chosen}; "
          f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
