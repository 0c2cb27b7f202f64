"""Depth frame sources: cameras, recordings, folders of PNGs and the datasets' test splits.

Every source is an iterable of ``DepthFrame`` (the raw depth image in the source camera's unit, a
timestamp, an index) with a ``camera`` attribute (intrinsics and depth unit, from the device or
the recording where there is one), so ``bundle.with_camera(source.camera)`` makes the tracker
read it. ``open_source("realsense:SERIAL" | "bag:FILE" | "openni" | "pngs:DIR" | "nyu:ROOT" |
"icvl:ROOT")`` picks one. Sensor SDKs are an optional extra: ``pip install -e ".[camera]"``.
"""
from __future__ import annotations

import ctypes
import dataclasses
import glob
import json
import logging
import math
import os
import re
import queue
import sys
import time

import cv2
import numpy as np

from keras_cadstn.camera import Camera
from keras_cadstn.config import SOURCE_KINDS
from keras_cadstn.data.nyu import decode_depth
from keras_cadstn.data.png import PNG_SIGNATURE
from keras_cadstn.data.splits import load_split
from keras_cadstn.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
CAMERA_FILE = "camera.json"  # a PNG folder's camera: Camera.to_dict()
CAMERA_EXTRA = 'install the camera extra: pip install -e ".[camera]"'


@dataclasses.dataclass(frozen=True)
class DepthFrame:
    depth: np.ndarray  # (H, W) float32, the camera's depth unit (camera.to_mm gives mm), 0 = no reading
    timestamp: float  # seconds: the sensor's clock where the source has one, else when it was read
    index: int
    sensor_clock: bool
    name: str = ""
    error: str = ""  # a frame that could not be read (``depth`` is then None): what was wrong


class DepthSource:
    """Base: iterate frames; ``close()`` (or a ``with`` block) releases the device."""
    camera: Camera

    def __iter__(self):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_camera(text: str) -> Camera:
    """'fx,fy,cx,cy,width,height[,depth_unit_mm]' -> Camera: finite numbers, whole pixels."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (6, 7) or not all(np.isfinite(values)):
        raise ConfigError(f"camera must be finite numbers fx,fy,cx,cy,width,height[,depth_unit_mm], got {text!r}")
    if any(v != int(v) or v < 1 for v in values[4:6]):
        raise ConfigError(f"camera width and height must be whole pixels >= 1, got {text!r}")
    return Camera(*values[:4], int(values[4]), int(values[5]), *(values[6:] or [1.0]))


def natural_key(name: str) -> list:
    """Sort key that puts frame2 before frame10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class PngFolderSource(DepthSource):
    """Depth PNGs of a folder in natural name order (frame2 before frame10): 16-bit (one channel, the camera's unit) or NYU's 8-bit
    colour encoding (G * 256 + B). The camera comes from ``camera`` or the folder's camera.json."""
    def __init__(self, folder: str, camera: Camera | None = None):
        if not os.path.isdir(folder):
            raise DataError(f"pngs:{folder}: folder not found")
        self.paths = sorted(glob.glob(os.path.join(folder, "*.png")), key=lambda p: natural_key(os.path.basename(p)))
        if not self.paths:
            raise DataError(f"pngs:{folder}: no .png files in the folder")
        if camera is None:
            path = os.path.join(folder, CAMERA_FILE)
            if not os.path.isfile(path):
                raise ConfigError(f"pngs:{folder}: the camera is unknown: give --camera fx,fy,cx,cy,width,height"
                                  f"[,depth_unit_mm] or put a {CAMERA_FILE} ({{\"fx\": ..., \"fy\": ..., \"cx\": ..., "
                                  f"\"cy\": ..., \"width\": ..., \"height\": ..., \"depth_unit_mm\": ...}}) in the folder")
            try:
                with open(path) as f:
                    camera = Camera.from_dict(json.load(f))
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"{path}: not a camera description ({e})") from None
        self.camera = camera

    def read(self, path: str) -> np.ndarray:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                raise DataError(f"{path}: not a PNG file")
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"{path}: not a readable PNG (corrupt or truncated file)")
        if image.dtype == np.uint16 and image.ndim == 2:
            depth = image.astype(np.float32)
        elif image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            if image[..., 2].any():  # NYU's encoding leaves red at zero; a colour picture does not
                raise DataError(f"{path}: an 8-bit colour image whose red channel is not zero: not depth in NYU's "
                                f"encoding (G * 256 + B, red 0)")
            depth = decode_depth(image)
        else:
            raise DataError(f"{path}: {image.dtype} image of shape {image.shape} is not depth: expected a 16-bit "
                            f"one-channel PNG or NYU's 8-bit colour encoding")
        if depth.shape != (self.camera.height, self.camera.width):
            raise DataError(f"{path}: image is {depth.shape[1]}x{depth.shape[0]}, the camera is "
                            f"{self.camera.width}x{self.camera.height}")
        return depth

    def __iter__(self):
        """Every file in order; one that is not readable depth comes as a frame with its ``error``
        (the stream reports and skips it), unless no file of the folder is: then a ``DataError``."""
        errors = []
        for i, path in enumerate(self.paths):
            try:
                depth, error = self.read(path), ""
            except DataError as e:
                depth, error = None, str(e)
                errors.append(error)
            yield DepthFrame(depth, time.time(), i, False, os.path.basename(path), error)
        if len(errors) == len(self.paths):
            raise DataError(f"pngs:{os.path.dirname(self.paths[0])}: none of its {len(self.paths)} PNGs is readable depth "
                            f"(the first: {errors[0]})")


