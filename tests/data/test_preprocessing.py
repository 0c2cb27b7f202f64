import numpy as np
import pytest

from keras_cadstn.camera import ICVL_CAMERA, NYU_CAMERA, Camera
from keras_cadstn.data.preprocessing import (
    BACKGROUND,
    HAND_LIMIT,
    VOLUME_THRESHOLD,
    crop_and_normalize,
    denormalize_joints,
    hand_center,
    normalize_joints,
    crop_transform,
    preprocess_frame,
    principal_angle,
    slice_volume,
    turn_crop,
    turn_joints_back,
    turn_matrix,
    upright_turn,
)
from keras_cadstn.errors import ConfigError, DataError, NoHandError


def test_uvd_to_xyz_hand_computed():
    # u = cx + 58.803 px at 500 mm: x = 58.803 * 500 / 588.03 = 50 mm; v = cy - 117.414: y = -100 mm
    xyz = NYU_CAMERA.uvd_to_xyz([320 + 58.803, 240 - 117.414, 500])
    np.testing.assert_allclose(xyz, [50.0, -100.0, 500.0], atol=1e-9)
    # ICVL: u = 160 + 241.42 at 1000 mm -> x = 1000 mm
    np.testing.assert_allclose(ICVL_CAMERA.uvd_to_xyz([401.42, 120, 1000]), [1000, 0, 1000], atol=1e-9)


