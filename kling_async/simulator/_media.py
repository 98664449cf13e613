"""Real result files made from the inputs with Pillow: a PNG per image, an animated GIF per video.

Blocking work: call these from a worker thread.
"""

import io
import zlib

from PIL import Image, ImageDraw, ImageOps

__all__ = ["compose_image", "compose_video", "frame_size"]

_IMAGE_LONG_SIDE = 512
_VIDEO_LONG_SIDE = 320
_HOLD_FRAMES = 3
_FADE_FRAMES = 4
_FRAME_MS = 80


def frame_size(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """Pixel size for ``"W:H"`` with the longer side ``long_side``."""
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side


def _placeholder(seed: int, size: tuple[int, int]) -> Image.Image:
    # Inputs given as URLs cannot be fetched offline: a colourful stand-in keeps results distinct.
    hue = zlib.crc32(seed.to_bytes(4, "big")) & 0xFFFFFF
    colour = ((hue >> 16) & 0xFF, (hue >> 8) & 0xFF, hue & 0xFF)
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse(
        (w // 4, h // 4, 3 * w // 4, 3 * h // 4), outline=(255, 255, 255), width=max(1, w // 64)
    )
    draw.text((8, 8), f"input {seed}", fill=(255, 255, 255))
    return image


def _load(data: bytes | None, seed: int, size: tuple[int, int]) -> Image.Image:
    if data is None:
        return _placeholder(seed, size)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return ImageOps.fit(opened.convert("RGB"), size)
    except (OSError, ValueError):
        # A valid header over damaged pixels passes validation (as on the real API).
        return _placeholder(seed, size)


def compose_image(
    inputs: tuple[bytes | None, ...], background: bytes | None, aspect_ratio: str, index: int
) -> bytes:
    """A PNG: the subjects side by side over the scene (or a gradient), marked with ``index``."""
    size = frame_size(aspect_ratio, _IMAGE_LONG_SIDE)
    canvas = (
        _load(background, 100 + index, size) if background is not None else _gradient(size, index)
    )
    count = len(inputs)
    cell_w = size[0] // count
    tile = (max(1, cell_w - 16), max(1, size[1] * 2 // 3))
    for position, data in enumerate(inputs):
        picture = _load(data, position, tile)
        canvas.paste(picture, (position * cell_w + 8, (size[1] - tile[1]) // 2))
    ImageDraw.Draw(canvas).text(
        (8, size[1] - 20), f"kling_async simulator #{index}", fill=(255, 255, 255)
    )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _gradient(size: tuple[int, int], index: int) -> Image.Image:
    base = Image.linear_gradient("L").resize(size)
    return ImageOps.colorize(base, black=(20, 20, 40 + 20 * index), white=(200, 160, 120))


def compose_video(inputs: tuple[bytes | None, ...], aspect_ratio: str) -> bytes:
    """An animated GIF that holds each input and cross-fades to the next, looping."""
    size = frame_size(aspect_ratio, _VIDEO_LONG_SIDE)
    stills = [_load(data, position, size) for position, data in enumerate(inputs)]
    frames: list[Image.Image] = []
    for position, still in enumerate(stills):
        following = stills[(position + 1) % len(stills)]
        frames.extend([still] * _HOLD_FRAMES)
        frames.extend(
            Image.blend(still, following, step / (_FADE_FRAMES + 1))
            for step in range(1, _FADE_FRAMES + 1)
        )
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=_FRAME_MS, loop=0
    )
    return buffer.getvalue()
