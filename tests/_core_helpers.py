"""Image bytes and HTTP answers built by hand for the core tests."""

import io
import json
import struct
import zlib
from typing import Any

from PIL import Image as PILImage

from kling_async import HttpResponse

CANARY_KEY = "sk-CANARY-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int, height: int) -> bytes:
    """A complete, decodable grey PNG built with struct and zlib."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def jpeg_header(width: int, height: int, *, app_padding: int = 0, sof: int = 0xC0) -> bytes:
    """A JPEG header (SOI, APP0 JFIF, optional big APP1, SOF) built by hand."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    parts = [b"\xff\xd8", b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0]
    while app_padding > 0:
        size = min(app_padding, 65000)
        parts.append(b"\xff\xe1" + struct.pack(">H", size + 2) + b"\x00" * size)
        app_padding -= size
    frame = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    parts.append(bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame)
    parts.append(b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00")
    return b"".join(parts) + b"\x00" * 16 + b"\xff\xd9"


def pil_image(width: int, height: int, fmt: str = "PNG", **options: Any) -> bytes:
    """A real image encoded by Pillow."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (120, 30, 200)).save(buffer, fmt, **options)
    return buffer.getvalue()


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> HttpResponse:
    """An HttpResponse with a JSON body."""
    return HttpResponse(
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def ok(data: object) -> dict[str, Any]:
    """A Kling success envelope."""
    return {"code": 0, "message": "SUCCEED", "request_id": "req-ok", "data": data}


def task_body(task_id: str = "861309198188019719", status: str = "submitted") -> dict[str, Any]:
    """A minimal Kling task object."""
    return {
        "task_id": task_id,
        "task_status": status,
        "task_info": {},
        "created_at": 1773380633979,
        "updated_at": 1773380633979,
    }
