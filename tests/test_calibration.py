"""Golden tests for farm.calibration against the tiny committed PNGs in tests/data/calibration.

Expected values are worked out by hand from the pixel formulas in make_images.py:
grid4x4.png pixel (x, y) has index i = 4*y + x and colour (10*i + 10, 250 - 10*i, 3*i).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from farm.calibration import (
    calibration_description,
    calibration_fingerprint,
    calibration_label,
    list_images,
    load_calibration,
    preprocess_image,
    spread_indices,
)
from farm.errors import ConfigError
from farm.models import CalibrationSpec, Preprocess

DATA = Path(__file__).parent / "data" / "calibration"
IMAGES = DATA / "images"
GRID = IMAGES / "grid4x4.png"
WIDE = IMAGES / "wide6x4.png"
ROTATED = DATA / "exif" / "rotated.png"

RAW = Preprocess(resize="nearest", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _pre(**kw: object) -> Preprocess:
    return Preprocess(**{**RAW.to_dict(), **kw})


def _grid(pre: Preprocess, size: tuple[int, int] = (4, 4), channels: int = 3) -> np.ndarray:
    with Image.open(GRID) as img:
        return preprocess_image(img, pre, size, channels)


def test_raw_pixels_are_kept_exactly() -> None:
    out = _grid(RAW)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    # (row 1, col 2): i = 6 -> (70, 190, 18)
    assert out[1, 2].tolist() == [70.0, 190.0, 18.0]
    assert out[0, 0].tolist() == [10.0, 250.0, 0.0]
    assert out[3, 3].tolist() == [160.0, 100.0, 45.0]


def test_bgr_reverses_channels() -> None:
    out = _grid(_pre(channel_order="BGR"))
    assert out[1, 2].tolist() == [18.0, 190.0, 70.0]


def test_mean_std_apply_per_channel_in_model_channel_order() -> None:
    # (R - 10)/10 = i, (G - 250)/10 = -i, B/3 = i
    out = _grid(_pre(mean=(10.0, 250.0, 0.0), std=(10.0, 10.0, 3.0)))
    index = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(out[..., 0], index)
    np.testing.assert_array_equal(out[..., 1], -index)
    np.testing.assert_array_equal(out[..., 2], index)
    # In BGR order the first mean/std pair applies to blue: (B - 0)/3 = i, (R - 10)/10 = i
    bgr = _grid(_pre(channel_order="BGR", mean=(0.0, 250.0, 10.0), std=(3.0, 10.0, 10.0)))
    np.testing.assert_array_equal(bgr[..., 0], index)
    np.testing.assert_array_equal(bgr[..., 2], index)


def test_default_preprocess_maps_pixels_to_minus_one_one() -> None:
    out = _grid(Preprocess(resize="nearest"))
    # R = 10 at i = 0: (10 - 127.5)/127.5
    assert out[0, 0, 0] == pytest.approx((10 - 127.5) / 127.5)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_center_crop_keeps_the_middle() -> None:
    # 0.5 of the 4-pixel side = 2, box starts at (4 - 2)//2 = 1: rows/cols 1..2, i = 5, 6, 9, 10
    out = _grid(_pre(center_crop=0.5), size=(2, 2))
    assert out[..., 0].tolist() == [[60.0, 70.0], [100.0, 110.0]]


def test_center_crop_on_non_square_image_uses_the_shorter_side() -> None:
    # wide6x4: 0.5 * 4 = 2; left = (6 - 2)//2 = 2, top = (4 - 2)//2 = 1 -> x in {2, 3}, y in {1, 2}
    with Image.open(WIDE) as img:
        out = preprocess_image(img, _pre(center_crop=0.5), (2, 2))
    assert out[..., 0].tolist() == [[80.0, 120.0], [80.0, 120.0]]  # R = 40*x
    assert out[..., 1].tolist() == [[60.0, 60.0], [120.0, 120.0]]  # G = 60*y


def test_resize_methods_differ_as_documented() -> None:
    # nearest 4 -> 2 samples pixel centres 1 and 3: (1, 1) is i = 5, R = 60
    near = _grid(_pre(resize="nearest"), size=(2, 2))
    assert near[..., 0].tolist() == [[60.0, 80.0], [140.0, 160.0]]
    # area averages 2x2 blocks: i in {0, 1, 4, 5} -> R mean 35
    area = _grid(_pre(resize="area"), size=(2, 2))
    assert area[..., 0].tolist() == [[35.0, 55.0], [115.0, 135.0]]
    bilinear = _grid(_pre(resize="bilinear"), size=(2, 2))
    assert not np.array_equal(bilinear, near)


def test_grayscale_model_uses_luma() -> None:
    out = _grid(_pre(mean=(0.0,), std=(1.0,)), channels=1)
    assert out.shape == (4, 4, 1)
    # L = round(0.299*10 + 0.587*250 + 0.114*0) = round(149.74) = 150
    assert out[0, 0, 0] == 150.0


def test_exif_orientation_is_applied() -> None:
    # Stored 2x3, orientation 6 -> displayed 3 wide x 2 high; displayed row 0 is stored column 0
    # read bottom-up: G = 100*y for y = 2, 1, 0.
    with Image.open(ROTATED) as img:
        out = preprocess_image(img, RAW, (2, 3))
    assert out[..., 1].tolist() == [[200.0, 100.0, 0.0], [200.0, 100.0, 0.0]]
    assert out[..., 0].tolist() == [[0.0, 0.0, 0.0], [100.0, 100.0, 100.0]]


def test_folder_is_sorted_and_deterministic() -> None:
    assert [p.name for p in list_images(IMAGES)] == ["grid4x4.png", "wide6x4.png"]
    spec = CalibrationSpec(kind="images", path=str(IMAGES), num_samples=10, preprocess=RAW)
    a = load_calibration(spec, (4, 4, 3))
    b = load_calibration(spec, (4, 4, 3))
    assert a.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], _grid(RAW))


def test_spread_indices_cover_the_whole_folder() -> None:
    assert spread_indices(10, 3) == [0, 3, 6]
    assert spread_indices(2, 5) == [0, 1]
    assert spread_indices(0, 5) == []


def test_npy_is_used_as_is(tmp_path: Path) -> None:
    arr = np.arange(2 * 4 * 4 * 3, dtype=np.int16).reshape(2, 4, 4, 3)
    path = tmp_path / "cal.npy"
    np.save(path, arr)
    out = load_calibration(CalibrationSpec(kind="npy", path=str(path)), (4, 4, 3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr.astype(np.float32))


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((3, 8, 8, 3), np.float32),
         "does not match the model input; expected (N, 4, 4, 3)"),
        (np.zeros((4, 4, 3), np.float32), "does not match"),
        (np.zeros((0, 4, 4, 3), np.float32), "holds no samples"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), "NaN"),
        (np.zeros((1, 4, 4, 3), np.complex64), "not a real number type"),
    ],
)
def test_bad_npy_names_the_file(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ConfigError) as e:
        load_calibration(CalibrationSpec(kind="npy", path=str(path)), (4, 4, 3))
    assert str(path) in str(e.value) and problem in str(e.value)


def test_npy_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="not a readable .npy array"):
        load_calibration(CalibrationSpec(kind="npy", path=str(path)), (4, 4, 3))


def test_missing_sources_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope'}: calibration images folder"):
        load_calibration(CalibrationSpec(kind="images", path=str(tmp_path / "nope")), (4, 4, 3))
    with pytest.raises(ConfigError, match="no images found"):
        load_calibration(CalibrationSpec(kind="images", path=str(tmp_path)), (4, 4, 3))
    with pytest.raises(ConfigError, match="x.npy: calibration .npy file does not exist"):
        load_calibration(CalibrationSpec(kind="npy", path=str(tmp_path / "x.npy")), (4, 4, 3))


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="broken.png: cannot read calibration image"):
        load_calibration(CalibrationSpec(kind="images", path=str(tmp_path)), (4, 4, 3))


@pytest.mark.parametrize(
    ("pre", "problem"),
    [
        (Preprocess(resize="lanczos"), "preprocess.resize: unknown method 'lanczos'; allowed:"),
        (Preprocess(channel_order="RBG"), "preprocess.channel_order: 'RBG'; allowed: RGB, BGR"),
        (Preprocess(center_crop=0.0), "preprocess.center_crop"),
        (Preprocess(std=(1.0, 0.0, 1.0)), "preprocess.std: contains 0"),
        (Preprocess(mean=(1.0, 2.0)), "preprocess.mean: 2 values for a 3-channel input"),
    ],
)
def test_bad_preprocess_is_a_config_error(pre: Preprocess, problem: str) -> None:
    spec = CalibrationSpec(kind="images", path=str(IMAGES), preprocess=pre)
    with pytest.raises(ConfigError) as e:
        load_calibration(spec, (4, 4, 3))
    assert problem in str(e.value) and str(IMAGES) in str(e.value)


def test_unknown_input_dims_are_refused_for_images() -> None:
    spec = CalibrationSpec(kind="images", path=str(IMAGES))
    with pytest.raises(ConfigError, match="known shape"):
        load_calibration(spec, (None, None, 3))


def test_random_calibration_for_a_feature_vector() -> None:
    """A [4] input (not an image): the default mean/std (one value for all channels) applies;
    per-channel values for 3 channels do not, and say so."""
    batch = load_calibration(CalibrationSpec(kind="random", num_samples=5, seed=1), [4])
    assert batch.shape == (5, 4) and batch.dtype == np.float32
    assert -1.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    per_channel = CalibrationSpec(kind="random", num_samples=5, preprocess=Preprocess(
        mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0)))
    with pytest.raises(ConfigError, match=r"preprocess.mean: 3 values for a 4-channel input"):
        load_calibration(per_channel, [4])
    # the full description names what was used, for the run's provenance
    assert calibration_description(CalibrationSpec(kind="random", num_samples=5, seed=1)) == \
        "random (explicit), 5 samples, seed 1"
    assert calibration_description(None) == ""
    assert calibration_description(CalibrationSpec(kind="npy", path="a.npy", num_samples=9)) == \
        "npy:a.npy (9 samples)"


def test_random_only_for_kind_random_and_seeded() -> None:
    spec = CalibrationSpec(kind="random", num_samples=3, seed=7)
    a = load_calibration(spec, (4, 4, 3))
    assert a.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(a, load_calibration(spec, (4, 4, 3)))
    assert not np.array_equal(a, load_calibration(CalibrationSpec(kind="random", seed=8,
                                                                  num_samples=3), (4, 4, 3)))
    # pixels 0..255 through the default mean/std: inside [-1, 1], and not constant
    assert a.min() >= -1.0 and a.max() <= 1.0 and a.std() > 0.3
    assert calibration_label(spec) == "random (explicit)"
    assert calibration_label(CalibrationSpec(kind="npy", path="a.npy")) == "npy:a.npy"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="kind: 'noise'; allowed: images, npy, random"):
        load_calibration(CalibrationSpec(kind="noise"), (4, 4, 3))


def test_fingerprint_tracks_content_and_preprocessing(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(GRID.read_bytes())
    spec = CalibrationSpec(kind="images", path=str(folder))
    first = calibration_fingerprint(spec)
    assert first == calibration_fingerprint(spec)
    bgr = CalibrationSpec(kind="images", path=str(folder),
                          preprocess=Preprocess(channel_order="BGR"))
    assert calibration_fingerprint(bgr) != first
    (folder / "a.png").write_bytes(WIDE.read_bytes())
    assert calibration_fingerprint(spec) != first
    # the same content elsewhere hashes the same: the key is content, not location
    other = tmp_path / "copy"
    other.mkdir()
    (other / "a.png").write_bytes(WIDE.read_bytes())
    assert calibration_fingerprint(CalibrationSpec(kind="images", path=str(other))) == \
        calibration_fingerprint(spec)


def test_calibration_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys, farm.calibration; "
        "sys.exit(1 if {'tensorflow', 'keras'} & set(sys.modules) else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0
