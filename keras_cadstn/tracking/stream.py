"""Tracking a stream of depth frames into files: one JSON line per frame, a video with the skeleton, a live
window; Ctrl-C or SIGTERM keeps what was written."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError
from keras_cadstn.tracking.drawing import depth_to_bgr, draw_skeleton
from keras_cadstn.tracking.tracker import HandTracker, TrackResult


class FrameRate:
    """Frames per second over the last ``window`` frames."""
    def __init__(self, window: int = 30):
        self.times, self.window = [], window

    def tick(self, now: float) -> float:
        self.times = (self.times + [now])[-self.window:]
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 1 and \
            self.times[-1] > self.times[0] else 0.0

logger = logging.getLogger(__name__)


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (``docker stop``, systemd, ``timeout``) ask a stream to stop after
    the frame in hand, so that every output holds the same frames; a second signal stops at once."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self._previous = False, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def json_line(frame, result) -> str:
    """One frame's line: index, source file, timestamp, whether the hand was found, joints in mm (and
    the ``error`` of a frame that could not be read)."""
    return json.dumps({"frame": frame.index, "source": frame.name or None, "timestamp": frame.timestamp,
                       "sensor_clock": frame.sensor_clock, "found": bool(result.found), "mode": result.mode,
                       "joints_mm": None if not result.found else np.round(result.joints_mm, 2).tolist(),
                       **({"error": frame.error} if frame.error else {})}) + "\n"


def skip_frame(frame, tracker: HandTracker) -> TrackResult:
    """A frame that could not be read: warned about on stderr; the tracker starts again after it."""
    logger.warning("skipped: %s", frame.error)
    tracker.reset()
    return TrackResult(False, None, None, "skipped")


def drawn_frame(frame, result, camera, dataset: str, fps: float) -> np.ndarray:
    """The depth in colour with the skeleton, the frame rate and found/lost (black for a skipped frame)."""
    if frame.depth is None:
        image = np.zeros((camera.height, camera.width, 3), np.uint8)
        cv2.putText(image, "unreadable frame: skipped", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        return image
    image = depth_to_bgr(camera.to_mm(frame.depth))
    if result.found:
        draw_skeleton(image, camera.xyz_to_uvd(result.joints_mm), dataset, (0, 0, 255), 2)
    cv2.putText(image, f"{fps:5.1f} fps  {'found' if result.found else 'lost'}", (8, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return image


VIDEO_FORMATS = (".mp4", ".avi")
STDOUT = "-"


def check_outputs(jsonl: str | None, video: str | None) -> None:
    """Refuse, before any work, outputs that could not be written or would be wrong: a folder, a
    missing parent folder, a video format OpenCV writes as something else, two outputs on one path.
    ``jsonl`` may be '-' (standard output)."""
    if video == STDOUT:
        raise ConfigError("--video cannot go to standard output: give a .mp4 or .avi file")
    if video and os.path.splitext(video)[1].lower() not in VIDEO_FORMATS:
        raise ConfigError(f"{video}: the video must be {' or '.join(VIDEO_FORMATS)} (OpenCV writes other names as "
                          f"something else)")
    paths = [p for p in (jsonl, video) if p and p != STDOUT]
    for path in paths:
        if os.path.isdir(path):
            raise ConfigError(f"{path}: is a folder; give a file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ConfigError(f"{path}: its folder {parent} does not exist")
    if len(paths) == 2 and os.path.abspath(paths[0]) == os.path.abspath(paths[1]):
        raise ConfigError(f"--jsonl and --video are the same file {paths[0]}: give two names")


def video_writer(video: str, tmp: str, shape: tuple):
    """An OpenCV writer of ``shape`` frames at 30 fps into ``tmp`` (``video``'s temporary name)."""
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*("MJPG" if video.lower().endswith(".avi") else "mp4v")),
                             30.0, (shape[1], shape[0]))
    if not writer.isOpened():
        raise ConfigError(f"{video}: OpenCV cannot write this video format (use .mp4 or .avi)")
    return writer


def track_stream(tracker: HandTracker, frames, jsonl: str | None = None, video: str | None = None,
                 show: bool = False, max_frames: int | None = None, progress: bool = True) -> dict:
    """Track every frame of a source into ``jsonl`` (a line per frame, ``json_line``; '-': standard
    output), ``video`` (depth with the skeleton) and/or a live window. Ctrl-C or SIGTERM ends the
    stream with the files complete and in step; an error leaves none (temporary names, renamed at
    the end); an unreadable frame is skipped with a warning. Returns counts and latency percentiles."""
    check_outputs(jsonl, video)
    to_stdout = jsonl == STDOUT
    if to_stdout:
        jsonl = None
    if show:
        try:
            cv2.namedWindow("cadstn track", cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise ConfigError("--show needs OpenCV with a GUI (pip install opencv-python, not -headless) and a "
                              "display") from None
    camera, dataset = tracker.camera, tracker.bundle.spec.name
    tmp_jsonl = fileio.temporary_path(jsonl, ".jsonl") if jsonl else None
    tmp_video = fileio.temporary_path(video, os.path.splitext(video)[1]) if video else None
    out, writer, rate = (open(tmp_jsonl, "w") if jsonl else sys.stdout if to_stdout else None), None, FrameRate()
    latencies, found, count, skipped, interrupted = [], 0, 0, 0, False
    bar = tqdm(total=max_frames, unit="frame", disable=not progress, desc="tracking")
    stop = StopSignals().__enter__()
    try:
        try:
            for frame in frames:
                if stop.requested or (max_frames is not None and count + skipped >= max_frames):
                    break
                start = time.perf_counter()
                if frame.error:  # reported and skipped; its line and video frame keep its place
                    result, skipped = skip_frame(frame, tracker), skipped + 1
                else:
                    result = tracker.update(frame.depth)
                    latencies.append(time.perf_counter() - start)
                    count, found = count + 1, found + bool(result.found)
                fps = rate.tick(time.perf_counter())
                bar.update(1)
                image = drawn_frame(frame, result, camera, dataset, fps) if (video or show) else None
                if out is not None:  # the line and the video frame together: a stop comes between frames
                    out.write(json_line(frame, result))
                    if to_stdout:
                        out.flush()
                if image is not None:
                    if video:
                        writer = writer or video_writer(video, tmp_video, image.shape)
                        writer.write(image)
                    if show:
                        cv2.imshow("cadstn track", image)
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            break
        except KeyboardInterrupt:  # a second Ctrl-C: stop reading, keep what was tracked
            interrupted = True
        interrupted = interrupted or stop.requested
    except BaseException:  # an error: no output at all rather than a part presented as the whole
        if out is not None and not to_stdout:
            out.close()
        if writer is not None:
            writer.release()
        for tmp in (tmp_jsonl, tmp_video):
            if tmp:
                fileio.remove(tmp)
        raise
    finally:
        stop.__exit__()
        bar.close()
    if out is not None and not to_stdout:
        out.close()
        fileio.publish(tmp_jsonl, jsonl)
    elif to_stdout:
        sys.stdout.flush()
    if writer is not None:
        writer.release()
        fileio.publish(tmp_video, video)
    if show:
        cv2.destroyAllWindows()
    ms = 1000 * np.asarray(latencies) if latencies else np.zeros(1)
    return {"frames": count, "found": found, "skipped": skipped, "interrupted": interrupted, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}
