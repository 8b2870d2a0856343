"""Calibration data for full-integer quantization: image folders, .npy arrays, explicit random.

Reads image files (PIL) and .npy files from the local disk; never imports TensorFlow, never
touches a device. Every preprocessing step that commonly differs between a PC pipeline and a
phone app is explicit in `Preprocess` and applied here in this order:

1. decode, apply the EXIF orientation, convert to RGB (or L for one-channel models);
2. centre crop: keep `center_crop` x the shorter side, boxed to the model's aspect ratio;
3. resize to the model's H x W with the named PIL filter (PIL's bilinear/bicubic filters
   antialias when shrinking, like `tf.image.resize(antialias=True)`; `area` is PIL's box filter);
4. channel order: RGB as decoded, or reversed to BGR;
5. `(pixel - mean) / std` per channel, where `mean`/`std` are given in the *model's* channel
   order (so a Caffe-style BGR model lists the blue mean first).

A .npy array is used as the model input as it is: no preprocessing. Random data exists only for
`kind == "random"` (never as a fallback); it is seeded uniform pixels in 0..255 normalised with
the same mean/std, so its range matches what images would give.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from farm.errors import ConfigError
from farm.hashing import file_sha256
from farm.models import (
    CALIBRATION_KINDS,
    CHANNEL_ORDERS,
    RESIZE_METHODS,
    CalibrationSpec,
    Preprocess,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff",
)

_RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}

# Bumped whenever the way images become arrays changes, so cached int8 variants recalibrate.
PREPROCESS_RECIPE_VERSION = 1


def calibration_label(spec: CalibrationSpec) -> str:
    """How a variant names its calibration: "images:<path>", "npy:<path>", "random (explicit)"."""
    if spec.kind == "random":
        return "random (explicit)"
    return f"{spec.kind}:{spec.path}"


def calibration_description(spec: CalibrationSpec | None) -> str:
    """The run's calibration in full (the label plus sample count, seed or preprocessing), for
    provenance and the report; "" when the sweep has none."""
    if spec is None:
        return ""
    label = calibration_label(spec)
    if spec.kind == "random":
        return f"{label}, {spec.num_samples} samples, seed {spec.seed}"
    if spec.kind == "npy":
        return f"{label} ({spec.num_samples} samples)"
    p = spec.preprocess
    return (f"{label} ({spec.num_samples} samples; resize {p.resize}, centre crop "
            f"{p.center_crop:g}, {p.channel_order}, mean {list(p.mean)}, std {list(p.std)})")


def validate_preprocess(pre: Preprocess, channels: int | None = None, *, where: str = "") -> None:
    """Raise ConfigError if a preprocessing field is out of range; `where` prefixes the message."""
    at = f"{where}: " if where else ""
    if pre.resize not in RESIZE_METHODS:
        raise ConfigError(
            f"{at}preprocess.resize: unknown method {pre.resize!r}; "
            f"allowed: {', '.join(RESIZE_METHODS)}"
        )
    if pre.channel_order not in CHANNEL_ORDERS:
        raise ConfigError(
            f"{at}preprocess.channel_order: {pre.channel_order!r}; allowed: "
            f"{', '.join(CHANNEL_ORDERS)}"
        )
    if not 0.0 < pre.center_crop <= 1.0:
        raise ConfigError(
            f"{at}preprocess.center_crop: {pre.center_crop} is not a fraction in (0, 1]"
        )
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) == 0:
            raise ConfigError(f"{at}preprocess.{name}: empty; give one value per channel")
        if channels is not None and len(values) not in (1, channels):
            raise ConfigError(
                f"{at}preprocess.{name}: {len(values)} values for a {channels}-channel input; "
                f"give 1 or {channels}"
            )
    if any(s == 0 for s in pre.std):
        raise ConfigError(f"{at}preprocess.std: contains 0; std divides the pixels")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted by relative POSIX path for determinism."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: calibration images folder does not exist")
    found = [
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def spread_indices(total: int, wanted: int) -> list[int]:
    """`min(total, wanted)` indices spread evenly over range(total), first one 0.

    Sorted image folders are usually grouped by class, so the first N files would calibrate on
    one class only; evenly spaced picks cover the whole folder and stay deterministic.
    """
    k = min(total, wanted)
    return [i * total // k for i in range(k)] if k > 0 else []


def select_images(spec: CalibrationSpec) -> list[Path]:
    """The image files a spec of kind "images" uses, in order."""
    folder = Path(spec.path)
    images = list_images(folder)
    if not images:
        raise ConfigError(
            f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return [images[i] for i in spread_indices(len(images), spec.num_samples)]


def _crop_box(width: int, height: int, target_hw: tuple[int, int],
              fraction: float) -> tuple[int, int, int, int]:
    """The centred (left, top, right, bottom) box keeping `fraction` of the shorter side.

    The box has the target's aspect ratio (a square for square models), clamped to the image.
    """
    th, tw = target_hw
    side = max(1, round(fraction * min(width, height)))
    if th <= tw:
        ch, cw = side, round(side * tw / th)
    else:
        cw, ch = side, round(side * th / tw)
    cw, ch = min(max(cw, 1), width), min(max(ch, 1), height)
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def preprocess_image(image: Image.Image, pre: Preprocess, size_hw: tuple[int, int],
                     channels: int = 3) -> np.ndarray:
    """One decoded image as a (H, W, C) float32 model input; pure (no file access)."""
    validate_preprocess(pre, channels)
    if channels not in (1, 3):
        raise ConfigError(f"image calibration needs a 1- or 3-channel input, not {channels}")
    img = ImageOps.exif_transpose(image)
    img = img.convert("L" if channels == 1 else "RGB")
    if pre.center_crop < 1.0:
        img = img.crop(_crop_box(img.width, img.height, size_hw, pre.center_crop))
    height, width = size_hw
    if img.size != (width, height):
        img = img.resize((width, height), resample=_RESAMPLE[pre.resize])
    arr = np.asarray(img, dtype=np.float32)
    if channels == 1:
        arr = arr[:, :, None]
    elif pre.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray((arr - mean) / std, dtype=np.float32)


def _image_shape(input_shape: Sequence[int | None], what: str) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(d is None or d <= 0 for d in input_shape):
        raise ConfigError(
            f"{what}: needs a model input of known shape (H, W, C), got "
            f"{tuple(input_shape)}; set the model's input_shape"
        )
    h, w, c = (int(d) for d in input_shape)  # type: ignore[arg-type]
    return h, w, c


def _load_images(spec: CalibrationSpec, input_shape: Sequence[int | None]) -> np.ndarray:
    h, w, c = _image_shape(input_shape, f"{spec.path}: calibration images")
    validate_preprocess(spec.preprocess, c, where=spec.path)
    files = select_images(spec)
    out = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                out[i] = preprocess_image(img, spec.preprocess, (h, w), c)
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"{path}: cannot read calibration image: {e}") from e
    if len(files) < spec.num_samples:
        log.info("%s: %d images found, fewer than num_samples=%d; using all",
                 spec.path, len(files), spec.num_samples)
    return out


def _load_npy(spec: CalibrationSpec, input_shape: Sequence[int | None]) -> np.ndarray:
    path = Path(spec.path)
    if not path.is_file():
        raise ConfigError(f"{path}: calibration .npy file does not exist")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path}: not a readable .npy array: {e}") from e
    if not isinstance(arr, np.ndarray):
        raise ConfigError(f"{path}: holds several arrays (.npz); give a single .npy array")
    if arr.dtype.kind not in "fiu":
        raise ConfigError(f"{path}: dtype {arr.dtype} is not a real number type")
    want = ("N", *(d if d is not None else "?" for d in input_shape))
    if arr.ndim != len(input_shape) + 1 or any(
        d is not None and d != got for d, got in zip(input_shape, arr.shape[1:], strict=True)
    ):
        raise ConfigError(
            f"{path}: shape {tuple(arr.shape)} does not match the model input; expected "
            f"({', '.join(str(d) for d in want)})"
        )
    if arr.shape[0] == 0:
        raise ConfigError(f"{path}: holds no samples (first dimension is 0)")
    picked = np.asarray(arr[spread_indices(arr.shape[0], spec.num_samples)], dtype=np.float32)
    if not np.all(np.isfinite(picked)):
        raise ConfigError(f"{path}: contains NaN or infinite values")
    return picked


def _load_random(spec: CalibrationSpec, input_shape: Sequence[int | None]) -> np.ndarray:
    if any(d is None or d <= 0 for d in input_shape):
        raise ConfigError(
            f"random calibration needs a model input of known shape, got {tuple(input_shape)}"
        )
    shape = tuple(int(d) for d in input_shape)  # type: ignore[arg-type]
    pre = spec.preprocess
    # A mean/std that is the same for every channel (the default 127.5) fits any input, an
    # image's 3 channels or a feature vector's 4 values; only per-channel values must match.
    pre = replace(pre, mean=pre.mean if len(set(pre.mean)) > 1 else pre.mean[:1],
                  std=pre.std if len(set(pre.std)) > 1 else pre.std[:1])
    validate_preprocess(pre, shape[-1] if shape else 1, where="random calibration")
    rng = np.random.default_rng(spec.seed)
    pixels = rng.integers(0, 256, size=(spec.num_samples, *shape)).astype(np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)


def load_calibration(spec: CalibrationSpec, input_shape: Sequence[int | None]) -> np.ndarray:
    """The calibration batch (N, *input_shape) float32 for a model input shape without batch."""
    if spec.kind not in CALIBRATION_KINDS:
        raise ConfigError(
            f"calibration.kind: {spec.kind!r}; allowed: {', '.join(CALIBRATION_KINDS)}"
        )
    if spec.num_samples <= 0:
        raise ConfigError(f"calibration.num_samples: {spec.num_samples}; must be at least 1")
    shape = tuple(input_shape)
    if spec.kind == "images":
        return _load_images(spec, shape)
    if spec.kind == "npy":
        return _load_npy(spec, shape)
    return _load_random(spec, shape)


def calibration_fingerprint(spec: CalibrationSpec) -> str:
    """sha256 over everything the calibration batch is made of, without building it.

    Images: the chosen files' relative paths and contents plus the preprocessing spec.
    npy: the file's content (it is used as is, so preprocessing does not enter).
    random: seed, count and mean/std. Raises ConfigError if the data cannot be found.
    """
    if spec.kind not in CALIBRATION_KINDS:
        raise ConfigError(
            f"calibration.kind: {spec.kind!r}; allowed: {', '.join(CALIBRATION_KINDS)}"
        )
    if spec.num_samples <= 0:
        raise ConfigError(f"calibration.num_samples: {spec.num_samples}; must be at least 1")
    material: dict[str, object] = {"kind": spec.kind, "num_samples": spec.num_samples}
    if spec.kind == "images":
        validate_preprocess(spec.preprocess, where=spec.path)
        folder = Path(spec.path)
        material["files"] = [
            [p.relative_to(folder).as_posix(), file_sha256(p)] for p in select_images(spec)
        ]
        material["preprocess"] = spec.preprocess.to_dict()
        material["preprocess_recipe"] = PREPROCESS_RECIPE_VERSION
    elif spec.kind == "npy":
        path = Path(spec.path)
        if not path.is_file():
            raise ConfigError(f"{path}: calibration .npy file does not exist")
        material["sha256"] = file_sha256(path)
    else:
        validate_preprocess(spec.preprocess, where="random calibration")
        material["seed"] = spec.seed
        material["mean"] = list(spec.preprocess.mean)
        material["std"] = list(spec.preprocess.std)
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
