"""Server-side checks of a create body against the API as each surface documents it now.

Written on its own from the docs (checked 2026-11), not from the client's code, so a
test against the simulator checks the client instead of mirroring it:

=====================  ===================  ===================
surface                CometAPI             Kling
=====================  ===================  ===================
video images           1 to 4               1 to 4
video models           kling-v1-6           kling-v1-6
video prompt/negative  500 / 200            2500 / 2500
video masks            refused (400/1201)   accepted
image subject images   1 to 4               1 to 4
image models           kling-v2, kling-v2-1 kling-v2, kling-v2-1
image prompt/negative  2500 / 2500          2500 / 2500
=====================  ===================  ===================
"""

import base64
import binascii
import struct
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "SURFACES",
    "CreateSpec",
    "RequestRejected",
    "SurfaceRules",
    "validate_image_create",
    "validate_video_create",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE = 300
MAX_RATIO = 2.5
VIDEO_MODELS = frozenset({"kling-v1-6"})
IMAGE_MODELS = frozenset({"kling-v2", "kling-v2-1"})
VIDEO_RATIOS = frozenset({"16:9", "9:16", "1:1"})
IMAGE_RATIOS = frozenset({"16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9"})
MAX_DYNAMIC_MASKS = 6
MIN_POINTS, MAX_POINTS = 2, 77
MIN_IMAGES, MAX_IMAGES = 1, 4


@attrs.frozen(kw_only=True)
class SurfaceRules:
    """What one surface (CometAPI's relay or Kling's API) documents for the video endpoint."""

    max_video_prompt: int
    max_video_negative_prompt: int
    masks: bool


SURFACES = {
    "cometapi": SurfaceRules(max_video_prompt=500, max_video_negative_prompt=200, masks=False),
    "kling": SurfaceRules(max_video_prompt=2500, max_video_negative_prompt=2500, masks=True),
}
"""Rules per surface (the keys of ``ROUTES``'s third column)."""


