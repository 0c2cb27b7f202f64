import dataclasses
import os

import numpy as np
import pytest
from conftest import REAL_FRAMES as REAL
from conftest import real_frames_camera

from keras_cadstn.camera import NYU_CAMERA, Camera
from keras_cadstn.config import SynthConfig
from keras_cadstn.data.frames import ICVL, NYU_EVAL_JOINTS
from keras_cadstn.data.preprocessing import (centre_motion, hand_center, joints_to_mm, preprocess_frame, turn_crop,
                                             turn_joints_back, turn_matrix, upright_turn)
from keras_cadstn.data.synthetic import SequenceRenderer
from keras_cadstn.errors import DataError
from keras_cadstn.export.tracker import export_for_tracker
from keras_cadstn.tracking.localiser import HandLocaliser
from keras_cadstn.tracking.tracker import HandTracker

PALM = NYU_EVAL_JOINTS[13]  # the reference joint (palm centre) in the renderer's 36-joint layout
# half the resolution, other intrinsics, depth stored in metres (a field of view like the Kinect's, so
# the same part of the forearm is in view)
OTHER_CAMERA = Camera(fx=300.0, fy=296.0, cx=165.0, cy=118.0, width=320, height=240, depth_unit_mm=1000.0)


def render(n, camera=NYU_CAMERA, seed=11):
    r = SequenceRenderer(seed, SynthConfig(camera=camera))
    return [r.render(t) for t in range(n)]


@pytest.fixture(scope="module")
def frames():
    return render(6)


def test_tracker_centres_the_crop_as_the_bundles_records_were(tiny_bundle, frames):
    """A bundle trained on records with ``centre_scale`` 0.5 is tracked with the centre of mass in the
    half cube, as ``preprocess_frame`` made its training crops; the crop keeps the whole cube."""
    half = dataclasses.replace(tiny_bundle, spec=dataclasses.replace(tiny_bundle.spec, centre_scale=0.5))
    depth, joints = frames[0]
    ref = NYU_CAMERA.xyz_to_uvd(joints[PALM])
    crop, info = preprocess_frame(depth, ref, half.spec.cube, NYU_CAMERA, 32, centre_scale=0.5)
    result = HandTracker(half, upright=False).update(depth, center_uvd=ref)  # the crop as it is cut, not turned
    np.testing.assert_allclose(result.center_uvd, info.center_uvd)
    np.testing.assert_array_equal(result.crop, crop)
    whole = HandTracker(tiny_bundle, upright=False).update(depth, center_uvd=ref)
    assert np.linalg.norm(whole.center_uvd[:2] - result.center_uvd[:2]) > 1.0  # the setting is used