def test_uvd_xyz_round_trip_vectorised(rng):
    uvd = np.stack([rng.uniform(0, 640, (7, 14)), rng.uniform(0, 480, (7, 14)), rng.uniform(300, 900, (7, 14))], -1)
    np.testing.assert_allclose(NYU_CAMERA.xyz_to_uvd(NYU_CAMERA.uvd_to_xyz(uvd)), uvd, atol=1e-9)
    # one point at a time (the tracker's case, computed apart): the very same numbers
    xyz = NYU_CAMERA.uvd_to_xyz(uvd).reshape(-1, 3)
    back = NYU_CAMERA.xyz_to_uvd(xyz)
    for point, expected, expected_back in zip(uvd.reshape(-1, 3), xyz, back):
        np.testing.assert_array_equal(NYU_CAMERA.uvd_to_xyz(point), expected)
        np.testing.assert_array_equal(NYU_CAMERA.xyz_to_uvd(expected), expected_back)
    with pytest.raises(ValueError, match="z > 0"):
        NYU_CAMERA.xyz_to_uvd([10.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="z > 0"):
        NYU_CAMERA.xyz_to_uvd([[0, 0, 0]])


def test_joint_normalisation_round_trip_1e4_mm(rng):
    xyz = rng.uniform(-200, 800, (5, 14, 3))
    center, cube = np.array([10.0, -20.0, 550.0]), np.array([300.0, 300.0, 300.0])
    norm = normalize_joints(xyz, center, cube)
    np.testing.assert_allclose(norm[0, 0], (xyz[0, 0] - center) / 150.0)
    assert np.abs(denormalize_joints(norm, center, cube) - xyz).max() < 1e-4
    # the float32 a model sees still goes back within 1e-4 mm for joints inside the cube
    inside = center + rng.uniform(-150, 150, (100, 3))
    back = denormalize_joints(normalize_joints(inside, center, cube).astype(np.float32), center, cube)
    assert np.abs(back - inside).max() < 1e-4


def _block_image(depth=500.0, u=(300, 340), v=(220, 260)):
    img = np.zeros((480, 640), np.float32)
    img[v[0]:v[1], u[0]:u[1]] = depth
    img[0:50, 0:50] = 2000.0  # far clutter, outside every cube
    return img


def test_hand_center_is_centre_of_mass_of_pixels_in_cube():
    img = _block_image()
    c = hand_center(img, [325, 245, 520], (300, 300, 300), NYU_CAMERA)
    np.testing.assert_allclose(c, [319.5, 239.5, 500.0])  # mean of 300..339 and 220..259


def test_centre_scale_keeps_the_forearm_out_of_the_centre_of_mass():
    """A 20x20 px palm at 500 mm centred on (319.5, 239.5) and a forearm 100-160 px below it (85-136 mm
    at 500 mm): the whole 300 mm cube's centre of mass is dragged down the arm, the half cube's
    (150 mm: 88 px each side) sees the palm alone, whose centre is exact."""
    img = np.zeros((480, 640), np.float32)
    img[230:250, 310:330] = 500.0
    img[340:400, 314:326] = 520.0
    start = [322.0, 236.0, 505.0]
    whole = hand_center(img, start, (300, 300, 300), NYU_CAMERA)
    assert whole[1] > 270.0  # arm pixels outnumber the palm's
    np.testing.assert_allclose(hand_center(img, start, (150, 150, 150), NYU_CAMERA), [319.5, 239.5, 500.0])
    _, info = preprocess_frame(img, start, (300, 300, 300), NYU_CAMERA, 32, centre_scale=0.5)
    np.testing.assert_allclose(info.center_uvd, [319.5, 239.5, 500.0])
    np.testing.assert_allclose(info.cube, [300, 300, 300])  # the crop keeps the whole cube
    _, paper = preprocess_frame(img, start, (300, 300, 300), NYU_CAMERA, 32)
    np.testing.assert_allclose(paper.center_uvd, whole)


def test_hand_center_coarse_first_pass_ends_at_full_resolution():
    img = _block_image()
    cube = (300, 300, 300)
    full = hand_center(img, [325, 245, 520], cube, NYU_CAMERA)
    # the tracker's variant: the first pass on every 2nd pixel, the last on all (a coarse last
    # pass would give 319 or 320, not 319.5)
    np.testing.assert_allclose(hand_center(img, [325, 245, 520], cube, NYU_CAMERA, coarse_step=2), full)
    np.testing.assert_allclose(hand_center(img.astype(np.uint16), [325, 245, 520], cube, NYU_CAMERA), full)
    # ``final_step``: the last pass coarse too (the tracker's centre around a refined joint). Both
    # passes' boxes start at an odd pixel (u0 = floor(325 - 169.6) = 155, v0 = 75, then 143 and 63),
    # so they see the odd columns 301..339 and rows 221..259 of the block: means 320 and 240
    np.testing.assert_allclose(hand_center(img, [325, 245, 520], cube, NYU_CAMERA, coarse_step=2, final_step=2),
                               [320.0, 240.0, 500.0])
    for bad in ({"coarse_step": 0}, {"final_step": 0}, {"final_step": 2.0}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be an integer >= 1"):
            hand_center(img, [325, 245, 520], cube, NYU_CAMERA, **bad)
    # a near hand: the cube's depth band reaches below 0, and "no reading" (0) still does not count
    near = _block_image(depth=100.0)
    for depth in (near, near.astype(np.uint16)):
        np.testing.assert_allclose(hand_center(depth, [320, 240, 100], cube, NYU_CAMERA), [319.5, 239.5, 100.0])


def test_float32_depth_gives_the_float64_centre_and_crop(rng):
    # the tracker's float32 frames are compared and summed in float32: a whole frame of fractional
    # depths in the cube (307200 pixels, the most a cube can hold) gives the float64 result
    img = rng.uniform(400.0, 600.0, (480, 640)).astype(np.float32)
    img[rng.random(img.shape) < 0.2] = 0.0  # no reading
    cube, start = np.array([2000.0, 2000.0, 300.0]), [320, 240, 500]
    for step in (1, 2):
        c32 = hand_center(img, start, cube, NYU_CAMERA, coarse_step=step)
        c64 = hand_center(img.astype(np.float64), start, cube, NYU_CAMERA, coarse_step=step)
        np.testing.assert_allclose(c32, c64, rtol=0, atol=1e-4)
    crop32, _ = crop_and_normalize(img, c64, cube, NYU_CAMERA, 64)
    crop64, _ = crop_and_normalize(img.astype(np.float64), c64, cube, NYU_CAMERA, 64)
    np.testing.assert_allclose(crop32, crop64, rtol=0, atol=1e-6)


def test_hand_center_no_hand_raises_naming_the_frame():
    with pytest.raises(NoHandError, match="frame 7"):
        hand_center(np.zeros((480, 640)), [320, 240, 500], (300, 300, 300), NYU_CAMERA, where="frame 7")


def test_crop_normalises_depth_and_background():
    img = _block_image(depth=530.0)
    img[234:246, 314:326] = 0.0  # a hole in the hand (12 px, > 5.5 px per crop pixel): no reading
    crop, t = crop_and_normalize(img, np.array([320.0, 240.0, 500.0]), np.array([300.0] * 3), NYU_CAMERA, 64)
    assert crop.shape == (64, 64) and crop.dtype == np.float32
    # the cube is 588.03 * 300 / 500 = 352.8 px wide: 64 / 352.8 crop px per image px
    np.testing.assert_allclose(t[0, 0], 64 / (588.03 * 300 / 500))
    np.testing.assert_allclose(t @ [320, 240, 1], [31.5, 31.5, 1])  # centre -> middle of the crop
    hand = crop < BACKGROUND
    np.testing.assert_allclose(crop[hand], (530 - 500) / 150.0, rtol=1e-6)
    assert crop[0, 0] == BACKGROUND and hand.sum() > 0
    col, row = np.rint(t @ [320, 240, 1])[:2].astype(int)
    assert crop[row, col] == BACKGROUND
    # the back of the cube: 145 mm behind the centre is hand (145/150), 148 mm lies in the last
    # 1/64 of the cube (normalised >= HAND_LIMIT = 0.96875) and is background; 150 mm in front is -1
    for depth, expected in ((645.0, 145 / 150), (648.0, BACKGROUND), (350.0, -1.0)):
        crop, _ = crop_and_normalize(_block_image(depth=depth), np.array([320.0, 240.0, 500.0]),
                                     np.array([300.0] * 3), NYU_CAMERA, 64)
        np.testing.assert_allclose(crop[31, 31], expected, rtol=1e-6)


def test_preprocess_frame_bad_input():
    img = _block_image()
    with pytest.raises(DataError, match=r"expected \(480, 640\)"):
        preprocess_frame(img[:100], [320, 240, 500], (300,) * 3, NYU_CAMERA, where="x.png")
    bad = img.copy()
    bad[5, 5] = np.nan
    with pytest.raises(DataError, match="x.png.*NaN"):
        preprocess_frame(bad, [320, 240, 500], (300,) * 3, NYU_CAMERA, where="x.png")
    bad[5, 5] = np.inf
    with pytest.raises(DataError, match="x.png: depth contains NaN/inf"):
        preprocess_frame(bad, [320, 240, 500], (300,) * 3, NYU_CAMERA, where="x.png")
    with pytest.raises(DataError, match="x.png: depth dtype bool cannot hold depth"):
        preprocess_frame(img > 0, [320, 240, 500], (300,) * 3, NYU_CAMERA, where="x.png")


def test_camera_in_metres():
    cam = Camera(588.03, 587.07, 320, 240, 640, 480, depth_unit_mm=1000.0)
    np.testing.assert_allclose(cam.to_mm(np.array([0.5, 0.0])), [500.0, 0.0])


def _slice_reference(crop, num_slices):
    """Straight loops over pixels, as docs/architecture.md states the rule."""
    m = crop.shape[0]
    out = np.zeros((m, m, num_slices), np.float32)
    hand = [(i, j) for i in range(m) for j in range(m) if crop[i, j] < VOLUME_THRESHOLD]
    if not hand:
        return out
    lo, hi = min(crop[p] for p in hand), max(crop[p] for p in hand)
    for i, j in hand:
        k = 0 if hi == lo else min(int(np.floor((crop[i, j] - lo) / (hi - lo) * num_slices)), num_slices - 1)
        out[i, j, k] = 1.0
    return out


@pytest.mark.parametrize("float_steps", [False, True])
def test_slice_volume_matches_numpy_reference(rng, float_steps):
    crops = rng.uniform(-1, 1, (4, 16, 16)).astype(np.float32)
    crops[rng.random(crops.shape) < 0.4] = 1.0  # background
    crops[1, 3, 3] = crops[1][crops[1] < 1].max()  # ties at Dmax
    got = np.asarray(slice_volume(crops[..., None], 8, float_steps))
    assert got.shape == (4, 16, 16, 8)
    for c, g in zip(crops, got):
        np.testing.assert_array_equal(g, _slice_reference(c, 8))


@pytest.mark.parametrize("float_steps", [False, True])
def test_slice_volume_pixels_on_slice_boundaries(float_steps):
    # values in 1/64 steps are exact in float32, so Dmin + i*span/L is hit exactly: a pixel on a
    # boundary starts the upper slice (floor), Dmax is in the last slice, not slice L
    crop = np.ones((1, 4, 4, 1), np.float32)
    values = np.array([-16, -12, -8, -4, 0, 4, 8, 12, 16, -15, 3, 13]) / 64.0  # Dmin -1/4, Dmax 1/4
    crop.reshape(-1)[:len(values)] = values
    vol = np.asarray(slice_volume(crop, 8, float_steps)).reshape(-1, 8)
    expected_slice = [0, 1, 2, 3, 4, 5, 6, 7, 7, 0, 4, 7]
    np.testing.assert_array_equal(vol[:len(values)].argmax(-1), expected_slice)
    assert vol[:len(values)].sum() == len(values) and vol[len(values):].sum() == 0
    np.testing.assert_array_equal(vol.reshape(1, 4, 4, 8), _slice_reference(crop[0, ..., 0], 8)[None])


def test_slice_volume_hand_mask_survives_8bit_steps(rng):
    """A full-integer export sees the crop in 8-bit steps of 2/255 and may put any value one step
    off (it represented the background +1 as 0.996, and a comparison against +1 itself then called
    every background pixel hand). Moving every pixel by one step either way must leave the hand
    mask as it is: crops hold nothing in [HAND_LIMIT, 1) and the volume splits in the middle."""
    crops = np.full((4, 16, 16), BACKGROUND, np.float32)
    crops[:, 4:12, 4:12] = rng.uniform(-1, HAND_LIMIT, (4, 8, 8))
    crops[:, 4, 4] = np.nextafter(np.float32(HAND_LIMIT), np.float32(0))  # the largest hand value
    ref = np.asarray(slice_volume(crops[..., None], 8))
    for sign in (-1, 1):
        moved = np.clip(crops + sign * 2 / 255, -1, 1).astype(np.float32)
        got = np.asarray(slice_volume(moved[..., None], 8))
        np.testing.assert_array_equal(got.sum(-1), ref.sum(-1))
        hand = ref.sum(-1) > 0
        assert np.abs(got.argmax(-1)[hand] - ref.argmax(-1)[hand]).max() <= 1


def test_float_steps_are_comparisons_in_float32():
    """clip((a - b) * 2^126 + 1, 0, 1) against a >= b on neighbouring float32 numbers, zero, the
    smallest normal differences and the crop's extremes."""
    from keras import ops

    from keras_cadstn.data.preprocessing import FLOAT_STEP_SCALE
    tiny = np.float32(2.0 ** -126)
    a = np.array([0.5, np.nextafter(np.float32(0.5), np.float32(1)), np.nextafter(np.float32(0.5), np.float32(0)),
                  0.0, tiny, -tiny, 1.0, -1.0, VOLUME_THRESHOLD, HAND_LIMIT], np.float32)
    for b in (np.float32(0.5), np.float32(0.0), np.float32(VOLUME_THRESHOLD), np.float32(-1.0), np.float32(1.0)):
        steps = np.asarray(ops.clip((ops.convert_to_tensor(a) - b) * FLOAT_STEP_SCALE + 1.0, 0.0, 1.0))
        np.testing.assert_array_equal(steps, (a >= b).astype(np.float32), err_msg=f"b = {b}")


@pytest.mark.parametrize("float_steps", [False, True])
def test_slice_volume_edges(float_steps):
    crop = np.full((1, 8, 8, 1), 1.0, np.float32)
    assert np.asarray(slice_volume(crop, 8, float_steps)).sum() == 0  # no hand pixel
    crop[0, 2:4, 2:4] = -0.25  # one depth value: all in slice 0
    vol = np.asarray(slice_volume(crop, 8, float_steps))
    assert vol[0, 2:4, 2:4, 0].sum() == 4 and vol.sum() == 4
    crop[0, 5, 5] = 0.75  # Dmax: last slice, not L
    vol = np.asarray(slice_volume(crop, 8, float_steps))
    assert vol[0, 5, 5, 7] == 1 and vol[0, 2, 2, 0] == 1 and vol.sum() == 5
    # works with leading (batch, time) axes
    assert np.asarray(slice_volume(np.repeat(crop[None], 3, 0), 4, float_steps)).shape == (3, 1, 8, 8, 4)
    # in the gap under the background that crops leave empty (above 1 - 1/64): not hand
    crop[0, 6, 6] = 0.99
    crop[0, 6, 7] = HAND_LIMIT - 1 / 64  # 0.953125: hand, the new Dmax, last slice; 0.75 falls to slice 6
    vol = np.asarray(slice_volume(crop, 8, float_steps))
    assert vol[0, 6, 6].sum() == 0 and vol[0, 6, 7, 7] == 1 and vol[0, 5, 5, 6] == 1 and vol.sum() == 6


def _bar(degrees, size=64, length=24.0, width=2.2):
    """A crop with a bar of hand pixels through its middle, pointing ``degrees`` clockwise from up."""
    mid = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size] - mid
    t = np.radians(degrees)
    along, across = u * np.sin(t) - v * np.cos(t), u * np.cos(t) + v * np.sin(t)
    crop = np.full((size, size), BACKGROUND, np.float32)
    crop[(np.abs(along) <= length) & (np.abs(across) <= width)] = 0.1
    return crop


@pytest.mark.parametrize("degrees, axis, turn", [(0, 0, 0), (30, 30, -30), (-60, -60, -30), (90, 90, 0),
                                                 (135, -45, 45), (-20, -20, 20), (100, -80, -10)])
def test_principal_angle_and_the_upright_turn_of_a_bar(degrees, axis, turn):
    crop = _bar(degrees)
    assert principal_angle(crop) == pytest.approx(axis, abs=1.0)
    assert upright_turn(crop) == pytest.approx(turn, abs=1.0)
    # turned by it, the bar lies on a crop axis
    assert abs((principal_angle(turn_crop(crop, upright_turn(crop))) + 45) % 90 - 45) < 1.5


def test_no_hand_pixels_no_angle_no_turn():
    empty = np.full((32, 32), BACKGROUND, np.float32)
    assert principal_angle(empty) is None and upright_turn(empty) == 0.0


def test_turn_crop_moves_each_pixel_by_the_hand_computed_rotation():
    crop = np.full((64, 64), BACKGROUND, np.float32)
    crop[10, 40] = -0.5  # (u, v) from the middle 31.5: (8.5, -21.5)
    turned = turn_crop(crop, 90.0)  # clockwise as shown: (u, v) -> (-v, u) = (21.5, 8.5)
    assert turned[40, 53] == -0.5 and (turned < BACKGROUND).sum() == 1
    np.testing.assert_allclose(turn_matrix(90.0) @ [0.0, -1.0], [1.0, 0.0], atol=1e-12)  # up -> right
    np.testing.assert_array_equal(turn_crop(crop, 0.0), crop)
    # a full crop turned by 45 degrees: its corners come from outside and are background
    corners = turn_crop(np.zeros((64, 64), np.float32), 45.0)
    assert corners[0, 0] == corners[63, 63] == BACKGROUND and corners[31, 31] == 0.0


def test_turn_joints_back_undoes_the_pixel_turn_at_each_joints_depth(rng):
    cube, centre, size = np.array([300.0] * 3), np.array([250.0, 300.0, 600.0]), 64
    t = crop_transform(centre, cube, NYU_CAMERA, size)
    mid = (size - 1) / 2
    pixels = rng.uniform(0, size - 1, (10, 2))  # crop pixels of ten joints, each at its own depth
    depths = rng.uniform(480, 720, 10)

    def joints_at(px):
        uv = np.stack([(px[:, 0] - t[0, 2]) / t[0, 0], (px[:, 1] - t[1, 2]) / t[1, 1]], -1)
        return NYU_CAMERA.uvd_to_xyz(np.concatenate([uv, depths[:, None]], -1))

    for degrees in (37.0, -45.0, 12.5):
        turned = (pixels - mid) @ turn_matrix(degrees).T + mid  # where turn_crop moves those pixels
        back = turn_joints_back(joints_at(turned), degrees, centre, cube, NYU_CAMERA, size)
        np.testing.assert_allclose(back, joints_at(pixels), atol=1e-9)
        np.testing.assert_allclose(back[:, 2], depths)  # depth is kept
    np.testing.assert_allclose(turn_joints_back(joints_at(pixels), 0.0, centre, cube, NYU_CAMERA, size),
                               joints_at(pixels), atol=1e-9)
    # a joint predicted behind the camera has no pixel: returned as it is, the others turned
    behind = joints_at(pixels)
    behind[3] = [10.0, -20.0, -5.0]
    got = turn_joints_back(behind, 37.0, centre, cube, NYU_CAMERA, size)
    np.testing.assert_array_equal(got[3], behind[3])
    np.testing.assert_allclose(np.delete(got, 3, 0), np.delete(
        turn_joints_back(joints_at(pixels), 37.0, centre, cube, NYU_CAMERA, size), 3, 0), atol=1e-9)


def test_turn_crop_reads_each_pixel_from_the_rounded_inverse_turn(rng):
    """Every pixel of the turned crop is the source pixel nearest to R^T (its position), background
    where that falls outside: the definition, computed here pixel by pixel."""
    crop = rng.uniform(-1, 1, (32, 32)).astype(np.float32)
    mid = 15.5
    for degrees in (17.0, -38.5, 44.0):
        r = turn_matrix(degrees)
        expected = np.full_like(crop, BACKGROUND)
        for row in range(32):
            for col in range(32):
                u, v = r.T @ [col - mid, row - mid]
                c, w = int(np.rint(u + mid)), int(np.rint(v + mid))
                if 0 <= c < 32 and 0 <= w < 32:
                    expected[row, col] = crop[w, c]
        np.testing.assert_array_equal(turn_crop(crop, degrees), expected)
