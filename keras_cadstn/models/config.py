"""The networks' hyper-parameters as dataclasses: CADSTN's (defaults are the paper's,
docs/architecture.md) and the hand-centre refiner's (ours)."""
from __future__ import annotations

import dataclasses


GATE_INPUTS = ("crop", "predictions")


@dataclasses.dataclass(frozen=True)
class CADSTNConfig:
    num_joints: int = 14  # NYU 14, ICVL 16
    image_size: int = 128  # M: crops are M x M
    num_slices: int = 8  # L: channels of the sliced 3D volume
    seq_len: int = 16  # T: frames per clip of the temporal network
    filters: tuple = (32, 64, 128)
    pools: tuple = (4, 2, 2)
    fc_units: int = 1024
    dropout: float = 0.3
    lstm_units: int = 1024
    lstm_dropout: float = 0.5
    # ours (not in the paper): the temporal network also reads each frame's crop-centre motion,
    # (centre_t - centre_t-1) / (cube / 2) in the joints' units. Every crop is normalised to its own
    # centre, so without it the network cannot tell how far the crop moved between frames (an
    # occluder drags the centre of mass away from the hand); README, accuracy benchmark
    centre_motion: bool = False
    # what the fusion gate looks at: "crop" (the paper: a Baseline-shaped CNN on the depth crop) or,
    # ours, "predictions": a small MLP on the two networks' joints and the centre motion, the
    # default because it fuses better than the fixed weight where the crop gate fused worse (README,
    # accuracy benchmark) and costs the tracker a fraction of a Baseline
    gate_input: str = "predictions"

    def __post_init__(self):
        if self.gate_input not in GATE_INPUTS:
            raise ValueError(f"gate_input must be one of {GATE_INPUTS}, got {self.gate_input!r}")
        total_pool = 1
        for p in self.pools:
            total_pool *= p
        if self.image_size % total_pool:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {total_pool} "
                             f"(the product of the pooling sizes {self.pools})")

    @property
    def num_outputs(self) -> int:
        return 3 * self.num_joints

    @property
    def crop_shape(self) -> tuple:
        return (self.image_size, self.image_size, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CADSTNConfig":
        d = dict(d)
        d.setdefault("centre_motion", False)  # written before the options: no motion input,
        d.setdefault("gate_input", "crop")  # the paper's gate
        for k in ("filters", "pools"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **changes) -> "CADSTNConfig":
        return dataclasses.replace(self, **changes)


class _CropNetworkSettings:
    """What the small crop networks' settings (centre refiner, hand detector) share: a size check
    (each pooling halves the crop) and a JSON-friendly round trip."""

    def _check_image_size(self, what: str) -> None:
        if self.image_size % (2 ** len(self.filters)):
            raise ValueError(f"{what} image_size {self.image_size} must be a multiple of {2 ** len(self.filters)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["filters"] = tuple(d.get("filters", cls.filters))
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class RefinerConfig(_CropNetworkSettings):
    # ours: 32 px over the 300 mm cube is ~9 mm per pixel, fine enough to place a centre and cheap
    # enough to run up to twice per frame next to the pose network
    image_size: int = 32
    filters: tuple = (16, 32, 64)
    fc_units: int = 256
    iterations: int = 2  # refinement passes from a detection (the second corrects the first's crop shift)
    # passes from the last frame's refined joint (the tracker's usual start, already near the
    # joint). On the demo's validation split, tracker error paired over eight refiners (two seeds of
    # four training settings): two passes - one pass +0.14 mm (95% interval -0.13 to +0.41; per
    # refiner -0.26 to +0.55; benchmarks/bench_refiner_scenes.py --tracked-passes 1 2), so one: a
    # refiner pass less per frame (bench_tracking.py's paired rows, 2-core Xeon: 0.18-0.68 ms saved in
    # four of five runs, nothing in the fifth, on a slow spell of that machine)
    tracked_iterations: int = 1
    # training crops: the localiser's detection and centres around the reference joint, offset by a
    # normal of this sd per axis, at most max_offset_mm away
    perturb_mm: float = 35.0
    max_offset_mm: float = 100.0
    # measured on the demo's validation split (tracker error, two training seeds each): 8 crops per
    # frame track better than 4 and vary less between seeds (1500 or 3000 steps: the same)
    samples_per_frame: int = 8
    # at test time, after each pass (off by default): a reference joint more than
    # ``max_behind_surface_mm`` behind the surface seen at its pixel is put ``behind_surface_mm``
    # behind it (the palm joint lies inside the palm; in the synthetic scenes 12-16 mm behind the
    # surface, median 14). Why it exists: on the real SR305 frames the synthetic-trained refiner
    # puts the joint 23-74 mm behind the palm's surface while its image position stays near the
    # palm; at 20 mm the check brings 7 of the 8 within 60 mm of the annotated palm (5 without).
    # Why it is off: on the
    # demo's validation split it raised the tracker's error from 19.82 to 20.56 mm (23.9-24.8 mm
    # at 30-60 mm): whatever lies in front of the palm at the joint's pixel (the split's occluders
    # pass in front of the hand; curled fingers) counts as the surface, and the joint is pulled
    # onto it (benchmarks/bench_refiner_surface.py)
    max_behind_surface_mm: float | None = None
    behind_surface_mm: float = 14.0

    def __post_init__(self):
        self._check_image_size("refiner")
        if self.iterations < 1 or self.tracked_iterations < 1 or self.samples_per_frame < 1:
            raise ValueError("refiner iterations, tracked_iterations and samples_per_frame must be >= 1")
        if self.max_behind_surface_mm is not None and not self.max_behind_surface_mm > self.behind_surface_mm >= 0:
            raise ValueError(f"refiner max_behind_surface_mm ({self.max_behind_surface_mm}) must exceed "
                             f"behind_surface_mm ({self.behind_surface_mm}) >= 0, or be None")


@dataclasses.dataclass(frozen=True)
class DetectorConfig(_CropNetworkSettings):
    """The learned hand detector (ours; ``keras_cadstn.detect``): the centre refiner's network with a
    second output, whether a hand is at the crop's centre, trained on synthetic scenes with a person
    behind the hand. Crops are metric (a ``cube_mm`` cube), so one detector serves every camera."""

    image_size: int = 32
    cube_mm: float = 300.0
    filters: tuple = (16, 32, 64)
    fc_units: int = 256
    # at test time: the nearest ``max_candidates`` blobs' palm points, each moved ``iterations``
    # times by the offset, then kept when the hand probability there is at least ``threshold``.
    # Chosen on validation scenes (seeds 3000..3005, bench_localiser.py): 2 / 3 / 4 / 5 moves found
    # 93.3 / 94.2 / 97.5 / 98.3% of the palms (6 and 8: 98.3%); thresholds 0.5-0.9 all said "no
    # hand" in every frame without one there and found the same palms
    max_candidates: int = 3
    iterations: int = 5
    threshold: float = 0.9
    # training: a crop is "hand" when its centre lies within ``hand_radius_mm`` of the palm; the
    # offset is learned where the palm lies within ``offset_radius_mm``
    hand_radius_mm: float = 60.0
    offset_radius_mm: float = 150.0

    def __post_init__(self):
        self._check_image_size("detector")
        if self.iterations < 0 or self.max_candidates < 1 or not 0 < self.threshold < 1:
            raise ValueError("detector iterations must be >= 0, max_candidates >= 1 and threshold in (0, 1)")