@pytest.mark.slow
@pytest.mark.parametrize("options", ["paper", "ours"])
def test_tracker_equals_the_clip_model_given_the_labelled_centre(tiny_bundles, frames, options):
    """Tracker (streaming step, LSTM state carried) == the windowed CADSTN on the training crops
    (and, for a temporal network that reads it, the centres' motion)."""
    tiny_bundle = tiny_bundles[options]
    centre_motion = tiny_bundle.config.centre_motion
    tracker = HandTracker(tiny_bundle, upright=False)  # the training crops as cut (the turn: its own test)
    cam, cube = NYU_CAMERA, tiny_bundle.spec.cube
    crops, centres, outs = [], [], []
    for depth, joints in frames[:4]:
        ref = cam.xyz_to_uvd(joints[PALM])
        crop, info = preprocess_frame(depth, ref, cube, cam, 32)
        crops.append(crop)
        centres.append(info.center_xyz)
        result = tracker.update(depth, center_uvd=ref)
        assert result.found and result.mode == "given"
        np.testing.assert_array_equal(result.crop, crop)
        outs.append(result.joints_mm)
    clip = np.asarray(crops, np.float32)[None, ..., None]
    if centre_motion:  # the move of the centre between frames, in the joints' units, zero at the start
        moves = np.diff(np.asarray(centres), axis=0, prepend=np.asarray(centres)[:1]) / 150.0
        clip = [clip, moves[None].astype(np.float32)]
        assert np.abs(moves[1:]).max() > 0.005  # the hand moves: the motion input is exercised
    ref = tiny_bundle.model.predict_on_batch(clip)[0].reshape(4, 14, 3) * 150.0 + np.asarray(centres)[:, None]
    np.testing.assert_allclose(np.asarray(outs), ref, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("options", ["paper", "ours"])
def test_backends_agree(tiny_bundles, frames, tmp_path, options):
    """Step and centre refiner on each backend: the same joints from the localiser's centres."""
    tiny_bundle = tiny_bundles[options]
    results = {}
    for backend in ("keras", "tflite", "onnx"):
        paths = export_for_tracker(tiny_bundle, backend, directory=str(tmp_path))  # exported and verified
        assert all(p is None for p in paths.values()) if backend == "keras" else \
            all(os.path.isfile(p) for p in paths.values())
        tracker = HandTracker(tiny_bundle, backend=backend, refine=True, **paths)
        assert tracker.refiner is not None  # the bundle has one, asked for
        results[backend] = np.asarray([tracker.update(d).joints_mm for d, _ in frames])
    np.testing.assert_allclose(results["tflite"], results["keras"], atol=0.01)
    np.testing.assert_allclose(results["onnx"], results["keras"], atol=0.01)


@pytest.mark.parametrize("detector_path", [None, HandLocaliser.detector_path], ids=["geometric", "learned"])
def test_localiser_finds_the_hand_without_labels(frames, detector_path):
    loc = HandLocaliser(detector_path=detector_path)
    cube = np.array([300.0, 300.0, 300.0])
    previous = None
    for depth, joints in frames:
        labelled = hand_center(depth, NYU_CAMERA.xyz_to_uvd(joints[PALM]), cube, NYU_CAMERA)
        found, mode = loc.track(depth, previous, cube, NYU_CAMERA)
        assert mode == ("detected" if previous is None else "tracked")
        err = np.linalg.norm(NYU_CAMERA.uvd_to_xyz(found) - NYU_CAMERA.uvd_to_xyz(labelled))
        assert err < 40.0, f"localised centre {err:.1f} mm from the labelled one"
        previous = found
    wall_only = np.full((480, 640), 1800.0, np.float32)  # beyond the band: nothing near the camera
    assert loc.detect(wall_only, cube, NYU_CAMERA) is None
    assert loc.detect(np.zeros((480, 640), np.float32), cube, NYU_CAMERA) is None


@pytest.mark.parametrize("detector_path", [None, HandLocaliser.detector_path], ids=["geometric", "learned"])
def test_localiser_skips_what_is_not_palm_sized_and_falls_back_on_the_previous_centre(detector_path):
    from keras_cadstn.config import SynthConfig
    loc, cube = HandLocaliser(detector_path=detector_path), np.array([300.0, 300.0, 300.0])
    board = np.full((480, 640), 1800.0, np.float32)
    board[100:400, 150:500] = 700.0  # 300 x 350 px at 700 mm: an inscribed circle of 178 mm
    assert loc.find_palm(board, NYU_CAMERA) is None and loc.detect(board, cube, NYU_CAMERA) is None
    centre, mode = loc.track(board, np.array([320.0, 240.0, 700.0]), cube, NYU_CAMERA)
    assert mode == "tracked" and abs(centre[2] - 700.0) < 1.0  # from the previous frame's centre
    assert loc.track(board, None, cube, NYU_CAMERA) == (None, "detected")
    # a person behind the hand: the palm is found; the same scene without the hand has none
    scene = SequenceRenderer(1000, SynthConfig(person=True))
    depth, joints = scene.render(0)
    palm, _ = loc.find_palm(depth, NYU_CAMERA)
    assert np.linalg.norm(NYU_CAMERA.uvd_to_xyz(palm) - joints[32]) < 50.0
    assert loc.find_palm(scene.render(0, hand=False)[0], NYU_CAMERA) is None
    # a tracked point that slid onto the body behind the hand: kept unless verified
    small = cube / 2
    vs, us = np.nonzero((depth > joints[32, 2] + 150.0) & (depth < 1500.0))
    body = np.array([us[len(us) // 2], vs[len(vs) // 2], depth[vs[len(vs) // 2], us[len(us) // 2]]], np.float64)
    tracked, mode = loc.track(depth, body, small, NYU_CAMERA)
    assert mode == "tracked" and np.linalg.norm(NYU_CAMERA.uvd_to_xyz(tracked) - joints[32]) > 100.0
    checked, mode = loc.track(depth, body, small, NYU_CAMERA, verify=True)
    if detector_path is None:  # nothing to verify with: the same point
        assert mode == "tracked" and np.allclose(checked, tracked)
    else:
        assert mode == "detected" and np.linalg.norm(NYU_CAMERA.uvd_to_xyz(checked) - joints[32]) < 50.0
        assert loc.is_hand(depth, palm, NYU_CAMERA) and not loc.is_hand(depth, body, NYU_CAMERA)
    # verified where no hand is found anywhere (the board): the tracked point is kept
    centre, mode = loc.track(board, np.array([320.0, 240.0, 700.0]), cube, NYU_CAMERA, verify=True)
    assert mode == "tracked" and abs(centre[2] - 700.0) < 1.0


def test_tracker_follows_the_reference_joint_it_predicted(tiny_bundle, frames):
    """Without a refiner, each frame's centre of mass starts from the reference joint the networks
    predicted in the previous frame; the detector checks the point every VERIFY_EVERY frames."""
    tracker = HandTracker(tiny_bundle)
    cam, ref = NYU_CAMERA, tiny_bundle.spec.reference_joint
    first = tracker.update(frames[0][0])
    assert first.mode == "detected"
    seed = cam.xyz_to_uvd(first.joints_mm[ref])
    np.testing.assert_allclose(tracker.previous_reference, seed)
    second = tracker.update(frames[1][0])
    expected = hand_center(frames[1][0].astype(np.float64), seed, tiny_bundle.spec.centre_cube(), cam,
                           coarse_step=tracker.localiser.step, far_limit=seed[2] + tracker.localiser.near_band_mm)
    assert second.mode == "tracked"
    np.testing.assert_allclose(second.center_uvd, expected)
    assert tracker.tracked == 1


def test_upright_turns_the_crop_the_motion_and_the_joints_back(tiny_bundles, frames):
    """``upright``: the networks see the crop turned by ``upright_turn`` and the centre's motion
    turned with it; the joints they predict are turned back into the frame. Checked against the
    step model run by hand on those inputs, over two frames (the state carried)."""
    tiny_bundle = tiny_bundles["ours"]  # a temporal network that reads the centre's motion
    assert "centre_motion" in [t.name for t in tiny_bundle.step_model().inputs]
    cam, cube, size = NYU_CAMERA, tiny_bundle.spec.cube, tiny_bundle.image_size
    pair = (frames[0], frames[5])  # five frames apart: the centre moves enough for the motion input to matter
    centres = [cam.xyz_to_uvd(joints[PALM]) for _, joints in pair]
    plain, up = HandTracker(tiny_bundle, upright=False), HandTracker(tiny_bundle, upright=True)
    h = c = np.zeros((1, tiny_bundle.config.lstm_units), np.float32)
    motion, seen_before = np.zeros((1, 3), np.float32), None
    for i, centre in enumerate(centres):
        seen, got = plain.update(pair[i][0], center_uvd=centre), up.update(pair[i][0], center_uvd=centre)
        turn = upright_turn(seen.crop)
        assert abs(turn) > 1.0  # the synthetic hand is not on a crop axis: the turn is used
        np.testing.assert_array_equal(got.crop, turn_crop(seen.crop, turn))
        if seen_before is not None:
            moved = centre_motion([cam.uvd_to_xyz(c) for c in (seen_before.center_uvd, seen.center_uvd)], cube)[1:]
            assert np.abs(moved).max() > 0.01
            motion = np.concatenate([moved[:, :2] @ turn_matrix(turn).T, moved[:, 2:]], 1).astype(np.float32)
        joints, h, c = up.step(got.crop[None, :, :, None], h, c, motion)
        expected = turn_joints_back(joints_to_mm(np.asarray(joints)[0], cam.uvd_to_xyz(seen.center_uvd), cube), turn,
                                    seen.center_uvd, cube, cam, size)
        np.testing.assert_allclose(got.joints_mm, expected, atol=1e-4)
        assert np.abs(got.joints_mm - seen.joints_mm).max() > 0.1  # and it changes the prediction
        seen_before = seen
    # on by default for NYU-layout bundles (trained with the paper's turned copies), off for ICVL's
    icvl = dataclasses.replace(tiny_bundle, spec=ICVL)
    assert HandTracker(tiny_bundle).upright and not HandTracker(icvl).upright and HandTracker(icvl, upright=True).upright


def test_no_hand_resets_the_state_then_recovers(tiny_bundle, frames):
    tracker = HandTracker(tiny_bundle)
    first = tracker.update(frames[0][0])
    tracker.update(frames[1][0])
    assert np.abs(tracker.h).sum() > 0
    lost = tracker.update(np.zeros((480, 640), np.uint16))
    assert not lost.found and lost.joints_mm is None and lost.mode == "no hand"
    assert np.abs(tracker.h).sum() == 0 and tracker.previous_uvd is None
    again = tracker.update(frames[0][0])
    assert again.mode == "detected"
    np.testing.assert_allclose(again.joints_mm, first.joints_mm, atol=1e-4)  # same as from a fresh start


@pytest.mark.slow
def test_reset_every_restarts_the_lstm_state_as_clips_would(tiny_bundle, frames):
    centres = [NYU_CAMERA.xyz_to_uvd(joints[PALM]) for _, joints in frames[:4]]
    every_two = HandTracker(tiny_bundle, reset_every=2)
    got = [every_two.update(depth, center_uvd=c).joints_mm for (depth, _), c in zip(frames[:4], centres)]
    for start in (0, 2):  # a fresh state at frame 0 and again at frame 2
        fresh = HandTracker(tiny_bundle)
        for i in (start, start + 1):
            np.testing.assert_allclose(got[i], fresh.update(frames[i][0], center_uvd=centres[i]).joints_mm, atol=1e-4)
    # without the restart frame 2 differs (the state carried from frames 0-1 matters)
    carried = HandTracker(tiny_bundle)
    carried_out = [carried.update(depth, center_uvd=c).joints_mm for (depth, _), c in zip(frames[:4], centres)]
    assert np.abs(carried_out[2] - got[2]).max() > 1e-3


def test_bad_frames_raise_clear_errors(tiny_bundle):
    tracker = HandTracker(tiny_bundle)
    with pytest.raises(DataError, match=r"frame 0: depth image has shape \(240, 320\), expected \(480, 640\)"):
        tracker.update(np.zeros((240, 320), np.uint16))
    with pytest.raises(DataError, match="dtype bool cannot hold depth"):
        tracker.update(np.zeros((480, 640), bool))
    with pytest.raises(DataError, match="dtype uint8 cannot hold depth.*8-bit images are visualisations"):
        tracker.update(np.full((480, 640), 200, np.uint8))
    with pytest.raises(DataError, match=r"frame \d+: center_uvd must be 3 finite numbers"):
        tracker.update(np.zeros((480, 640), np.uint16), center_uvd=[320.0, 240.0])
    nan = np.full((480, 640), 700.0, np.float32)
    nan[10, 10] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tracker.update(nan)
    with pytest.raises(DataError, match="numpy depth image"):
        tracker.update([[0]])
    with pytest.raises(ValueError, match="backend must be one of"):
        HandTracker(tiny_bundle, backend="tensorrt")


@pytest.mark.slow
def test_another_camera_in_metres_is_a_setting_not_a_code_change(tiny_bundle):
    """The same hand motion seen by the NYU Kinect (mm) and by a 320x240 sensor with other intrinsics
    that stores metres: with the bundle's camera replaced, the tracker crops the same hand."""
    seq_mm = render(4, NYU_CAMERA, seed=5)
    seq_m = render(4, OTHER_CAMERA, seed=5)  # renderer output is mm; the sensor stores metres
    a = HandTracker(tiny_bundle)
    b = HandTracker(tiny_bundle.with_camera(OTHER_CAMERA))
    for (depth_a, joints_a), (depth_b, joints_b) in zip(seq_mm, seq_m):
        np.testing.assert_allclose(joints_a, joints_b, atol=1e-6)  # same motion
        ra = a.update(depth_a.astype(np.uint16))
        rb = b.update((depth_b / 1000.0).astype(np.float32))
        assert ra.found and rb.found
        centre_a, centre_b = NYU_CAMERA.uvd_to_xyz(ra.center_uvd), OTHER_CAMERA.uvd_to_xyz(rb.center_uvd)
        assert np.linalg.norm(centre_a - centre_b) < 10.0
        hand_a, hand_b = ra.crop < 1.0, rb.crop < 1.0
        assert (hand_a & hand_b).sum() / (hand_a | hand_b).sum() > 0.8  # same hand silhouette
        assert np.abs(ra.crop[hand_a & hand_b] - rb.crop[hand_a & hand_b]).mean() < 0.05  # same depths (7.5 mm)
        assert np.abs(ra.joints_mm - rb.joints_mm).mean() < 10.0
    # the same metres read as if they were mm (the unit setting forgotten): no hand near the camera
    import dataclasses
    forgot_unit = HandTracker(tiny_bundle.with_camera(dataclasses.replace(OTHER_CAMERA, depth_unit_mm=1.0)))
    assert not forgot_unit.update((seq_m[0][0] / 1000.0).astype(np.float32)).found
    with pytest.raises(DataError, match=r"expected \(480, 640\)"):  # and the NYU setting rejects the size
        HandTracker(tiny_bundle).update((seq_m[0][0] / 1000.0).astype(np.float32))


@pytest.mark.slow
def test_track_sequence_example_writes_a_strip_and_a_video(tiny_bundle, tmp_path, capsys, monkeypatch):
    import importlib.util
    import os
    import shutil

    import cv2
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "track_sequence.py")
    spec = importlib.util.spec_from_file_location("track_sequence", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bundle = shutil.copytree(tiny_bundle.path, tmp_path / "bundle")
    before = sorted(os.listdir(bundle))
    monkeypatch.setenv("KERAS_CADSTN_CACHE", str(tmp_path / "cache"))

    strip = tmp_path / "strip.png"
    assert module.main(["--bundle", str(bundle), "--frames", "6", "--every", "2", "--backend", "tflite",
                        "--precision", "dynamic_int8", "--out", str(strip)]) == 0
    assert "6 frames, hand found in 6; centre: localiser; backend tflite dynamic_int8" in capsys.readouterr().out
    image = cv2.imread(str(strip))
    assert image.shape[1] == 3 * image.shape[0]  # frames 0, 2, 4 side by side, square panels
    assert sorted(os.listdir(bundle)) == before  # the bundle may be read-only: exports go to the cache
    cached = list((tmp_path / "cache" / "exports").glob("*/step_dynamic_int8.tflite"))
    assert len(cached) == 1
    # keyed by the Keras file and by the exporter's format: an older exporter's artifact is not reused
    from keras_cadstn.fileio import file_sha256
    from keras_cadstn.models.bundle import MODEL_FILE
    from keras_cadstn.tracking.runtime import EXPORT_FORMAT
    assert cached[0].parent.name == f"{file_sha256(str(bundle / MODEL_FILE))[:20]}_format{EXPORT_FORMAT}"

    video = tmp_path / "track.avi"
    assert module.main(["--bundle", str(bundle), "--frames", "4", "--centre", "labelled", "--out", str(video)]) == 0
    capture = cv2.VideoCapture(str(video))
    shapes = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        shapes.append(frame.shape)
    assert shapes == [(480, 640, 3)] * 4


SR305 = real_frames_camera()


@pytest.mark.parametrize("detector_path, palm_bound", [(None, 45.0), (HandLocaliser.detector_path, 55.0)],
                         ids=["geometric", "learned"])
def test_localiser_finds_the_hand_in_front_of_a_person_on_real_frames(detector_path, palm_bound):
    """Real RealSense frames with the torso and head behind the hand: the detected centre lies
    within 60 mm of the annotated palm in all but at most one frame (measured: geometric all within
    58 mm, learned 7 within 48 mm and one at 60 mm); the palm found before the crop is centred:
    geometric all within 40 mm, learned within 52 mm (the palms are annotated by eye)."""
    import cv2
    rows = [line.split() for line in open(os.path.join(REAL, "palms.tsv")).read().splitlines()[1:]]
    assert len(rows) == 8
    cube = np.array([300.0, 300.0, 300.0])
    misses, palm_errors = [], []
    for name, u, v in rows:
        depth = SR305.to_mm(cv2.imread(os.path.join(REAL, name), cv2.IMREAD_UNCHANGED))
        u, v = float(u), float(v)
        window = depth[int(v) - 5:int(v) + 6, int(u) - 5:int(u) + 6]
        palm = SR305.uvd_to_xyz([u, v, np.median(window[window > 0])])
        found = HandLocaliser(detector_path=detector_path).detect(depth, cube, SR305)
        err = np.inf if found is None else np.linalg.norm(SR305.uvd_to_xyz(found) - palm)
        if err > 60.0:
            misses.append((name, err))
        palm_found, _ = HandLocaliser(detector_path=detector_path).find_palm(depth, SR305)
        palm_errors.append(np.linalg.norm(SR305.uvd_to_xyz(palm_found) - palm))
    assert len(misses) <= 1, misses
    assert max(palm_errors) < palm_bound, palm_errors
