"""`cadstn track`'s outputs: checked before any work, in natural frame order, each line naming its
source frame, '-' for standard output, one-line refusals (issue 29's silently wrong cases)."""
import json
import os
import shutil

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
