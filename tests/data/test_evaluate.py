import numpy as np
import pytest

from keras_cadstn.camera import ICVL_CAMERA, NYU_CAMERA
from keras_cadstn.data.metrics import error_parts, mean_error, per_frame_error, per_joint_error, plot_comparison, success_rate
from keras_cadstn.data.results import load_results, save_results
from keras_cadstn.errors import DataError


def test_metrics_hand_computed():
    gt = np.zeros((4, 2, 3))
    pred = np.zeros((4, 2, 3))
    pred[:, 0] = [3.0, 4.0, 0.0]  # joint 0: 5 mm in every frame
    pred[0, 1] = [0.0, 0.0, 12.0]  # joint 1: 12 mm in frame 0, 0 elsewhere
    pred[3, 1] = [0.0, 30.0, 40.0]  # and 50 mm in frame 3
    np.testing.assert_allclose(per_joint_error(gt, pred), [5.0, (12 + 50) / 4])
    np.testing.assert_allclose(per_frame_error(gt, pred), [(5 + 12) / 2, 2.5, 2.5, (5 + 50) / 2])
    assert mean_error(gt, pred) == pytest.approx((5.0 + 15.5) / 2)
    # worst joint per frame: 12, 5, 5, 50
    np.testing.assert_allclose(success_rate(gt, pred, [0, 4.9, 5, 12, 49, 50, 80]), [0, 0, 0.5, 0.75, 0.75, 1, 1])
    with pytest.raises(ValueError, match="must both be"):
        mean_error(gt, pred[:, :1])


def test_error_parts_hand_computed():
    gt = np.zeros((2, 2, 3))
    pred = np.zeros((2, 2, 3))
    pred[0] = [[10.0, 0.0, 0.0], [10.0, 0.0, 0.0]]  # frame 0: the whole hand 10 mm off, pose exact
    pred[1] = [[0.0, 3.0, 0.0], [0.0, -3.0, 0.0]]  # frame 1: in place, each joint 3 mm off
    parts = error_parts(gt, pred)
    np.testing.assert_allclose(parts["offset"], [10.0, 0.0])
    np.testing.assert_allclose(parts["articulation"], [0.0, 3.0])
    with pytest.raises(ValueError, match="must both be"):
        error_parts(gt, pred[:1])


def test_load_results_formats(tmp_path):
    rng = np.random.default_rng(0)
    uvd = np.stack([rng.uniform(100, 500, (3, 14)), rng.uniform(100, 400, (3, 14)), rng.uniform(400, 900, (3, 14))], -1)
    full = np.zeros((3, 36, 3))
    full[:, [0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32]] = uvd
    full[:, [1, 2, 4]] = 777.0  # non-evaluated joints: dropped
    lines = [f"depth_1_{i + 1:07d}.png " + " ".join(f"{v:.6f}" for v in full[i].ravel()) + "  \r\n" for i in range(3)]
    p = tmp_path / "pred.txt"
    p.write_bytes("".join(lines).encode())
    got = load_results(str(p), "nyu", "uvd")
    np.testing.assert_allclose(got, NYU_CAMERA.uvd_to_xyz(uvd), atol=1e-5)
    save_results(str(tmp_path / "out.txt"), got, "nyu")
    np.testing.assert_allclose(load_results(str(tmp_path / "out.txt"), "nyu"), got, atol=1e-3)
    icvl = np.stack([rng.uniform(50, 250, (2, 16)), rng.uniform(50, 200, (2, 16)), rng.uniform(200, 500, (2, 16))], -1)
    (tmp_path / "icvl.txt").write_text("\n".join(" ".join(map(str, f.ravel())) for f in icvl) + "\n\n")
    np.testing.assert_allclose(load_results(str(tmp_path / "icvl.txt"), "icvl"), ICVL_CAMERA.uvd_to_xyz(icvl))
    np.testing.assert_allclose(load_results(str(tmp_path / "icvl.txt"), "icvl", "xyz"), icvl)


def test_load_results_errors(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(DataError, match=r"bad.txt:1: 3 numbers, expected 42"):
        load_results(str(p), "nyu")
    p.write_text("")
    with pytest.raises(DataError, match="no frames"):
        load_results(str(p), "icvl")


def test_plots_are_written(tmp_path):
    gt = np.zeros((5, 14, 3))
    paths = plot_comparison(gt, {"a": gt + 1, "b": gt + 10}, str(tmp_path))
    import matplotlib.image as mpimg
    for path in paths:
        img = mpimg.imread(path)
        assert img.shape[0] > 200 and img.shape[1] > 200


@pytest.mark.parametrize("fmt", ["uvd", "xyz"])
def test_results_with_a_joint_at_or_behind_the_camera_are_refused(tmp_path, fmt):
    from keras_cadstn.cli import main
    rows = np.tile([[320.0, 240.0, 600.0]], (14, 1))
    path = tmp_path / "gt.txt"
    good = " ".join(f"{v:.1f}" for v in rows.ravel())
    rows[5, 2] = 0.0
    path.write_text(good + "\n" + " ".join(f"{v:.1f}" for v in rows.ravel()) + "\n")
    with pytest.raises(DataError, match=r"gt.txt: frame 2 \(of 1 such\) has a joint with depth <= 0"):
        load_results(str(path), "nyu", fmt)
    assert main(["eval", "--gt", str(path), "--pred", str(path), "--fmt", fmt, "--out", str(tmp_path / "p")]) == 2
