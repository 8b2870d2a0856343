"""Writes the tiny calibration images the golden tests in tests/test_calibration.py check.

Run from anywhere: `python tests/data/calibration/make_images.py`. The PNGs are committed;
rerunning rewrites them byte-for-byte the same (PNG is lossless, no timestamps are stored).

grid4x4.png  4x4 RGB; pixel (x, y) has index i = 4*y + x and colour
             R = 10*i + 10, G = 250 - 10*i, B = 3*i.
wide6x4.png  6 wide x 4 high RGB; pixel (x, y) is R = 40*x, G = 60*y, B = 255.
rotated.png  2 wide x 3 high as stored, with EXIF orientation 6 ("rotate 90 degrees clockwise
             to display"); stored pixel (x, y) is R = 100*x, G = 100*y, B = 0.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def grid() -> Image.Image:
    """The 4x4 index grid."""
    img = Image.new("RGB", (4, 4))
    for y in range(4):
        for x in range(4):
            i = 4 * y + x
            img.putpixel((x, y), (10 * i + 10, 250 - 10 * i, 3 * i))
    return img


def wide() -> Image.Image:
    """The 6x4 image with x and y ramps."""
    img = Image.new("RGB", (6, 4))
    for y in range(4):
        for x in range(6):
            img.putpixel((x, y), (40 * x, 60 * y, 255))
    return img


def rotated() -> tuple[Image.Image, Image.Exif]:
    """A 2x3 image whose EXIF says to rotate it 90 degrees clockwise for display."""
    img = Image.new("RGB", (2, 3))
    for y in range(3):
        for x in range(2):
            img.putpixel((x, y), (100 * x, 100 * y, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return img, exif


def main() -> None:
    """Write the three PNGs next to this script."""
    grid().save(HERE / "images" / "grid4x4.png")
    wide().save(HERE / "images" / "wide6x4.png")
    img, exif = rotated()
    img.save(HERE / "exif" / "rotated.png", exif=exif)


if __name__ == "__main__":
    (HERE / "images").mkdir(exist_ok=True)
    (HERE / "exif").mkdir(exist_ok=True)
    main()