class RequestRejected(Exception):  # noqa: N818 - an answer, not a failure of the simulator
    """A create the server refuses; carries the HTTP status, business code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str) -> RequestRejected:
    return RequestRejected(400, 1201, message)


@attrs.frozen(kw_only=True)
class CreateSpec:
    """What the simulator keeps from a valid create."""

    kind: str
    model_name: str
    inputs: tuple[bytes | None, ...]  # decoded input images; None for a URL it cannot fetch
    background: bytes | None  # the scene image of an image task, when given as Base64
    n: int
    aspect_ratio: str
    duration: str
    callback_url: str | None
    external_task_id: str | None

    @property
    def slots(self) -> int:
        """Account concurrency slots the task holds: 1 for a video, ``n`` for an image task."""
        return self.n if self.kind == "image" else 1


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG or JPEG, or None when it is neither or is cut short.

    The simulator reads images on its own (not through the client's checks), so it
    checks the client instead of mirroring it.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xFF):
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return (width, height) if width and height else None
        if marker in (0xD9, 0xDA) or length < 2:
            return None
        pos += 2 + length
    return None


@attrs.frozen
class _Checked:
    data: bytes | None
    size: tuple[int, int] | None


def _check_image(field: str, value: object) -> _Checked:
    if not isinstance(value, str) or not value:
        raise _bad(f"{field}: must be a non-empty string (an http(s) URL or Base64)")
    if value.startswith(("http://", "https://")):
        return _Checked(None, None)
    if value.startswith("data:"):
        raise _bad(f"{field}: Base64 must not carry a data: prefix")
    # The decoded size, known before decoding a large payload for nothing.
    if len(value) * 3 // 4 - (len(value) - len(value.rstrip("="))) > MAX_IMAGE_BYTES:
        raise _bad(f"{field}: image is larger than 10MB")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{field}: not a URL and not valid Base64") from None
    size = image_size(data)
    if size is None:
        raise _bad(f"{field}: not a readable JPG, JPEG or PNG image")
    width, height = size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise _bad(f"{field}: image must be at least 300x300 px (got {width}x{height})")
    if max(width, height) > MAX_RATIO * min(width, height):
        raise _bad(f"{field}: aspect ratio must be between 1:2.5 and 2.5:1 (got {width}x{height})")
    return _Checked(data, (width, height))


def _optional_text(body: Mapping[str, Any], field: str, limit: int) -> None:
    value = body.get(field)
    if value is None:
        return
    if not isinstance(value, str):
        raise _bad(f"{field}: must be a string")
    if len(value) > limit:
        raise _bad(f"{field}: at most {limit} characters (got {len(value)})")


def _optional_url(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _bad(f"{field}: must be an http(s) URL")
    return value


def _external_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("external_task_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _bad("external_task_id: must be a non-empty string")
    return value


def _model(body: Mapping[str, Any], default: str, allowed: frozenset[str]) -> str:
    value = body.get("model_name", default)
    if not isinstance(value, str):
        raise _bad("model_name: must be a string")
    if value not in allowed:
        raise RequestRejected(404, 1203, f"model_name: {value!r} does not exist for this API")
    return value


def _image_list(body: Mapping[str, Any], field: str, key: str) -> list[_Checked]:
    items = body.get(field)
    if not isinstance(items, list):
        raise _bad(f"{field}: required, a list of {MIN_IMAGES} to {MAX_IMAGES} images")
    if not MIN_IMAGES <= len(items) <= MAX_IMAGES:
        raise _bad(f"{field}: must hold {MIN_IMAGES} to {MAX_IMAGES} images (got {len(items)})")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or key not in item:
            raise _bad(f"{field}[{index}]: must be an object with {key!r}")
        checked.append(_check_image(f"{field}[{index}]", item[key]))
    return checked


def _choice(
    body: Mapping[str, Any], field: str, default: str | None, allowed: frozenset[str]
) -> str | None:
    value = body.get(field, default)
    if value is None:
        return None
    if value not in allowed:
        raise _bad(f"{field}: must be one of {', '.join(sorted(allowed))} (got {value!r})")
    assert isinstance(value, str)
    return value


def validate_video_create(body: object, surface: str = "cometapi") -> CreateSpec:
    """Check a multi-image-to-video create body against ``surface``'s documented rules.

    Raises:
        RequestRejected: 400/1201 naming the field and rule (404/1203 for an unknown model).
    """
    rules = SURFACES[surface]
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = _model(body, "kling-v1-6", VIDEO_MODELS)
    images = _image_list(body, "image_list", "image")
    _optional_text(body, "prompt", rules.max_video_prompt)
    _optional_text(body, "negative_prompt", rules.max_video_negative_prompt)
    if not rules.masks:
        for field in ("static_mask", "dynamic_masks"):
            if body.get(field) is not None:
                raise _bad(f"{field}: not supported on this endpoint; do not send it")
    _choice(body, "mode", "std", frozenset({"std", "pro"}))
    duration = body.get("duration", "5")
    if duration not in ("5", "10"):
        raise _bad(f'duration: must be the string "5" or "10" (got {duration!r})')
    aspect = _choice(body, "aspect_ratio", None, VIDEO_RATIOS)
    cfg = body.get("cfg_scale")
    if cfg is not None and (
        isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 0 <= cfg <= 1
    ):
        raise _bad(f"cfg_scale: must be a number from 0 to 1 (got {cfg!r})")
    first_size = next((image.size for image in images if image.size is not None), None)
    if body.get("static_mask") is not None:
        mask = _check_image("static_mask", body["static_mask"])
        if mask.size is not None and first_size is not None and mask.size != first_size:
            raise _bad(
                "static_mask: must have the same resolution and aspect ratio as the input "
                f"(got {mask.size[0]}x{mask.size[1]}, input {first_size[0]}x{first_size[1]})"
            )
    _check_dynamic_masks(body.get("dynamic_masks"))
    if aspect is None and first_size is not None:
        aspect = (
            "16:9"
            if first_size[0] > first_size[1]
            else "9:16"
            if first_size[0] < first_size[1]
            else "1:1"
        )
    return CreateSpec(
        kind="video",
        model_name=model,
        inputs=tuple(image.data for image in images),
        background=None,
        n=1,
        aspect_ratio=aspect or "16:9",
        duration=duration,
        callback_url=_optional_url(body, "callback_url"),
        external_task_id=_external_id(body),
    )


def _check_dynamic_masks(groups: object) -> None:
    if groups is None:
        return
    if not isinstance(groups, list):
        raise _bad("dynamic_masks: must be a list")
    if len(groups) > MAX_DYNAMIC_MASKS:
        raise _bad(f"dynamic_masks: at most 6 groups (got {len(groups)})")
    for index, group in enumerate(groups):
        field = f"dynamic_masks[{index}]"
        if not isinstance(group, dict):
            raise _bad(f"{field}: must be an object with mask and trajectories")
        _check_image(f"{field}.mask", group.get("mask"))
        points = group.get("trajectories")
        if not isinstance(points, list) or not MIN_POINTS <= len(points) <= MAX_POINTS:
            count = len(points) if isinstance(points, list) else 0
            raise _bad(f"{field}.trajectories: must hold 2 to 77 points (got {count})")
        for p_index, point in enumerate(points):
            if not isinstance(point, dict) or not all(
                isinstance(point.get(axis), int) and not isinstance(point.get(axis), bool)
                for axis in ("x", "y")
            ):
                raise _bad(f"{field}.trajectories[{p_index}]: must be {{'x': int, 'y': int}}")


def validate_image_create(body: object, surface: str = "cometapi") -> CreateSpec:
    """Check a multi-image-to-image create body (accepts ``scence_image`` and ``scene_image``).

    Raises:
        RequestRejected: 400/1201 naming the field and rule (404/1203 for an unknown model).
    """
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    del surface  # both surfaces document the same image rules
    model = _model(body, "kling-v2", IMAGE_MODELS)
    images = _image_list(body, "subject_image_list", "subject_image")
    _optional_text(body, "prompt", 2500)
    _optional_text(body, "negative_prompt", 2500)
    background = None
    for field in ("scence_image", "scene_image"):
        if body.get(field) is not None:
            background = _check_image(field, body[field]).data
    if body.get("style_image") is not None:
        _check_image("style_image", body["style_image"])
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9:
        raise _bad(f"n: must be an integer from 1 to 9 (got {n!r})")
    aspect = _choice(body, "aspect_ratio", "16:9", IMAGE_RATIOS)
    assert aspect is not None
    return CreateSpec(
        kind="image",
        model_name=model,
        inputs=tuple(image.data for image in images),
        background=background,
        n=n,
        aspect_ratio=aspect,
        duration="",
        callback_url=_optional_url(body, "callback_url"),
        external_task_id=_external_id(body),
    )
