"""The networks' hyper-parameters in one dataclass; defaults are the paper's (docs/architecture.md)."""
from __future__ import annotations

import dataclasses


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

    def __post_init__(self):
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
        for k in ("filters", "pools"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **changes) -> "CADSTNConfig":
        return dataclasses.replace(self, **changes)
