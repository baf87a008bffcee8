"""The size rules every image meets before a single pixel is decoded.

An upload is small, but what it *declares* (a PNG header, a JPEG frame header, a DICOM Rows×Columns,
a deflated dataset) can be enormous, and decoders allocate for the declaration. So every reader checks
the declared geometry here first, with pneumo's own limit and words: Pillow's and pydicom's limits and
messages never reach a user.
"""

from __future__ import annotations

from pneumo.errors import ImageError

DEFAULT_MAX_PIXELS = 50_000_000  # documented in README/docs: the server's --max-pixels default
# No radiograph is 20 times longer than it is wide; a file that says so is a bomb or a mistake
# (the model's own "extreme geometry" gate is stricter and lives in inference, not here).
MAX_ASPECT = 20.0
# A DICOM header (everything before Pixel Data) is kilobytes; 16 MB leaves room for big private blocks
# while bounding what a deflated header may inflate to before its declared image size is known.
MAX_DICOM_HEADER_BYTES = 16 * 2**20
# Slack allowed after a deflated dataset's declared pixel data (trailing tags, padding).
DEFLATE_SLACK_BYTES = 2**20


def check_geometry(
    width: int, height: int, source: str, *, max_pixels: int, min_side: int = 1, frames: int = 1
) -> None:
    """Refuse a declared size that is empty, over the pixel limit, too small or absurdly elongated."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{source}: the file declares an image with no pixels ({width}×{height})", code="empty")
    total = width * height * max(frames, 1)
    if total > max_pixels:
        what = f"{width}×{height}" if frames <= 1 else f"{frames} frames of {width}×{height}"
        raise ImageError(
            f"{source}: the image is too large: {what} = {total:,} pixels is over the limit of "
            f"{max_pixels:,} pixels",
            code="too_many_pixels",
            status=413,
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"{source}: the image is only {width}×{height} pixels; a chest X-ray needs at least "
            f"{min_side} pixels a side",
            code="image_too_small",
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageError(
            f"{source}: the image is {width}×{height} pixels, {aspect:,.0f} times longer than it is wide; "
            "that cannot be a radiograph (the file is damaged or not an X-ray)",
            code="bad_geometry",
        )


# Bytes the decoder's raster may take per pixel the limit allows: ``max_pixels`` counts bytes of
# decoded image, not pixels, so an image costs what it decodes to. An 8-bit grey film may have the
# full pixel limit, a 16-bit one half of it, an RGB/RGBA one (Pillow stores both at 4 bytes a pixel)
# a quarter; a 7071×7071 RGBA PNG would otherwise decode to 200 MB before its first grey pixel.
DECODED_BYTES_PER_PIXEL = 1


def check_decoded_bytes(width: int, height: int, bytes_per_pixel: int, source: str, *, max_pixels: int,
                        what: str = "") -> None:
    """Refuse an image whose decoded raster (``width × height × bytes_per_pixel``, one frame) would
    take more than ``max_pixels × DECODED_BYTES_PER_PIXEL`` bytes: checked from the header."""
    budget = max_pixels * DECODED_BYTES_PER_PIXEL
    need = width * height * bytes_per_pixel
    if need > budget:
        raise ImageError(
            f"{source}: the image is too large to decode: {width}×{height} {what or 'pixels'} at "
            f"{bytes_per_pixel} bytes a pixel decode to {need / 2**20:,.0f} MB, over the limit of "
            f"{budget / 2**20:,.0f} MB (greyscale 8-bit images may have up to {max_pixels:,} pixels)",
            code="too_many_pixels",
            status=413,
        )
