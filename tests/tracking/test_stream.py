"""`cadstn track`'s outputs: checked before any work, in natural frame order, each line naming its
source frame, '-' for standard output, one-line refusals (issue 29's silently wrong cases)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np

import pytest
from conftest import REAL_FRAMES as REAL

from keras_cadstn.cli import main
from keras_cadstn.errors import ConfigError
from keras_cadstn.tracking.sources import CAMERA_FILE, PngFolderSource, natural_key, parse_camera
from keras_cadstn.tracking.stream import check_outputs

FIRST = sorted(p for p in os.listdir(REAL) if p.endswith(".png"))[0]


@pytest.fixture
def numbered_folder(tmp_path):
    """frame1.png .. frame12.png (one real frame each), whose plain sort order is 1, 10, 11, 12, 2, ..."""
    folder = tmp_path / "numbered"
    folder.mkdir()
    shutil.copy(os.path.join(REAL, CAMERA_FILE), folder / CAMERA_FILE)
    for k in range(1, 13):
        shutil.copy(os.path.join(REAL, FIRST), folder / f"frame{k}.png")
    return folder


def test_frames_come_in_natural_order(numbered_folder):
    assert sorted(["frame10", "frame2", "frame1"], key=natural_key) == ["frame1", "frame2", "frame10"]
    names = [f.name for f in PngFolderSource(str(numbered_folder))]
    assert names == [f"frame{k}.png" for k in range(1, 13)]


@pytest.mark.slow
def test_every_jsonl_line_names_its_frame_and_dash_is_standard_output(tiny_bundle, numbered_folder, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["track", "--bundle", tiny_bundle.path, "--source", f"pngs:{numbered_folder}", "--jsonl", "-",
                 "--frames", "12"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]  # standard output holds the joints alone
    assert [line["source"] for line in lines] == [f"frame{k}.png" for k in range(1, 13)]
    assert [line["frame"] for line in lines] == list(range(12))
    assert "12 frames" in err and not os.path.exists(tmp_path / "-")


@pytest.mark.parametrize("jsonl, video, message", [
    ("{dir}", None, "is a folder"),
    ("{dir}/no/such/folder/o.jsonl", None, "does not exist"),
    ("{dir}/o.mp4", "{dir}/o.mp4", "are the same file"),
    (None, "{dir}/o.gif", "must be .mp4 or .avi"),
    (None, "{dir}/o.png", "must be .mp4 or .avi"),
    (None, "-", "cannot go to standard output"),
])
def test_outputs_are_refused_before_any_work(tmp_path, capsys, jsonl, video, message):
    jsonl, video = (p.format(dir=tmp_path) if p else None for p in (jsonl, video))
    with pytest.raises(ConfigError, match=message):
        check_outputs(jsonl, video)
    argv = ["track", "--bundle", str(tmp_path / "no_bundle"), "--source", "pngs:/no/such/folder"]
    argv += (["--jsonl", jsonl] if jsonl else []) + (["--video", video] if video else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # the outputs are checked first: no bundle error


@pytest.mark.parametrize("text", ["588,587,320,240,inf,480", "588,587,320,240,640,nan", "588,587,320,240,640.7,480",
                                  "nan,587,320,240,640,480"])
def test_camera_strings_with_non_finite_or_fractional_values_are_refused(text):
    with pytest.raises(ConfigError, match="camera"):
        parse_camera(text)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_keep_both_outputs_complete_and_in_step(tiny_bundle, tmp_path, sig):
    """Stopped after its first line (as `docker stop` or `timeout` would): exit 0, the jsonl and the video
    hold the same frames, every line whole, no temporary file left."""
    folder = tmp_path / "many"
    folder.mkdir()
    shutil.copy(os.path.join(REAL, CAMERA_FILE), folder / CAMERA_FILE)
    for k in range(400):
        os.link(os.path.join(REAL, FIRST), folder / f"f{k}.png")
    jsonl, video = tmp_path / "j.jsonl", tmp_path / "v.avi"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "keras_cadstn.cli", "track", "--bundle", tiny_bundle.path,
                             "--source", f"pngs:{folder}", "--jsonl", str(jsonl), "--video", str(video)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".j.jsonl") and p.stat().st_size > 0
                                             for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-1500:]
    lines = [json.loads(line) for line in open(jsonl)]
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert 0 < len(lines) == frames < 400 and f"{len(lines)} frames (stopped by Ctrl-C or SIGTERM)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.jsonl", "many", "v.avi"]


def write_frame(path, kind: str, rng) -> None:
    """One file of a random folder: a real depth frame, or one of the ways a frame is not one."""
    if kind == "valid":
        shutil.copy(os.path.join(REAL, FIRST), path)
    elif kind == "truncated":
        data = open(os.path.join(REAL, FIRST), "rb").read()
        open(path, "wb").write(data[: int(rng.integers(20, len(data) // 2))])
    elif kind == "text":
        open(path, "w").write("not an image")
    elif kind == "colour":  # e.g. a frame of our own video saved as PNG
        cv2.imwrite(str(path), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    elif kind == "wrong_size":
        cv2.imwrite(str(path), np.full((240, 320), 500, np.uint16))


KINDS = ("valid", "truncated", "text", "colour", "wrong_size")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_folders_give_a_line_per_file_in_order_each_a_frame_or_a_refusal(tiny_bundle, tmp_path, seed,
                                                                                capsys, caplog):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(os.path.join(REAL, CAMERA_FILE), folder / CAMERA_FILE)
    numbers = sorted(rng.choice(1000, size=int(rng.integers(3, 9)), replace=False))
    kinds = {f"f{n}.png": str(rng.choice(KINDS, p=[0.5, 0.125, 0.125, 0.125, 0.125])) for n in numbers}
    for name, kind in kinds.items():
        write_frame(folder / name, kind, rng)
    out = tmp_path / "o.jsonl"
    code = main(["track", "--bundle", tiny_bundle.path, "--source", f"pngs:{folder}", "--jsonl", str(out)])
    err = capsys.readouterr().err
    if "valid" not in kinds.values():  # nothing to track: refused as a whole, nothing written
        assert code == 2 and err.count("\n") == 1 and "none of its" in err and not out.exists()
        return
    assert code == 0
    lines = [json.loads(line) for line in open(out)]
    assert [line["source"] for line in lines] == list(kinds) and [line["frame"] for line in lines] == list(range(len(kinds)))
    for line in lines:
        bad = kinds[line["source"]] != "valid"
        assert bool(line.get("error")) == bad and (not bad or (line["found"] is False and line["joints_mm"] is None))
        assert bad or len(line["joints_mm"] or [0] * 14) == 14
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped: ")]
    assert len(warned) == sum(k != "valid" for k in kinds.values())


@pytest.mark.parametrize("source, camera, message", [
    ("nyu:/no/root", "588,587,320,240,640,480", "--camera applies to pngs: folders only; nyu sources take"),
    ("bag:/no/file.bag", "588,587,320,240,640,480", "--camera applies to pngs: folders only; bag sources take"),
    ("realsense", "588,587,320,240,640,480", "--camera applies to pngs: folders only; realsense sources take"),
    (f"pngs:{REAL}", "", "camera must be finite numbers"),
])
def test_a_camera_that_would_be_ignored_is_refused(tiny_bundle, tmp_path, capsys, source, camera, message):
    out = tmp_path / "o.jsonl"
    assert main(["track", "--bundle", tiny_bundle.path, "--source", source, "--camera", camera,
                 "--jsonl", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()
