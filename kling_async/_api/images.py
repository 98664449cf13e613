"""Reading and checking input images: format, size, dimensions, ratio; lazy Base64.

Every rule is checked from the image's own bytes (magic number and header, and the
file's last bytes for the end marker a cut file lacks), never by decoding the picture,
so checking a 10 MB file reads a few kilobytes.
"""

import base64
import binascii
import logging
import os
import pathlib
import struct
from typing import BinaryIO, Final, Literal

import anyio.to_thread
import attrs

from .._core.errors import InvalidRequest
from .._core.models import Image, ImageOrigin, Request, check_url
from .profiles import COMETAPI_RULES, Rules

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_RATIO",
    "MIN_SIDE",
    "ImageInfo",
    "check_image",
    "check_request",
    "check_rules",
    "decoded_base64_size",
    "encode_bytes",
    "encode_image",
    "encode_path",
    "read_image_file",
    "sniff_image",
    "validate_image_bytes",
    "validate_request",
]

MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
MIN_SIDE: Final = 300
#: Longest side over shortest side, at most 2.5 (checked as 2 * long <= 5 * short).
MAX_RATIO: Final = 2.5

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8"
# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_OTHER_FORMATS: Final = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_HEAD_BYTES: Final = 64 * 1024
# A whole file has its end marker after the header: PNG's IEND chunk (with its fixed
# CRC), JPEG's EOI. It is looked for in the last bytes first; only a file with data after
# the marker (or a cut one) is searched further.
_TAIL_BYTES: Final = 4 * 1024
_PNG_END: Final = b"IEND\xaeB`\x82"
_JPEG_END: Final = b"\xff\xd9"
_PNG_HEADER_END: Final = 33  # signature (8) + IHDR chunk (25)
# Files and buffers above this size are read and encoded in a worker thread.
_OFFLOAD_BYTES: Final = 256 * 1024
logger: Final = logging.getLogger("kling_async")


