"""Tracking a stream of depth frames into files: one JSON line per frame, a video with the skeleton, a live
window; Ctrl-C keeps what was written."""
from __future__ import annotations

import json
import os
import sys
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError
from keras_cadstn.tracking.drawing import depth_to_bgr, draw_skeleton
from keras_cadstn.tracking.tracker import HandTracker


class FrameRate:
    """Frames per second over the last ``window`` frames."""
    def __init__(self, window: int = 30):
        self.times, self.window = [], window

    def tick(self, now: float) -> float:
        self.times = (self.times + [now])[-self.window:]
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 1 and \
            self.times[-1] > self.times[0] else 0.0


def json_line(frame, result) -> str:
    """One frame's line: index, source file, timestamp, whether the hand was found, joints in mm."""
    return json.dumps({"frame": frame.index, "source": frame.name or None, "timestamp": frame.timestamp,
                       "sensor_clock": frame.sensor_clock, "found": bool(result.found), "mode": result.mode,
                       "joints_mm": None if not result.found else np.round(result.joints_mm, 2).tolist()}) + "\n"


def drawn_frame(frame, result, camera, dataset: str, fps: float) -> np.ndarray:
    """The depth in colour with the skeleton, the frame rate and found/lost."""
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


def track_stream(tracker: HandTracker, frames, jsonl: str | None = None, video: str | None = None,
                 show: bool = False, max_frames: int | None = None, progress: bool = True) -> dict:
    """Track every frame of a source; write ``jsonl`` (one line per frame: frame, timestamp,
    sensor_clock, found, mode, joints_mm in camera mm or null), ``video`` (depth with the skeleton,
    fps and found/lost) and/or a live window. Ctrl-C ends the stream; the files written so far are
    complete (both are written under a temporary name and renamed at the end; an error leaves
    nothing). ``jsonl`` '-': standard output, line by line. Every line names its source frame
    (``source``: the file name where the source has one). Returns counts and per-frame latency
    percentiles."""
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
    latencies, found, count, interrupted = [], 0, 0, False
    bar = tqdm(total=max_frames, unit="frame", disable=not progress, desc="tracking")
    try:
        try:
            for frame in frames:
                if max_frames is not None and count >= max_frames:
                    break
                start = time.perf_counter()
                result = tracker.update(frame.depth)
                latencies.append(time.perf_counter() - start)
                count += 1
                found += bool(result.found)
                fps = rate.tick(time.perf_counter())
                bar.update(1)
                if out is not None:
                    out.write(json_line(frame, result))
                if video or show:
                    image = drawn_frame(frame, result, camera, dataset, fps)
                    if video:
                        if writer is None:
                            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if video.lower().endswith(".avi") else "mp4v"))
                            writer = cv2.VideoWriter(tmp_video, fourcc, 30.0, (image.shape[1], image.shape[0]))
                            if not writer.isOpened():
                                raise ConfigError(f"{video}: OpenCV cannot write this video format (use .mp4 or .avi)")
                        writer.write(image)
                    if show:
                        cv2.imshow("cadstn track", image)
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            break
        except KeyboardInterrupt:  # Ctrl-C: stop reading, keep what was tracked
            interrupted = True
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
    return {"frames": count, "found": found, "interrupted": interrupted, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}
