"""Pinhole depth cameras and uvd <-> xyz conversion (DeepPrior convention, y pointing down)."""
from __future__ import annotations

import dataclasses

import numpy as np

from keras_cadstn.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Camera:
    """A pinhole depth camera.

    ``depth_unit_mm`` is how many millimetres one unit of the raw depth image is (1.0 for sensors
    that store mm, 1000.0 for sensors that store metres): every library function works in mm, and
    this factor is applied once, when raw frames enter (see ``to_mm``).
    """
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    depth_unit_mm: float = 1.0

    def __post_init__(self):
        values = (self.fx, self.fy, self.cx, self.cy, self.depth_unit_mm)
        if not all(isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in values):
            raise ConfigError(f"camera: fx, fy, cx, cy and depth_unit_mm must be finite numbers, got {self}")
        if self.fx <= 0 or self.fy <= 0 or self.depth_unit_mm <= 0:
            raise ConfigError(f"camera: fx, fy and depth_unit_mm must be > 0 (fx={self.fx}, fy={self.fy}, "
                              f"depth_unit_mm={self.depth_unit_mm})")
        if int(self.width) != self.width or int(self.height) != self.height or self.width < 1 or self.height < 1:
            raise ConfigError(f"camera: width and height must be positive whole pixels, got {self.width}x{self.height}")

    def uvd_to_xyz(self, uvd) -> np.ndarray:
        """(..., 3) pixels u, v and depth d in mm -> (..., 3) camera coordinates in mm."""
        uvd = np.asarray(uvd, dtype=np.float64)
        if uvd.shape == (3,):  # one point (several a frame in the tracker): Python floats, same result
            u, v, d = uvd.tolist()
            return np.array([(u - self.cx) * d / self.fx, (v - self.cy) * d / self.fy, d])
        d = uvd[..., 2]
        x = (uvd[..., 0] - self.cx) * d / self.fx
        y = (uvd[..., 1] - self.cy) * d / self.fy
        return np.stack([x, y, d], axis=-1)

    def xyz_to_uvd(self, xyz) -> np.ndarray:
        """(..., 3) camera coordinates in mm -> (..., 3) pixels u, v and depth in mm."""
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.shape == (3,):
            x, y, z = xyz.tolist()
            if z <= 0:
                raise ValueError("xyz_to_uvd: points must lie in front of the camera (z > 0 mm)")
            return np.array([x * self.fx / z + self.cx, y * self.fy / z + self.cy, z])
        z = xyz[..., 2]
        if np.any(z <= 0):
            raise ValueError("xyz_to_uvd: points must lie in front of the camera (z > 0 mm)")
        u = xyz[..., 0] * self.fx / z + self.cx
        v = xyz[..., 1] * self.fy / z + self.cy
        return np.stack([u, v, z], axis=-1)

    def to_mm(self, raw_depth) -> np.ndarray:
        """Raw sensor depth in this camera's unit -> float32 mm (a new array)."""
        depth = np.asarray(raw_depth).astype(np.float32)  # one pass, and no multiply for millimetres
        if self.depth_unit_mm != 1.0:
            depth *= np.float32(self.depth_unit_mm)
        return depth

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float32)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in fields[:6] if k not in d]
        if missing or set(d) - set(fields):
            raise DataError(f"camera {d}: missing {missing}, unknown {sorted(set(d) - set(fields))}")
        return cls(**d)


NYU_CAMERA = Camera(fx=588.03, fy=587.07, cx=320.0, cy=240.0, width=640, height=480)
ICVL_CAMERA = Camera(fx=241.42, fy=241.42, cx=160.0, cy=120.0, width=320, height=240)
