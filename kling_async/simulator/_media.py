"""Real result files made from the inputs: a PNG per image (Pillow), an H.264 MP4 per video (PyAV).

Blocking work: call these from a worker thread.
"""

import io
import pathlib
import tempfile
import zlib

import av
from PIL import Image, ImageDraw, ImageOps

__all__ = ["VIDEO_FPS", "compose_image", "compose_video", "frame_size"]

_IMAGE_LONG_SIDE = 512
_VIDEO_LONG_SIDE = 320
#: Frames per second of a simulated video: a 5 s video has 40 frames, a 10 s one 80.
VIDEO_FPS = 8
_FADE_FRAMES = 4
_BAR_HEIGHT = 4
# x264 tuned for speed on a shared machine: one thread, the fastest preset, no lookahead.
_X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "30", "threads": "1"}


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


def _video_size(aspect_ratio: str) -> tuple[int, int]:
    # yuv420p (what players expect) needs even sides.
    width, height = frame_size(aspect_ratio, _VIDEO_LONG_SIDE)
    return width - width % 2, height - height % 2


def _frame_key(count: int, index: int, total: int) -> tuple[int, int, int]:
    """(input shown, cross-fade step or 0, whole second) of frame ``index`` of ``total``.

    Each input is held in turn and cross-fades into the next over the end of its share;
    frames with the same key are the same picture, composed and converted once.
    """
    segment = total // count
    position = min(index // segment, count - 1)
    offset = index - position * segment
    fade_from = segment - _FADE_FRAMES
    step = offset - fade_from + 1 if position < count - 1 and offset >= fade_from else 0
    return position, step, index // VIDEO_FPS


def _picture(stills: list[Image.Image], key: tuple[int, int, int], seconds: int) -> Image.Image:
    position, step, second = key
    if step:
        picture = Image.blend(stills[position], stills[position + 1], step / (_FADE_FRAMES + 1))
    else:
        picture = stills[position].copy()
    # A bar along the bottom grows each second: playback visibly moves even on a still.
    width, height = picture.size
    ImageDraw.Draw(picture).rectangle(
        (0, height - _BAR_HEIGHT, width * (second + 1) // seconds, height), fill=(255, 255, 255)
    )
    return picture


def compose_video(inputs: tuple[bytes | None, ...], aspect_ratio: str, duration: str) -> bytes:
    """An H.264 MP4 of ``duration`` seconds at :data:`VIDEO_FPS` made from the inputs.

    Each input is held in turn and cross-fades into the next; a bar along the bottom
    grows with the seconds. The file is "fast start" (its index before the frames), as
    video hosts serve them, so a player can start before the download ends.
    """
    size = _video_size(aspect_ratio)
    stills = [_load(data, position, size) for position, data in enumerate(inputs)]
    seconds = int(duration)
    total = VIDEO_FPS * seconds
    frames: dict[tuple[int, int, int], av.VideoFrame] = {}
    with tempfile.TemporaryDirectory(prefix="kling-sim-") as folder:
        # The muxer moves the index to the front in a second pass over a real file.
        path = pathlib.Path(folder) / "video.mp4"
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=VIDEO_FPS, options=_X264_OPTIONS)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for index in range(total):
                key = _frame_key(len(stills), index, total)
                frame = frames.get(key)
                if frame is None:
                    picture = _picture(stills, key, seconds)
                    rgb = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]  # PyAV's stub
                    frame = frames[key] = rgb.reformat(format="yuv420p")
                # The encoder keeps its own reference to the pixels: a repeated picture
                # is the same frame object sent again with the next timestamp.
                frame.pts = index
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return path.read_bytes()
