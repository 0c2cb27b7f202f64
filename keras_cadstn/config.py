"""Every configuration of the library in one place: the networks, training, input pipelines, the
synthetic data, the main job, and the named recipes built from them (``paper``, ``demo``,
``benchmark``, ``preset``). The defaults of CADSTN's networks and training are the paper's (docs/architecture.md);
fields marked "ours" are this library's choices, with their evidence in docs/decisions.md.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_cadstn.camera import NYU_CAMERA, Camera
from keras_cadstn.errors import ConfigError, DataError

GATE_INPUTS = ("crop", "predictions")
STAGES = ("baseline", "sliced3d", "spatial", "temporal", "fusion")
STEP_KEYS = STAGES + ("refine",)  # what TrainConfig.steps may name: the stages and the refiner (ours)
STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES, FUSION_LOSSES = ("step", "cosine"), ("l2", "joint_distance")
# the temporal encoder: the Baseline frozen (the authors' code), fine-tuned, or from scratch (the paper)
TEMPORAL_INITS = ("baseline_frozen", "baseline_finetune", "scratch")
PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")  # TFLite; ONNX is float32
BACKENDS = ("keras", "tflite", "onnx")
SOURCE_KINDS = ("realsense[:SERIAL]", "bag:FILE", "openni", "pngs:DIR", "nyu:ROOT", "icvl:ROOT")
HANDS, POSES, SENSORS = ("spheres", "mesh"), ("grasp", "grasp_wide", "grasp_spread", "gestures"), ("basic", "kinect1", "sr300", "d400", "mixed")
SCENES = ("behind", "beside_head", "in_front_of_face", "touching_torso")  # where the person is
SHARDS = 8  # TFRecord files per converted split
SYNTH_SPLITS = (256, 4, 2)  # write_synthetic_nyu: frames per sequence, training and test sequences
PARITY_CLIPS = 20  # clips of T crops an export is checked (and int8 calibrated) on
PAPER_IMAGE_SIZE = 128  # M, the paper's crop size
REAL_FRAMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "real_frames")
REFINER_STEPS = 20000  # ours (the paper has no refiner): a third of a pose stage's schedule
# the accuracy benchmark's schedule; the demo's temporal stage runs 600 steps to fit 10 minutes
BENCHMARK_STEPS = {"baseline": 500, "sliced3d": 500, "spatial": 500, "temporal": 1000, "fusion": 200, "refine": 1500}


def cache_dir() -> str:
    """Where the library keeps what it makes (``$KERAS_CADSTN_CACHE`` or ``~/.cache/keras_cadstn``)."""
    return os.environ.get("KERAS_CADSTN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "keras_cadstn")


@dataclasses.dataclass(frozen=True)
class CADSTNConfig:
    num_joints: int = 14  # NYU 14, ICVL 16
    image_size: int = PAPER_IMAGE_SIZE  # M: crops are M x M
    num_slices: int = 8  # L: channels of the sliced 3D volume
    seq_len: int = 16  # T: frames per clip of the temporal network
    filters: tuple = (32, 64, 128)
    pools: tuple = (4, 2, 2)
    fc_units: int = 1024
    dropout: float = 0.3
    lstm_units: int = 1024
    lstm_dropout: float = 0.5
    # ours: the temporal network also reads the crop centre's motion, which crops hide (docs/decisions.md)
    centre_motion: bool = False
    # the gate reads the "crop" (the paper) or, ours, both networks' "predictions" (docs/decisions.md)
    gate_input: str = "predictions"

    def __post_init__(self):
        if self.gate_input not in GATE_INPUTS:
            raise ValueError(f"gate_input must be one of {GATE_INPUTS}, got {self.gate_input!r}")
        total_pool = int(np.prod(self.pools))
        if self.image_size % total_pool:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {total_pool} "
                             f"(the product of the pooling sizes {self.pools})")

    num_outputs = property(lambda self: 3 * self.num_joints)
    crop_shape = property(lambda self: (self.image_size, self.image_size, 1))

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, d: dict) -> "CADSTNConfig":
        d = dict(d)
        d.setdefault("centre_motion", False)  # written before the options: no motion input,
        d.setdefault("gate_input", "crop")  # the paper's gate
        d.update({k: tuple(d[k]) for k in ("filters", "pools") if k in d})
        return cls(**d)

    replace = dataclasses.replace


class _CropNetworkSettings:
    """The small crop networks' shared settings: a size check and a JSON round trip."""
    def _check_image_size(self, what: str) -> None:
        if self.image_size % (2 ** len(self.filters)):
            raise ValueError(f"{what} image_size {self.image_size} must be a multiple of {2 ** len(self.filters)}")

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["filters"] = tuple(d.get("filters", cls.filters))
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class RefinerConfig(_CropNetworkSettings):
    image_size: int = 32  # ours: ~9 mm per pixel over the 300 mm cube, cheap enough to run twice a frame
    filters: tuple = (16, 32, 64)
    fc_units: int = 256
    iterations: int = 2  # refinement passes from a detection (the second corrects the first's crop shift)
    tracked_iterations: int = 1  # passes from the last frame's joint: a second did not help (docs/decisions.md)
    # training crops: around the detection and the reference joint, normal sd per axis, capped
    perturb_mm: float = 35.0
    max_offset_mm: float = 100.0
    samples_per_frame: int = 8  # 8 crops per frame tracked better than 4 on validation
    # optional: a joint further behind its pixel's depth is put behind_surface_mm behind it (off: decisions.md)
    max_behind_surface_mm: float | None = None
    behind_surface_mm: float = 14.0
    # whether the tracker runs it unless told otherwise: only once measured to help on real frames
    default_on: bool = False

    def __post_init__(self):
        self._check_image_size("refiner")
        if self.iterations < 1 or self.tracked_iterations < 1 or self.samples_per_frame < 1:
            raise ValueError("refiner iterations, tracked_iterations and samples_per_frame must be >= 1")
        if self.max_behind_surface_mm is not None and not self.max_behind_surface_mm > self.behind_surface_mm >= 0:
            raise ValueError(f"refiner max_behind_surface_mm ({self.max_behind_surface_mm}) must exceed "
                             f"behind_surface_mm ({self.behind_surface_mm}) >= 0, or be None")