class DatasetSource(DepthSource):
    """A split of NYU or ICVL in its on-disk format, frames in order, with the dataset's camera."""
    def __init__(self, dataset: str, root: str, split: str = "test"):
        if not os.path.isdir(root):
            raise DataError(f"{dataset}:{root}: folder not found")
        self.split = load_split(dataset, root, split)
        self.camera = self.split.spec.camera

    def __iter__(self):
        for i, frame in enumerate(self.split.frames):
            yield DepthFrame(self.split.read_depth(frame.path), time.time(), i, False, os.path.basename(frame.path))


def import_pyrealsense2():
    """pyrealsense2, loading libusb from the libusb-package wheel where the system has none."""
    try:
        import pyrealsense2 as rs
        return rs
    except ImportError as first:
        if "libusb" not in str(first):
            raise ConfigError(f"RealSense sources need pyrealsense2 ({first}): {CAMERA_EXTRA}") from None
    for name in [m for m in sys.modules if m.startswith("pyrealsense2")]:
        del sys.modules[name]  # the failed import left a half-made package behind
    try:
        import libusb_package
        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
        import pyrealsense2 as rs
        return rs
    except (ImportError, OSError, TypeError) as e:
        raise ConfigError(f"pyrealsense2 cannot load libusb-1.0 ({e}): install the system's libusb-1.0 or "
                          f"{CAMERA_EXTRA}") from None


class RealSenseSource(DepthSource):
    """An Intel RealSense camera (``serial``, or the first one connected) or a recording (``path``:
    ``.db3`` from SDK 2.59 on, ``.bag`` before), read through the same code: the device's depth
    sensor streams into a bounded queue. A recording plays at the reader's pace (non-real-time
    playback, set before it starts, so every frame arrives however slow the reader); intrinsics and
    depth scale come from the device or the recording."""
    def __init__(self, serial: str | None = None, path: str | None = None, timeout_ms: int = 5000,
                 queue_size: int = 8):
        rs = import_pyrealsense2()
        self.rs, self.timeout_ms, self.path, self.missing = rs, timeout_ms, path, 0
        context = rs.context()
        where = self.where = f"bag:{path}" if path is not None else f"realsense{':' + serial if serial else ''}"
        if path is not None:
            if not os.path.isfile(path):
                raise DataError(f"{where}: recording not found")
            try:
                device = context.load_device(path)
            except RuntimeError as e:
                raise DataError(f"{where}: not a readable RealSense recording ({e})") from None
            self.playback = device.as_playback()
            self.playback.set_real_time(False)  # before anything streams: no frame is skipped
        else:
            devices = {d.get_info(rs.camera_info.serial_number): d for d in context.query_devices()}
            if not devices:
                raise DataError("realsense: no RealSense camera is connected (check the cable and `rs-enumerate-devices`)")
            if serial and serial not in devices:
                raise DataError(f"{where}: no camera with this serial number; connected: {', '.join(devices)}")
            device, self.playback = devices[serial] if serial else next(iter(devices.values())), None
        try:
            self.sensor = device.first_depth_sensor()
            profiles = [p for p in self.sensor.get_stream_profiles()
                        if p.stream_type() == rs.stream.depth and p.format() == rs.format.z16]
        except RuntimeError:
            profiles = []
        if not profiles:
            raise DataError(f"{where}: no z16 depth stream")
        profile = next((p for p in profiles if p.is_default()), profiles[0]).as_video_stream_profile()
        intr = profile.get_intrinsics()
        scale = self.sensor.as_depth_sensor().get_depth_scale()  # metres per unit
        self.camera = Camera(float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy), int(intr.width),
                             int(intr.height), depth_unit_mm=float(scale) * 1000.0)
        self.frames = queue.Queue(maxsize=queue_size)  # a full queue holds the playback back
        self.started = True
        self.sensor.open(profile)
        self.sensor.start(self._arrived)

    def _arrived(self, frame) -> None:
        depth = frame.as_depth_frame()
        item = (np.asanyarray(depth.get_data()).astype(np.float32), depth.get_timestamp() / 1000.0,
                int(depth.get_frame_number()))
        while self.started:  # wait for room (a recording waits for its reader), unless closing
            try:
                self.frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        rs, last, waited, poll_s = self.rs, -1, 0.0, 0.1
        while True:
            try:
                depth, timestamp, number = self.frames.get(timeout=poll_s)
            except queue.Empty:
                if self.playback is not None and self.playback.current_status() == rs.playback_status.stopped \
                        and self.frames.empty():
                    return  # the end of the recording
                waited += poll_s
                if waited * 1000 >= self.timeout_ms:
                    raise DataError(f"{'bag:' + self.path if self.path else 'realsense'}: no frame within "
                                    f"{self.timeout_ms} ms") from None
                continue
            waited = 0.0
            if number <= last:
                continue  # a frame delivered twice
            if last >= 0 and number > last + 1:  # damaged in the recording, or dropped by the device
                self.missing += number - last - 1
                logger.warning("%s: frames %d..%d missing (damaged or dropped)", self.where, last + 1, number - 1)
            last = number
            yield DepthFrame(depth, timestamp, number, True, f"frame {number}")

    def close(self) -> None:
        if getattr(self, "started", False):
            self.started = False  # a callback waiting for room returns
            try:
                self.sensor.stop()
                self.sensor.close()
            except RuntimeError:
                pass  # stopped already