@attrs.frozen
class ImageInfo:
    """What the header of an image says."""

    format: Literal["png", "jpeg"]
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class _NeedMore(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The buffer ends before the header does."""


def _sniff(data: bytes, field: str) -> ImageInfo:
    return _sniff_header(data, field)[0]


def _sniff_header(data: bytes, field: str) -> tuple[ImageInfo, int]:
    """The header facts and the offset where the header ends (the end marker comes later)."""
    if not data:
        raise InvalidRequest(field, "empty image")
    if data.startswith(_PNG_MAGIC):
        return _sniff_png(data, field), _PNG_HEADER_END
    if data.startswith(_JPEG_MAGIC):
        return _sniff_jpeg(data, field)
    if len(data) < len(_PNG_MAGIC) and (_PNG_MAGIC.startswith(data) or data == _JPEG_MAGIC[:1]):
        raise _NeedMore
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            raise InvalidRequest(field, f"{name} is not accepted (PNG or JPEG only)")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise InvalidRequest(field, "WEBP is not accepted (PNG or JPEG only)")
    raise InvalidRequest(
        field, f"not a PNG or JPEG image (starts with {data[:8].hex()}; PNG or JPEG only)"
    )


def _sniff_png(data: bytes, field: str) -> ImageInfo:
    if len(data) < 24:
        raise _NeedMore
    if data[12:16] != b"IHDR":
        raise InvalidRequest(field, "PNG header damaged (first chunk is not IHDR)")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise InvalidRequest(field, f"PNG header damaged ({width}x{height})")
    return ImageInfo("png", width, height)


def _sniff_jpeg(data: bytes, field: str) -> tuple[ImageInfo, int]:
    pos = 2
    while True:
        if pos + 2 > len(data):
            raise _NeedMore
        if data[pos] != 0xFF:
            raise InvalidRequest(field, f"JPEG header damaged (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise InvalidRequest(field, "JPEG header damaged (no frame header before data)")
        if pos + 4 > len(data):
            raise _NeedMore
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise InvalidRequest(field, "JPEG header damaged (bad segment length)")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                raise _NeedMore
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if width == 0 or height == 0:
                raise InvalidRequest(field, f"JPEG header damaged ({width}x{height})")
            return ImageInfo("jpeg", width, height), pos + 2 + length
        pos += 2 + length


def sniff_image(data: bytes, field: str = "image") -> ImageInfo:
    """Read format and size from the header of a PNG or JPEG image.

    Args:
        data: The image bytes (the start of the file is enough when it holds the header).
        field: Field path for error messages.

    Raises:
        InvalidRequest: Not a PNG/JPEG, a damaged header, or data ending too early.
    """
    try:
        return _sniff(data, field)
    except _NeedMore:
        kind = "PNG" if data.startswith(_PNG_MAGIC[:1]) else "JPEG"
        raise InvalidRequest(
            field, f"truncated {kind} ({len(data)} bytes end before the header does)"
        ) from None


def _has_end(info: ImageInfo, data: bytes, data_start: int, header_end: int) -> bool:
    """Whether the end marker is in ``data`` (read at ``data_start``) after the header.

    Only the bytes after the header count, so a thumbnail's marker in the metadata of a
    file cut short does not pass for the image's own.
    """
    marker = _PNG_END if info.format == "png" else _JPEG_END
    return marker in data[max(0, header_end - data_start) :]


def _truncated(info: ImageInfo, field: str) -> InvalidRequest:
    if info.format == "png":
        return InvalidRequest(field, "truncated PNG (the file ends without its IEND chunk)")
    return InvalidRequest(field, "truncated JPEG (the file ends without its EOI marker)")


def _check_bytes_end(data: bytes, field: str) -> ImageInfo:
    try:
        info, header_end = _sniff_header(data, field)
    except _NeedMore:
        info, header_end = sniff_image(data, field), 0  # sniff_image raises "truncated"
    if not _has_end(info, data, 0, header_end):
        raise _truncated(info, field)
    return info


def _check_file_end(
    stream: BinaryIO, size: int, head: bytes, info: ImageInfo, header_end: int, *, field: str
) -> None:
    tail_start = max(0, size - _TAIL_BYTES)
    if tail_start <= len(head):
        if not _has_end(info, head + stream.read(), 0, header_end):
            raise _truncated(info, field)
        return
    stream.seek(tail_start)
    if _has_end(info, stream.read(), tail_start, header_end):
        return
    # Data after the marker (or none): search the rest, a chunk at a time (<= 10 MB).
    stream.seek(header_end)
    marker = _PNG_END if info.format == "png" else _JPEG_END
    carry = b""
    while chunk := stream.read(_HEAD_BYTES):
        if marker in carry + chunk:
            return
        carry = chunk[-(len(marker) - 1) :]
    raise _truncated(info, field)


def _check_info(info: ImageInfo, field: str) -> ImageInfo:
    width, height = info.width, info.height
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidRequest(field, f"{width}x{height} is below {MIN_SIDE} px")
    long, short = max(width, height), min(width, height)
    if 2 * long > 5 * short:
        ratio = f"{width / height:.2f}:1" if width >= height else f"1:{height / width:.2f}"
        raise InvalidRequest(
            field, f"{width}x{height} has aspect ratio {ratio}, outside 1:2.5..2.5:1"
        )
    return info


def _check_size(size: int, field: str) -> None:
    if size > MAX_IMAGE_BYTES:
        raise InvalidRequest(field, f"{size} bytes is over 10 MB ({MAX_IMAGE_BYTES} bytes)")


def validate_image_bytes(data: bytes, field: str = "image") -> ImageInfo:
    """Check every image rule of the API on raw bytes.

    Rules: PNG or JPEG by magic bytes, at most 10 MB, both sides >= 300 px, aspect ratio
    between 1:2.5 and 2.5:1.

    Raises:
        InvalidRequest: naming ``field`` and the rule broken.
    """
    _check_size(len(data), field)
    return _check_info(_check_bytes_end(data, field), field)


def read_image_file(path: "str | os.PathLike[str]", field: str = "image") -> ImageInfo:
    """Check every image rule on a file, reading only its header (blocking I/O).

    Raises:
        InvalidRequest: The file is missing/unreadable or breaks a rule.
    """
    file = pathlib.Path(path)
    try:
        with file.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            _check_size(size, field)
            head = stream.read(_HEAD_BYTES)
            try:
                info, header_end = _sniff_header(head, field)
            except _NeedMore:
                # A JPEG with large metadata before its frame header: read it all (<= 10 MB).
                info = _check_bytes_end(head + stream.read(), field)
            else:
                _check_file_end(stream, size, head, info, header_end, field=field)
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {file}: {exc.strerror or exc}") from None
    return _check_info(info, field)


def decoded_base64_size(text: str) -> int:
    """Return the number of bytes ``text`` decodes to, without decoding it."""
    stripped = text.rstrip().rstrip("=")
    return len(stripped) * 3 // 4


def _decode_base64_head(text: str, field: str) -> bytes:
    # 64 KiB of base64 gives 48 KiB of image, enough for nearly every header.
    head = "".join(text[:_HEAD_BYTES].split())
    head = head[: len(head) - len(head) % 4] if len(text) > _HEAD_BYTES else head
    try:
        return base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, "not valid Base64") from None


def check_image(image: Image, field: str) -> ImageInfo | None:
    """Check one input image against every rule that can be checked locally.

    Reads a file's header for path images (blocking I/O). Returns the header facts, or
    ``None`` for a URL (only its scheme can be checked without fetching it).

    Raises:
        InvalidRequest: naming ``field`` and the rule.
    """

    if image.origin is ImageOrigin.URL:
        assert isinstance(image.source, str)
        check_url(image.source, field)
        return None
    if image.origin is ImageOrigin.PATH:
        assert isinstance(image.source, pathlib.Path)
        return read_image_file(image.source, field)
    if image.origin is ImageOrigin.BYTES:
        assert isinstance(image.source, bytes)
        return validate_image_bytes(image.source, field)
    assert isinstance(image.source, str)
    text = image.source
    if text.lstrip()[:5].lower() == "data:":
        raise InvalidRequest(field, "Base64 must be raw, without a data: prefix")
    _check_size(decoded_base64_size(text), field)
    head = _decode_base64_head(text, field)
    try:
        info, header_end = _sniff_header(head, field)
    except _NeedMore:
        info = _check_bytes_end(_decode_base64_head_full(text, field), field)
    else:
        tail, tail_start = _decode_base64_tail(text, field)
        if not _has_end(info, tail, tail_start, header_end):
            # Data after the marker (or none): decode it all (<= 10 MB) and search.
            _check_bytes_end(_decode_base64_head_full(text, field), field)
    return _check_info(info, field)


def _decode_base64_tail(text: str, field: str) -> tuple[bytes, int]:
    """The last bytes a Base64 text decodes to, and their offset (without decoding it all)."""
    compact = "".join(text[-2 * _TAIL_BYTES :].split())
    if len(text) > 2 * _TAIL_BYTES:
        # Whole 4-character groups only; the text's end is aligned when it is valid Base64.
        compact = compact[len(compact) % 4 :]
    try:
        tail = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, "not valid Base64") from None
    if len(text) <= 2 * _TAIL_BYTES:
        return tail, 0
    # Whitespace makes this offset too high, which only widens the region searched.
    return tail, decoded_base64_size(text) - len(tail)


def _decode_base64_head_full(text: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, "not valid Base64") from None


def _request_images(request: Request) -> list[tuple[str, Image]]:
    from .._core.models import MultiImageToVideo  # noqa: PLC0415 - _models imports this module

    if isinstance(request, MultiImageToVideo):
        found = [(f"image_list[{i}]", image) for i, image in enumerate(request.images)]
        if request.static_mask is not None:
            found.append(("static_mask", request.static_mask))
        found.extend(
            (f"dynamic_masks[{i}].mask", mask.mask) for i, mask in enumerate(request.dynamic_masks)
        )
        return found
    found = [(f"subject_image_list[{i}]", image) for i, image in enumerate(request.images)]
    if request.scene_image is not None:
        found.append(("scene_image", request.scene_image))
    if request.style_image is not None:
        found.append(("style_image", request.style_image))
    return found


def check_rules(request: Request, rules: Rules | None, *, strict: bool = True) -> None:
    """Check a request against a profile's documented rules (no I/O).

    Args:
        request: The request.
        rules: The profile's rules; None checks nothing here.
        strict: False sends past a broken rule, logging each as a warning (never silent).

    Raises:
        InvalidRequest: ``strict`` and a rule is broken (naming the profile and the way past).
    """
    if rules is None:
        return
    if strict:
        rules.check(request)
        return
    for broken in rules.violations(request):
        logger.warning(
            "strict_rules=False: sending %s past a documented rule of the %s profile: %s",
            broken.field,
            rules.name,
            broken.rule,
        )


def validate_request(
    request: Request, rules: Rules | None = COMETAPI_RULES, *, strict: bool = True
) -> None:
    """Check a request against a profile's rules and every image rule (blocking I/O).

    Masks must have the resolution (so the aspect ratio) of the first input image whose
    bytes are local; with only URL inputs that rule is left to the server.

    Args:
        request: The request.
        rules: The documented rules of the profile it goes to (``profile.rules``); the
            default profile's (CometAPI) unless given. None checks only the images.
        strict: False lets a request past a broken profile rule, logging a warning each
            time (for a server that accepts more than its pages say).

    Raises:
        InvalidRequest: The first rule broken, with the field path.
    """
    check_rules(request, rules, strict=strict)
    infos: dict[str, ImageInfo] = {}
    for field, image in _request_images(request):
        info = check_image(image, field)
        if info is not None:
            infos[field] = info
    reference = next(
        ((f, i) for f, i in infos.items() if f.startswith("image_list[")),
        None,
    )
    if reference is None:
        return
    ref_field, ref = reference
    for field, info in infos.items():
        if "mask" in field and (info.width, info.height) != (ref.width, ref.height):
            raise InvalidRequest(
                field,
                f"mask is {info} but {ref_field} is {ref}: a mask must have the same "
                "resolution and aspect ratio as the input images",
            )


def _needs_thread(request: Request) -> bool:

    return any(
        image.origin is ImageOrigin.PATH
        or (isinstance(image.source, bytes | str) and len(image.source) > _OFFLOAD_BYTES)
        for _, image in _request_images(request)
    )


async def check_request(
    request: Request, rules: Rules | None = COMETAPI_RULES, *, strict: bool = True
) -> None:
    """Like :func:`validate_request`, reading files in a worker thread.

    Raises:
        InvalidRequest: The first rule broken, with the field path.
    """
    check_rules(request, rules, strict=strict)  # before any file is read
    if _needs_thread(request):
        await anyio.to_thread.run_sync(validate_request, request, None)
    else:
        validate_request(request, None)


def _read_and_encode(path: pathlib.Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


async def encode_path(path: pathlib.Path) -> str:
    """Read a file and return its Base64 text, off the event loop."""
    try:
        return await anyio.to_thread.run_sync(_read_and_encode, path)
    except OSError as exc:
        raise InvalidRequest("image", f"cannot read {path}: {exc.strerror or exc}") from None


async def encode_image(image: Image) -> str:
    """Return an image's wire form: the URL, or Base64 (files read off the event loop)."""
    if image.origin is ImageOrigin.PATH:
        assert isinstance(image.source, pathlib.Path)
        return await encode_path(image.source)
    if image.origin is ImageOrigin.BYTES:
        assert isinstance(image.source, bytes)
        return await encode_bytes(image.source)
    assert isinstance(image.source, str)
    return image.source


async def encode_bytes(data: bytes) -> str:
    """Return the Base64 text of ``data``; large buffers are encoded off the event loop."""
    if len(data) > _OFFLOAD_BYTES:
        encoded = await anyio.to_thread.run_sync(base64.b64encode, data)
    else:
        encoded = base64.b64encode(data)
    return encoded.decode("ascii")
