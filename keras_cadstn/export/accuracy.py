"""The tracker's error on a labelled split for each centre (labelled, localiser, localiser and refiner) on
each backend and precision, exporting what it needs first."""
from __future__ import annotations

import numpy as np

from keras_cadstn.data.metrics import mean_error
from keras_cadstn.export.tracker import export_for_tracker
from keras_cadstn.tracking.evaluate import track_split
from keras_cadstn.tracking.tracker import HandTracker

TRACKER_ROWS = {"labelled": ("labelled", False), "localiser": ("localiser", False),
                "localiser + refiner": ("localiser", True)}


def tracker_errors(bundle, split, backend: str = "keras", precision: str = "float32",
                   paths: dict | None = None, rows=tuple(TRACKER_ROWS), fc_rank: int | None = None) -> dict:
    """The HandTracker over the raw frames of ``split`` (the test split: ``demo_splits(cfg)['test']``),
    hand centre from the labels, from the localiser, and from the localiser moved by the bundle's
    centre refiner (where it has one). ``paths``: the exported models to run
    (``export.export_for_tracker``; default: exported into the cache). ``rows``: which of
    ``TRACKER_ROWS`` to run (default all). ``fc_rank``: the step with low-rank fc layers."""
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
