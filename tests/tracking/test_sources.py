"""Depth sources and `cadstn track`: a folder of real RealSense PNGs, a RealSense recording written by
pyrealsense2 itself (software device + recorder, played back through the live-camera code path),
the datasets' splits, and the errors of bad sources."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import REAL_FRAMES as REAL
from conftest import real_frames_camera

from keras_cadstn.camera import Camera
from keras_cadstn.cli import main
from keras_cadstn.errors import CadstnError, ConfigError, DataError
from keras_cadstn.tracking.sources import CAMERA_FILE, DepthFrame, PngFolderSource, natural_key, open_source, parse_camera
from keras_cadstn.tracking.stream import track_stream
from keras_cadstn.tracking.tracker import HandTracker

SR305 = real_frames_camera()


@pytest.fixture
def png_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in sorted(os.listdir(REAL)):
        if name.endswith(".png") or name == CAMERA_FILE:
            shutil.copy(os.path.join(REAL, name), folder / name)
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in open(path).read().splitlines()]


def arrays_through_the_tracker(bundle, depths):
    tracker = HandTracker(bundle)
    return [tracker.update(d) for d in depths]


def video_frames(path):
    import cv2
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def test_png_folder_reads_16_bit_depth_with_the_folders_camera(png_folder):
    import cv2
    source = PngFolderSource(str(png_folder))
    assert source.camera == SR305
    frames = list(source)
    assert len(frames) == 8 and [f.index for f in frames] == list(range(8))
    first = sorted((p for p in os.listdir(REAL) if p.endswith(".png")), key=natural_key)[0]  # frame 30, not 110
    assert first == "20210326-230536_30.png" and frames[0].name == first
    np.testing.assert_array_equal(frames[0].depth, cv2.imread(os.path.join(REAL, first), cv2.IMREAD_UNCHANGED))
    assert frames[0].depth.dtype == np.float32 and not frames[0].sensor_clock


def test_png_folder_reads_nyus_colour_encoding(tmp_path):
    from keras_cadstn.data.nyu import write_depth
    depth = np.full((24, 32), 812.0)
    depth[3, 4] = 1234.0
    write_depth(str(tmp_path / "a.png"), depth)
    frame = next(iter(PngFolderSource(str(tmp_path), Camera(30, 30, 16, 12, 32, 24))))
    np.testing.assert_array_equal(frame.depth, depth)


@pytest.mark.slow
def test_cadstn_track_on_a_folder_of_real_frames(tiny_bundle, png_folder, tmp_path, capsys):
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    code = main(["track", "--bundle", tiny_bundle.path, "--source", f"pngs:{png_folder}", "--jsonl", str(jsonl),
                 "--video", str(video)])
    assert code == 0, capsys.readouterr().err
    lines = read_jsonl(jsonl)
    assert [line["frame"] for line in lines] == list(range(8))
    assert all(line["found"] for line in lines)  # the localiser finds the hand in front of the person
    depths = [f.depth for f in PngFolderSource(str(png_folder))]
    expected = arrays_through_the_tracker(tiny_bundle.with_camera(SR305), depths)
    for line, result in zip(lines, expected):
        np.testing.assert_allclose(line["joints_mm"], result.joints_mm, atol=0.01)  # rounded to 0.01 mm
    assert video_frames(video) == 8
    assert "8 frames, hand found in 8" in capsys.readouterr().out


def test_ctrl_c_ends_the_stream_with_complete_files(tiny_bundle, png_folder, tmp_path):
    frames = list(PngFolderSource(str(png_folder)))

    def interrupted_after_three():
        yield from frames[:3]
        raise KeyboardInterrupt
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.avi"
    stats = track_stream(HandTracker(tiny_bundle.with_camera(SR305)), interrupted_after_three(), jsonl=str(jsonl),
                         video=str(video), progress=False)
    assert stats["interrupted"] and stats["frames"] == 3
    assert len(read_jsonl(jsonl)) == 3 and video_frames(video) == 3
    assert sorted(os.listdir(tmp_path)) == ["frames", "out.avi", "out.jsonl"]  # no temporary files left


def test_an_error_mid_stream_leaves_no_output(tiny_bundle, png_folder, tmp_path):
    frames = list(PngFolderSource(str(png_folder)))
    bad = DepthFrame(np.zeros((10, 10), np.float32), 0.0, 3, False, "bad")
    with pytest.raises(DataError, match="frame"):
        track_stream(HandTracker(tiny_bundle.with_camera(SR305)), frames[:3] + [bad], jsonl=str(tmp_path / "o.jsonl"),
                     progress=False)
    assert sorted(os.listdir(tmp_path)) == ["frames"]


@pytest.mark.slow
def test_cadstn_track_with_the_geometric_detector_or_a_missing_one(tiny_bundle, png_folder, tmp_path, capsys):
    jsonl = tmp_path / "geo.jsonl"
    assert main(["track", "--bundle", tiny_bundle.path, "--source", f"pngs:{png_folder}", "--jsonl", str(jsonl),
                 "--detector", "geometric"]) == 0
    assert len(read_jsonl(jsonl)) == 8 and all(line["found"] for line in read_jsonl(jsonl))
    capsys.readouterr()
    missing = tmp_path / "none.jsonl"
    assert main(["track", "--bundle", tiny_bundle.path, "--source", f"pngs:{png_folder}", "--jsonl", str(missing),
                 "--detector", str(tmp_path / "nothing.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadstn track: error: no hand detector at ") and err.count("\n") == 1
    assert not missing.exists()


@pytest.mark.parametrize("source, message", [
    ("pngs:/no/such/folder", "folder not found"),
    ("webcam", "source must be one of"),
    ("bag:/no/such/file.db3", "recording not found"),
    ("nyu:/no/such/root", "folder not found"),
])
def test_bad_sources_fail_in_one_line(tiny_bundle, tmp_path, capsys, source, message):
    out = tmp_path / "o.jsonl"
    assert main(["track", "--bundle", tiny_bundle.path, "--source", source, "--jsonl", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadstn track: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_png_folder_without_a_camera_or_with_non_depth_images(tmp_path, png_folder):
    import cv2
    os.remove(png_folder / CAMERA_FILE)
    with pytest.raises(ConfigError, match="camera is unknown.*--camera"):
        PngFolderSource(str(png_folder))
    assert PngFolderSource(str(png_folder), parse_camera("476.007,476.007,313.683,242.755,640,480,0.125")).camera == SR305
    gray = tmp_path / "gray"
    gray.mkdir()
    cv2.imwrite(str(gray / "x.png"), np.zeros((48, 64), np.uint8))
    with pytest.raises(DataError, match=r"x\.png.*not depth"):
        list(PngFolderSource(str(gray), Camera(50, 50, 32, 24, 64, 48)))
    with pytest.raises(DataError, match="camera is 32x24"):
        list(PngFolderSource(str(png_folder), Camera(30, 30, 16, 12, 32, 24)))
    with pytest.raises(ConfigError, match="fx,fy,cx,cy"):
        parse_camera("1,2,3")


def test_openni_without_a_device_says_what_is_missing():
    with pytest.raises(CadstnError, match="openni|OpenNI"):
        open_source("openni")


def test_nyu_split_as_a_source(synth_root):
    source = open_source(f"nyu:{synth_root}")
    frames = list(source)
    assert len(frames) == 40 and source.camera.width == 640  # the synthetic test split, NYU's camera
    assert frames[0].depth.shape == (480, 640)


# ----------------------------------------------------------------------------- RealSense recordings

def write_realsense_recording(path, depths, camera, scale_m):
    """A recording written by pyrealsense2 itself: a software device with one z16 depth stream, its
    depth_units option, and a recorder."""
    from keras_cadstn.tracking.sources import import_pyrealsense2
    rs = import_pyrealsense2()
    device = rs.software_device()
    sensor = device.add_sensor("Depth")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy = camera.width, camera.height, camera.cx, camera.cy
    intr.fx, intr.fy, intr.model, intr.coeffs = camera.fx, camera.fy, rs.distortion.none, [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.depth, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp = camera.width, camera.height, 30, 2
    stream.fmt, stream.intrinsics = rs.format.z16, intr
    profile = sensor.add_video_stream(stream)
    sensor.add_read_only_option(rs.option.depth_units, scale_m)
    recorder = rs.recorder(str(path), device)
    sensor.open(profile)
    sensor.start(lambda frame: None)
    for i, depth in enumerate(depths):
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(depth, np.uint16)
        frame.stride, frame.bpp = camera.width * 2, 2
        frame.timestamp, frame.frame_number = i * 1000.0 / 30, i + 1
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
    sensor.stop()
    sensor.close()
    del recorder


@pytest.fixture
def recording(tmp_path, png_folder):
    pytest.importorskip("libusb_package")  # the camera extra, part of the test extra
    depths = [f.depth.astype(np.uint16) for f in PngFolderSource(str(png_folder))]
    path = tmp_path / "hand.db3"
    write_realsense_recording(path, depths, SR305, 0.000125)
    return path, depths


@pytest.mark.slow
def test_realsense_recording_plays_back_every_frame_with_its_camera(recording):
    import time
    path, depths = recording
    with open_source(f"bag:{path}") as source:
        camera = source.camera
        frames = []
        time.sleep(0.5)  # a busy machine: the whole recording's length passes before the first read
        for frame in source:  # a reader slower than the recording's 30 fps still gets every frame
            frames.append(frame)
            time.sleep(0.1)
    assert (camera.width, camera.height) == (640, 480)
    np.testing.assert_allclose([camera.fx, camera.fy, camera.cx, camera.cy], [SR305.fx, SR305.fy, SR305.cx, SR305.cy],
                               rtol=1e-5)
    assert camera.depth_unit_mm == pytest.approx(0.125, rel=1e-5)
    assert len(frames) == len(depths)
    for frame, depth in zip(frames, depths):
        np.testing.assert_array_equal(frame.depth, depth)
    assert all(f.sensor_clock for f in frames)


@pytest.mark.slow
def test_cadstn_track_on_a_realsense_recording(tiny_bundle, recording, tmp_path, capsys):
    path, depths = recording
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    code = main(["track", "--bundle", tiny_bundle.path, "--source", f"bag:{path}", "--jsonl", str(jsonl),
                 "--video", str(video)])
    assert code == 0, capsys.readouterr().err
    lines = read_jsonl(jsonl)
    assert len(lines) == len(depths) and video_frames(video) == len(depths)
    expected = arrays_through_the_tracker(tiny_bundle.with_camera(SR305), [d.astype(np.float32) for d in depths])
    for line, result in zip(lines, expected):
        assert line["found"] == result.found
        np.testing.assert_allclose(line["joints_mm"], result.joints_mm, atol=0.01)
    assert [round(line["timestamp"] * 30) for line in lines] == list(range(len(depths)))


def test_frames_missing_from_a_recording_are_reported(caplog):
    """A recording whose frames 3 and 4 are damaged (the SDK skips them): the gap is warned about and
    counted, not passed over in silence."""
    import queue
    from types import SimpleNamespace

    from keras_cadstn.tracking.sources import RealSenseSource
    source = object.__new__(RealSenseSource)  # the reading loop alone, without a device or the SDK
    source.rs = SimpleNamespace(playback_status=SimpleNamespace(stopped="stopped"))
    source.playback = SimpleNamespace(current_status=lambda: "stopped")
    source.timeout_ms, source.missing, source.where = 1000, 0, "bag:hand.db3"
    source.frames = queue.Queue()
    for number in (1, 2, 2, 5, 6, 9):
        source.frames.put((np.zeros((2, 2), np.float32), float(number), number))
    assert [f.index for f in source] == [1, 2, 5, 6, 9]
    assert source.missing == 4
    assert [r.getMessage() for r in caplog.records] == ["bag:hand.db3: frames 3..4 missing (damaged or dropped)",
                                                        "bag:hand.db3: frames 7..8 missing (damaged or dropped)"]