class OpenNISource(DepthSource):
    """An OpenNI2 device (Kinect v1, Xtion, Orbbec) through the ``openni`` package; the OpenNI2
    runtime (libOpenNI2.so) must be installed. Focal length from the stream's field of view."""
    def __init__(self, library_dir: str | None = None):
        try:
            from openni import openni2
        except ImportError as e:
            raise ConfigError(f"OpenNI sources need the openni package ({e}): {CAMERA_EXTRA}") from None
        self.openni2 = openni2
        try:
            openni2.initialize(library_dir or os.environ.get("OPENNI2_REDIST"))
        except Exception as e:  # the package raises its own error types, or OSError from ctypes
            raise ConfigError(f"openni: the OpenNI2 runtime (libOpenNI2.so) cannot be loaded ({e}); install it and "
                              f"set OPENNI2_REDIST to its folder") from None
        try:
            self.device = openni2.Device.open_any()
        except Exception as e:
            openni2.unload()
            raise DataError(f"openni: no OpenNI2 device found ({e})") from None
        self.stream = self.device.create_depth_stream()
        self.stream.start()
        mode = self.stream.get_video_mode()
        w, h = int(mode.resolutionX), int(mode.resolutionY)
        unit = 0.1 if "100_UM" in str(mode.pixelFormat) else 1.0
        fx = w / (2.0 * math.tan(self.stream.get_horizontal_field_of_view() / 2.0))
        fy = h / (2.0 * math.tan(self.stream.get_vertical_field_of_view() / 2.0))
        self.camera = Camera(fx, fy, w / 2.0, h / 2.0, w, h, depth_unit_mm=unit)

    def __iter__(self):
        i = 0
        while True:
            frame = self.stream.read_frame()
            depth = np.frombuffer(frame.get_buffer_as_uint16(), np.uint16).reshape(frame.height, frame.width)
            yield DepthFrame(depth.astype(np.float32), frame.timestamp / 1e6, i, True, f"frame {frame.frameIndex}")
            i += 1

    def close(self) -> None:
        self.stream.stop()
        self.openni2.unload()


def open_source(spec: str, camera: Camera | None = None) -> DepthSource:
    """``realsense[:SERIAL]``, ``bag:FILE``, ``openni``, ``pngs:DIR``, ``nyu:ROOT`` or ``icvl:ROOT``.
    ``camera`` overrides a PNG folder's camera.json (other sources know their camera)."""
    kind, _, arg = spec.partition(":")
    if camera is not None and kind != "pngs":
        raise ConfigError(f"--camera applies to pngs: folders only; {kind} sources take the camera from the "
                          f"{'dataset' if kind in ('nyu', 'icvl') else 'device or recording'}")
    if kind == "realsense":
        return RealSenseSource(serial=arg or None)
    if kind == "bag" and arg:
        return RealSenseSource(path=arg)
    if kind == "openni" and not arg:
        return OpenNISource()
    if kind == "pngs" and arg:
        return PngFolderSource(arg, camera)
    if kind in ("nyu", "icvl") and arg:
        return DatasetSource(kind, arg)
    raise ConfigError(f"source must be one of {', '.join(SOURCE_KINDS)}; got {spec!r}")