@dataclasses.dataclass(frozen=True)
class DetectorConfig(_CropNetworkSettings):
    """The learned hand detector (ours, ``tracking.detector``): the refiner's network with a hand/no-hand
    output, trained on scenes with a person; crops are metric, so one detector serves every camera."""
    image_size: int = 32
    cube_mm: float = 300.0
    filters: tuple = (16, 32, 64)
    fc_units: int = 256
    # test time: the nearest blobs' palms, moved `iterations` times, kept from `threshold` (validation)
    max_candidates: int = 3
    iterations: int = 5
    threshold: float = 0.9
    # training: "hand" within hand_radius_mm of the palm; the offset learned within offset_radius_mm
    hand_radius_mm: float = 60.0
    offset_radius_mm: float = 150.0

    def __post_init__(self):
        self._check_image_size("detector")
        if self.iterations < 0 or self.max_candidates < 1 or not 0 < self.threshold < 1:
            raise ValueError("detector iterations must be >= 0, max_candidates >= 1 and threshold in (0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe by default (docs/architecture.md, Training)."""
    steps: dict = dataclasses.field(default_factory=lambda: {"baseline": 60000, "sliced3d": 60000, "spatial": 60000,
                                                             "temporal": 60000, "fusion": 40000})
    batch_size: int = 128  # frames; sequence stages use batch_size // seq_len clips
    learning_rate: float = 1e-3
    # ours (None: learning_rate): a sigmoid gate at 1e-3 can saturate before it tells inputs apart
    fusion_learning_rate: float | None = None
    # the fusion stage's loss: "l2" (the paper) or, ours, "joint_distance" (the metric itself)
    fusion_loss: str = "joint_distance"
    # "step": x decay_factor every decay_every steps (the paper); "cosine": to 0 over a stage (ours)
    schedule: str = "step"
    decay_every: int = 20000
    decay_factor: float = 0.1
    # Keras' Adam decays weights decoupled (AdamW-style), Caffe couples it: same coefficient
    weight_decay: float = 5e-4
    checkpoint_every: int = 1000
    temporal_init: str = "baseline_finetune"  # ours, measured (docs/decisions.md); the paper: scratch
    mixed_precision: bool = False
    jit_compile: bool = False  # model.fit only: XLA, and steps per call into the compiled function
    steps_per_execution: int = 1
    strategy: str = "default"
    seed: int = 0
    deterministic: bool = False  # deterministic TF ops: one seed reproduces on one machine
    augment: bool = True  # the paper's NYU augmentation; off for ICVL
    # ours: a random in-plane rotation within +- this many degrees on top of it (real hands point anywhere)
    rotation: float = 0.0
    shuffle: bool = True  # False: records in file order, reproducible across distribution strategies
    verbose: int | str = "auto"

    def __post_init__(self):
        for stage, n in self.steps.items():
            if stage not in STEP_KEYS or int(n) < 1:
                raise ConfigError(f"steps: every stage must be one of {STEP_KEYS} with >= 1 step, got {stage}={n}")
        for name in ("batch_size", "checkpoint_every", "decay_every", "steps_per_execution"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not 0 <= self.rotation <= 180:
            raise ConfigError(f"learning_rate must be > 0 and rotation in [0, 180] degrees, got {self.learning_rate}, "
                              f"{self.rotation}")
        for name, allowed in (("schedule", SCHEDULES), ("temporal_init", TEMPORAL_INITS), ("strategy", STRATEGIES),
                              ("fusion_loss", FUSION_LOSSES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """Optional in-plane augmentation on top of the paper's: rotation (degrees), scale, shift (px)."""
    max_rotation: float = 0.0
    max_scale: float = 0.0
    max_shift: float = 0.0


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How ``make_dataset`` streams a split (docs/data_formats.md, "Input pipeline"): 'frames' (crops,
    joints) or 'sequences' (windows of ``seq_len`` frames, ``window_shift`` apart); ``include_meta`` adds
    centre, cube, mm joints, ids, occlusion; ``num_shards``/``shard_index``: one worker's share."""
    mode: str = "frames"
    seq_len: int = 16
    batch_size: int = 128
    augment: bool = False  # the paper's rot/flip augmentation
    random_affine: RandomAffine | None = None
    shuffle: bool = False
    shuffle_buffer: int = 2048
    seed: int = 0
    window_shift: int | None = None
    repeat: bool = False
    cache: bool = False
    drop_remainder: bool = False
    centre_motion: bool = False
    output_names: tuple | None = None
    include_meta: bool = False
    on_corrupt: str = "raise"  # or "skip": read what is intact of a damaged shard
    verify_checksums: bool = True
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self):
        if self.mode not in ("frames", "sequences"):
            raise ConfigError(f"mode must be 'frames' or 'sequences', got {self.mode!r}")
        for name in ("seq_len", "batch_size", "shuffle_buffer", "num_shards"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.on_corrupt not in ("raise", "skip"):
            raise ConfigError(f"on_corrupt must be 'raise' or 'skip', got {self.on_corrupt!r}")
        if self.centre_motion and self.mode != "sequences":
            raise ConfigError("centre_motion needs mode='sequences' (the motion between a window's frames)")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"shard_index must be in [0, {self.num_shards}), got {self.shard_index}")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """How the synthetic sequences look; defaults mimic NYU (hand 450-750 mm from a Kinect)."""
    camera: Camera = NYU_CAMERA
    hand_scale: float = 1.0
    # ours, the world's options (docs/synthetic.md): HANDS, POSES (gestures: mesh only; grasp_spread: spheres), SENSORS
    hand: str = "spheres"
    poses: str = "grasp"
    sensor: str = "basic"
    sleeve: float = 0.3  # share of the mesh hand's sequences whose forearm is in a sleeve
    left_hands: float = 0.0  # share of sequences with a left hand: the right one mirrored
    depth_range: tuple = (450.0, 750.0)
    wall_depth: tuple = (1300.0, 1900.0)
    noise_mm: float = 1.5  # at 500 mm, grows with depth squared (structured-light sensors)
    edge_dropout: float = 0.5
    random_dropout: float = 0.01
    fps: float = 30.0
    # ours, for the temporal network: what past frames resolve (occluders, drop-outs, near range, speed)
    events: bool = False
    occluders_per_100_frames: float = 1.0  # each 8-40 frames, 60-200 mm in front of the palm
    dropout_bursts_per_100_frames: float = 1.5  # each 2-10 frames, a disc of 15-35 mm over a joint
    near_limit_per_100_frames: float = 0.5  # each 10-30 frames, depth nearer than palm - 30 mm lost
    speeds: tuple = (1.0, 1.0, 2.0, 3.0)  # motion speed of a sequence, drawn once
    # ours, for the localiser: a person behind the hand, the other arm raised, objects beside it
    person: bool = False
    person_behind_mm: tuple = (150.0, 400.0)
    other_arm_raised: float = 0.3
    furniture: float = 0.3
    scenes: tuple = (1.0, 0.0, 0.0, 0.0)  # with a person: how often each of SCENES

    def __post_init__(self):
        if self.sensor not in SENSORS:
            raise ConfigError(f"sensor must be one of {SENSORS}, got {self.sensor!r}")
        if len(self.scenes) != len(SCENES) or min(self.scenes) < 0 or not sum(self.scenes) > 0:
            raise ConfigError(f"scenes: {len(SCENES)} weights >= 0 for {SCENES}, not all 0; got {self.scenes}")
        if self.hand not in HANDS or self.poses not in POSES:
            raise ConfigError(f"hand must be one of {HANDS} and poses one of {POSES}, got {self.hand!r}, {self.poses!r}")
        needs = {"gestures": "mesh", "grasp_spread": "spheres"}.get(self.poses, self.hand)
        if self.hand != needs:  # the procedural hand has no joint angles; the mesh has its own spread limits
            raise ConfigError(f"poses={self.poses!r} needs hand={needs!r}")


DEMO_TRAINING = TrainConfig(steps={**BENCHMARK_STEPS, "temporal": 600}, batch_size=64, checkpoint_every=250,
                            schedule="cosine", fusion_learning_rate=3e-4, verbose=2)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The main job; defaults: the synthetic demo for 2 CPU cores (choices on validation, never on test)."""
    data: str = "synthetic"  # or "nyu:/path/to/nyu", "icvl:/path/to/icvl"
    workdir: str = dataclasses.field(default_factory=lambda: os.path.join(cache_dir(), "demo"))
    frames_per_sequence: int = 160  # synthetic only
    train_sequences: int = 8
    val_sequences: int = 2
    test_sequences: int = 2
    centre_scale: float = 1.0  # ours: the crops' centre of mass in the cube x this (DatasetSpec; 1: the paper's)
    data_seed: int = 0  # the synthetic data set's seed (training seeds are 0 .. seeds - 1)
    synth_events: bool = True  # occluders, depth drop-out bursts, near-range loss, fast motion
    # the synthetic world (SynthConfig's hand, poses, sensor, scenes); a workdir keeps the one it was made in
    hand: str = "spheres"
    poses: str = "grasp"
    sensor: str = "basic"
    scenes: tuple = (1.0, 0.0, 0.0, 0.0)
    image_size: int = 64
    seq_len: int = 16
    network: tuple = ()  # CADSTNConfig overrides as (name, value) pairs, e.g. (("fc_units", 64),)
    seeds: int = 1  # independent training runs; the tables give mean and spread
    # ours, measured: the gate trains on records the two networks have not fitted ("train": the paper)
    gate_data: str = "val"
    train: TrainConfig = dataclasses.field(default_factory=lambda: DEMO_TRAINING)
    # the centre refiner shipped in the bundle; None: none (the tracker uses the localiser's centre)
    refiner: RefinerConfig | None = RefinerConfig()
    # ours: the refiner also trains on scenes with a person (32 x 20 chosen on validation)
    refiner_person_sequences: int = 32
    refiner_person_frames: int = 20
    # ours: the bundle's step with fc layers of this rank, fitted on low_rank_clips clips (None: none)
    fc_rank: int | None = 16
    low_rank_clips: int = 64

    def scaled(self, factor: float) -> "DemoConfig":  # every stage's steps x factor (>= 2), e.g. 0.02 to smoke-test
        steps = {s: max(int(n * factor), 2) for s, n in self.train.steps.items()}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, steps=steps))

    def dataset(self) -> tuple:  # ('synthetic'|'nyu'|'icvl', root or None)
        if not 0 < self.centre_scale <= 1:  # checked before any data is made
            raise ConfigError(f"centre_scale must be in (0, 1], got {self.centre_scale!r}")
        if self.data == "synthetic":
            return "synthetic", None
        name, sep, root = self.data.partition(":")
        if not sep or name not in ("nyu", "icvl") or not root:
            raise ConfigError(f"data must be 'synthetic', 'nyu:/path' or 'icvl:/path'; got {self.data!r}")
        if not os.path.isdir(root):
            raise DataError(f"{name} data folder {root!r} does not exist")
        return name, root

    def source(self) -> tuple:  # (on-disk format 'nyu'|'icvl', root): the synthetic set is NYU-format in the workdir
        name, root = self.dataset()
        return ("nyu", os.path.join(self.workdir, "synthetic_nyu")) if name == "synthetic" else (name, root)


def paper(data: str, workdir: str | None = None) -> DemoConfig:
    """The paper's setup on a real dataset ("nyu:/path" or "icvl:/path"): its schedule, 128x128 crops."""
    return DemoConfig(data=data, workdir=workdir or os.path.join(cache_dir(), data.split(":")[0]),
                      image_size=128, train=TrainConfig())


def demo(**changes) -> DemoConfig:
    """The synthetic main job sized for 2 CPU cores (``cadstn demo``); ``changes`` replace fields."""
    return DemoConfig(**changes)


def benchmark(image_size: int = 64, quick: bool = False, workdir: str | None = None, seeds: int | None = None,
              test_sequences: int = 4, temporal_init: str = "baseline_finetune") -> DemoConfig:
    """The accuracy benchmark: more, shorter sequences than the demo, several seeds (``quick``: tiny)."""
    workdir = workdir or os.path.join(cache_dir(), "bench_quick" if quick else f"bench_{image_size}")
    if quick:
        train = TrainConfig(steps=dict.fromkeys(DEMO_TRAINING.steps, 4), batch_size=16, checkpoint_every=4,
                            schedule="cosine", verbose=0)
        return DemoConfig(workdir=workdir, frames_per_sequence=32, train_sequences=3, val_sequences=1,
                          test_sequences=1, image_size=32, seq_len=4, seeds=seeds or 2, train=train,
                          network=(("fc_units", 32), ("lstm_units", 16)))
    train = dataclasses.replace(DEMO_TRAINING, steps=BENCHMARK_STEPS, verbose=0, temporal_init=temporal_init)
    return DemoConfig(workdir=workdir, frames_per_sequence=80, train_sequences=20, val_sequences=4,
                      test_sequences=test_sequences, image_size=image_size, seeds=seeds or 3, train=train)


@dataclasses.dataclass(frozen=True)
class PresetRecipe:
    """What ``tools/train_preset.py NAME`` trains: the main job's config and the detector's data and steps."""
    name: str
    version: int
    job: DemoConfig
    detector_sequences: int = 48
    detector_frames: int = 50
    detector_steps: int = 8000
    detector_seed: int = 2000  # apart from the job's data (0..) and the localiser benchmark's (1000..)


DEFAULT_PRESET = "cadstn_synthetic_64"
# ours: the procedural world (its demo bundle did best on the real frames), 4x the demo's sequences, ~4x its steps
PRESET_STEPS = {"baseline": 1500, "sliced3d": 300, "spatial": 2500, "temporal": 2500, "fusion": 500, "refine": 4000}
# the same at the paper's crop size (for a GPU: not trained here); tiny_test: a minute at 32x32, for tests
PRESET_NAMES = (DEFAULT_PRESET, "cadstn_synthetic_128", "tiny_test")


def preset(name: str = DEFAULT_PRESET, workdir: str | None = None) -> PresetRecipe:
    """The recipe of a named preset (``PRESET_NAMES``)."""
    workdir = workdir or os.path.join(cache_dir(), "preset_" + name)
    train = dataclasses.replace(DEMO_TRAINING, steps=PRESET_STEPS, deterministic=True)
    if name in PRESET_NAMES[:2]:
        # version 3: crops centred on the hand (half the cube), open hands as often as closed (decisions.md)
        return PresetRecipe(name, 3, DemoConfig(workdir=workdir, train_sequences=32, val_sequences=4, test_sequences=4, train=train,
                                                image_size=int(name.rsplit("_", 1)[1]), centre_scale=0.5, poses="grasp_wide"))
    if name == "tiny_test":
        train = dataclasses.replace(train, steps=dict.fromkeys(PRESET_STEPS, 4), batch_size=8, checkpoint_every=4)
        job = DemoConfig(workdir=workdir, frames_per_sequence=24, train_sequences=2, val_sequences=1, test_sequences=1,
                         image_size=32, seq_len=4, train=train, network=(("fc_units", 32), ("lstm_units", 16)),
                         refiner_person_sequences=2, refiner_person_frames=4, fc_rank=4, low_rank_clips=4)
        return PresetRecipe(name, 1, job, detector_sequences=2, detector_frames=3, detector_steps=4)
    raise ConfigError(f"unknown preset recipe {name!r}; expected one of {PRESET_NAMES}")
