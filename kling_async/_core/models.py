"""Typed, frozen models: requests, input images, tasks and their results.

Models know nothing of JSON (that is ``_api/wire.py``) nor of I/O. Value rules that need no
image bytes (counts, lengths, ranges) are checked when a model is built, as far as they
hold for every profile (the widest documented bounds); a profile's own, narrower rules
(``Profile.rules``) and the rules that need the image bytes are checked by
:func:`kling_async.validate_request`.
"""

import enum
import math
import os
import pathlib
from collections.abc import Iterable
from typing import Any, ClassVar, Final, TypeAlias, TypeVar

import attrs

from .errors import InvalidRequest

__all__ = [
    "Duration",
    "DynamicMask",
    "GeneratedImage",
    "Image",
    "ImageAspectRatio",
    "ImageOrigin",
    "Kind",
    "Mode",
    "MultiImageToImage",
    "MultiImageToVideo",
    "Point",
    "Request",
    "Status",
    "Task",
    "TaskStatus",
    "Video",
    "VideoAspectRatio",
    "check_url",
]

# Bounds that hold for every profile (the widest any documents); CometAPI's 500/200
# characters for video prompts are its profile's rules (_api/profiles.py).
MAX_VIDEO_PROMPT: Final = 2500
MAX_VIDEO_NEGATIVE_PROMPT: Final = 2500
MAX_IMAGE_PROMPT: Final = 2500
MAX_IMAGE_NEGATIVE_PROMPT: Final = 2500
MIN_IMAGES: Final = 1
MAX_IMAGES: Final = 4
MAX_MASK_GROUPS: Final = 6
MIN_POINTS: Final = 2
MAX_POINTS: Final = 77
MAX_N: Final = 9

_E = TypeVar("_E", bound=enum.Enum)


class Kind(enum.Enum):
    """The two job kinds (and resource types of the account's concurrency limit)."""

    VIDEO = "video"
    IMAGE = "image"


class Status(enum.Enum):
    """The one status vocabulary: where a task stands on the server, and how a job ended.

    A :class:`Task` is SUBMITTED, PROCESSING, SUCCEEDED or FAILED (Kling spells success
    ``succeed`` on the wire). A job's :class:`Outcome` is SUCCEEDED, FAILED, TIMED_OUT
    (its deadline passed; the task may still run), STOPPED (the batch stopped before
    the job was sent) or DOWNLOAD_FAILED (the task succeeded, its files did not arrive).
    """

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    DOWNLOAD_FAILED = "download_failed"
    """A job's task succeeded (and was paid for) but its files did not arrive; a resume
    of the journal downloads them again while the URLs last."""

    @classmethod
    def _missing_(cls, value: object) -> "Status | None":
        return cls.SUCCEEDED if value == "succeed" else None  # Kling's wire spelling

    @property
    def is_terminal(self) -> bool:
        """True once the task or job has ended (anything but SUBMITTED and PROCESSING)."""
        return self not in (Status.SUBMITTED, Status.PROCESSING)


TaskStatus = Status
"""The name the engine and wire code use for a task's :class:`Status`."""


class Mode(enum.Enum):
    """Video generation mode."""

    STD = "std"
    PRO = "pro"


class Duration(enum.Enum):
    """Video length in seconds (a string on the wire)."""

    FIVE = "5"
    TEN = "10"


class VideoAspectRatio(enum.Enum):
    """Aspect ratios of a generated video."""

    R16_9 = "16:9"
    R9_16 = "9:16"
    R1_1 = "1:1"


class ImageAspectRatio(enum.Enum):
    """Aspect ratios of a generated image."""

    R16_9 = "16:9"
    R9_16 = "9:16"
    R1_1 = "1:1"
    R4_3 = "4:3"
    R3_4 = "3:4"
    R3_2 = "3:2"
    R2_3 = "2:3"
    R21_9 = "21:9"


class ImageOrigin(enum.Enum):
    """Where an :class:`Image` comes from."""

    PATH = "path"
    BYTES = "bytes"
    URL = "url"
    BASE64 = "base64"


def check_url(url: str, field: str = "image") -> None:
    """Refuse anything but an http(s) URL with a host.

    Raises:
        InvalidRequest: naming ``field``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise InvalidRequest(field, f"URL must be http(s), got {url[:40]!r}")
    if not rest or rest[0] in "/?#":
        raise InvalidRequest(field, f"URL has no host: {url[:40]!r}")


def _source_repr(source: pathlib.Path | bytes | str) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, str) and len(source) > 80:
        return f"<{len(source)} chars>"
    return repr(source)


@attrs.frozen
class Image:
    """One input image; build it with a named constructor.

    ``Image.from_path``, ``Image.from_bytes``, ``Image.from_url``, ``Image.from_base64``.
    A file is read and Base64-encoded only when the request is sent.
    """

    origin: ImageOrigin
    source: pathlib.Path | bytes | str = attrs.field(repr=_source_repr)

    @classmethod
    def from_path(cls, path: "str | os.PathLike[str]") -> "Image":
        """An image in a local PNG/JPEG file (read lazily, at send time)."""
        return cls(ImageOrigin.PATH, pathlib.Path(path))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> "Image":
        """An image held in memory as PNG/JPEG bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"Image.from_bytes needs bytes, got {type(data).__name__}")
        return cls(ImageOrigin.BYTES, bytes(data))

    @classmethod
    def from_url(cls, url: str) -> "Image":
        """An image at a public http(s) URL (the server fetches it).

        Raises:
            InvalidRequest: The URL is not http(s).
        """
        check_url(url)
        return cls(ImageOrigin.URL, url)

    @classmethod
    def from_base64(cls, text: str) -> "Image":
        """An image as raw Base64 text (no ``data:`` prefix).

        Raises:
            InvalidRequest: The text starts with ``data:`` or is empty.
        """
        if text.lstrip()[:5].lower() == "data:":
            raise InvalidRequest("image", "Base64 must be raw, without a data: prefix")
        if not text.strip():
            raise InvalidRequest("image", "empty Base64 text")
        return cls(ImageOrigin.BASE64, text)


def _to_point(value: "Point | tuple[int, int] | Any") -> "Point":
    if isinstance(value, Point):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return Point(value[0], value[1])
    raise TypeError(f"a trajectory point is Point(x, y) or (x, y), got {value!r}")


def _check_coordinate(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(attribute.name, f"must be an int, got {value!r}")
    if value < 0:
        raise InvalidRequest(attribute.name, f"{value} is negative (pixel coordinates)")


@attrs.frozen
class Point:
    """A trajectory point in pixels of the mask, origin at the bottom-left corner."""

    x: int = attrs.field(validator=_check_coordinate)
    y: int = attrs.field(validator=_check_coordinate)


def _to_points(values: Iterable["Point | tuple[int, int]"]) -> tuple[Point, ...]:
    return tuple(_to_point(value) for value in values)


def _check_trajectories(
    instance: object, attribute: "attrs.Attribute[tuple[Point, ...]]", value: tuple[Point, ...]
) -> None:
    if not MIN_POINTS <= len(value) <= MAX_POINTS:
        raise InvalidRequest(
            "trajectories", f"{len(value)} points, must be {MIN_POINTS} to {MAX_POINTS}"
        )


def _check_image_type(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is not None and not isinstance(value, Image):
        raise TypeError(f"{attribute.name} must be an Image, got {type(value).__name__}")


@attrs.frozen
class DynamicMask:
    """A motion brush: the area painted in ``mask`` moves along ``trajectories``."""

    mask: Image = attrs.field(validator=_check_image_type)
    trajectories: tuple[Point, ...] = attrs.field(
        converter=_to_points, validator=_check_trajectories
    )


def _to_images(values: Iterable[Image]) -> tuple[Image, ...]:
    return tuple(values)


def _to_masks(values: Iterable["DynamicMask"]) -> tuple["DynamicMask", ...]:
    return tuple(values)


def _check_images(
    instance: object, attribute: "attrs.Attribute[tuple[Image, ...]]", value: tuple[Image, ...]
) -> None:
    wire = "image_list" if isinstance(instance, MultiImageToVideo) else "subject_image_list"
    if not MIN_IMAGES <= len(value) <= MAX_IMAGES:
        raise InvalidRequest(wire, f"{len(value)} images, must be {MIN_IMAGES} to {MAX_IMAGES}")
    for index, image in enumerate(value):
        if not isinstance(image, Image):
            raise TypeError(f"{wire}[{index}] must be an Image, got {type(image).__name__}")


def _max_length(limit: int) -> Any:
    def check(instance: object, attribute: "attrs.Attribute[str]", value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{attribute.name} must be a str, got {type(value).__name__}")
        if len(value) > limit:
            raise InvalidRequest(
                attribute.name, f"{len(value)} characters, at most {limit} allowed"
            )

    return check


def _check_model_name(instance: object, attribute: "attrs.Attribute[str]", value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("model_name", f"must be a non-empty string, got {value!r}")


def _check_optional_url(
    instance: object, attribute: "attrs.Attribute[str | None]", value: str | None
) -> None:
    if value is not None:
        check_url(value, attribute.name)


def _check_external_id(
    instance: object, attribute: "attrs.Attribute[str | None]", value: str | None
) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidRequest("external_task_id", f"must be a non-empty string, got {value!r}")


def _check_cfg_scale(
    instance: object, attribute: "attrs.Attribute[float | None]", value: float | None
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidRequest("cfg_scale", f"must be a number, got {value!r}")
    if not 0 <= value <= 1:
        raise InvalidRequest("cfg_scale", f"{value} is outside 0..1")


def _check_dynamic_masks(
    instance: object,
    attribute: "attrs.Attribute[tuple[DynamicMask, ...]]",
    value: tuple[DynamicMask, ...],
) -> None:
    if len(value) > MAX_MASK_GROUPS:
        raise InvalidRequest("dynamic_masks", f"{len(value)} groups, at most {MAX_MASK_GROUPS}")
    for index, mask in enumerate(value):
        if not isinstance(mask, DynamicMask):
            raise TypeError(f"dynamic_masks[{index}] must be a DynamicMask")


def _check_n(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("n", f"must be an int, got {value!r}")
    if not 1 <= value <= MAX_N:
        raise InvalidRequest("n", f"{value} is outside 1..{MAX_N}")


def _to_enum(enum_type: type[_E], field: str, value: object) -> _E:
    if isinstance(value, enum_type):
        return value
    try:
        # Accept the wire value too, and ints for durations (5 -> "5").
        return enum_type(str(value) if isinstance(value, int) else value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_type)
        raise InvalidRequest(field, f"{value!r} is not one of {allowed}") from None


def _to_mode(value: object) -> Mode:
    return _to_enum(Mode, "mode", value)


def _to_duration(value: object) -> Duration:
    return _to_enum(Duration, "duration", value)


def _to_video_ratio(value: object) -> VideoAspectRatio | None:
    return None if value is None else _to_enum(VideoAspectRatio, "aspect_ratio", value)


def _to_image_ratio(value: object) -> ImageAspectRatio:
    return _to_enum(ImageAspectRatio, "aspect_ratio", value)


@attrs.frozen(kw_only=True)
class MultiImageToVideo:
    """A video made from 1 to 4 reference images (``POST .../multi-image2video``).

    Built, it holds within the bounds every profile shares (1 to 4 images, prompts up to
    2,500 characters); the profile's own rules (CometAPI: 500/200 characters, no masks,
    ``kling-v1-6`` only) are checked by the client before sending.
    """

    kind: ClassVar[Kind] = Kind.VIDEO

    images: tuple[Image, ...] = attrs.field(converter=_to_images, validator=_check_images)
    prompt: str = attrs.field(default="", validator=_max_length(MAX_VIDEO_PROMPT))
    negative_prompt: str = attrs.field(default="", validator=_max_length(MAX_VIDEO_NEGATIVE_PROMPT))
    model_name: str = attrs.field(default="kling-v1-6", validator=_check_model_name)
    mode: Mode = attrs.field(default=Mode.STD, converter=_to_mode)
    duration: Duration = attrs.field(default=Duration.FIVE, converter=_to_duration)
    aspect_ratio: VideoAspectRatio | None = attrs.field(default=None, converter=_to_video_ratio)
    cfg_scale: float | None = attrs.field(default=None, validator=_check_cfg_scale)
    static_mask: Image | None = attrs.field(default=None, validator=_check_image_type)
    dynamic_masks: tuple[DynamicMask, ...] = attrs.field(
        default=(), converter=_to_masks, validator=_check_dynamic_masks
    )
    callback_url: str | None = attrs.field(default=None, validator=_check_optional_url)
    external_task_id: str | None = attrs.field(default=None, validator=_check_external_id)

    @property
    def slots(self) -> int:
        """Account concurrency slots the task holds while running (always 1)."""
        return 1


@attrs.frozen(kw_only=True)
class MultiImageToImage:
    """An image made from 1 to 4 subject images (``POST .../images/generations``).

    ``model_name`` defaults to ``kling-v2-1`` ("use kling-v2-1 for new requests");
    ``kling-v2`` is still documented.
    """

    kind: ClassVar[Kind] = Kind.IMAGE

    images: tuple[Image, ...] = attrs.field(converter=_to_images, validator=_check_images)
    prompt: str = attrs.field(default="", validator=_max_length(MAX_IMAGE_PROMPT))
    negative_prompt: str = attrs.field(default="", validator=_max_length(MAX_IMAGE_NEGATIVE_PROMPT))
    model_name: str = attrs.field(default="kling-v2-1", validator=_check_model_name)
    scene_image: Image | None = attrs.field(default=None, validator=_check_image_type)
    style_image: Image | None = attrs.field(default=None, validator=_check_image_type)
    n: int = attrs.field(default=1, validator=_check_n)
    aspect_ratio: ImageAspectRatio = attrs.field(
        default=ImageAspectRatio.R16_9,
        converter=_to_image_ratio,
    )
    callback_url: str | None = attrs.field(default=None, validator=_check_optional_url)
    external_task_id: str | None = attrs.field(default=None, validator=_check_external_id)

    @property
    def slots(self) -> int:
        """Account concurrency slots the task holds while running (``n``)."""
        return self.n


Request: TypeAlias = MultiImageToVideo | MultiImageToImage


@attrs.frozen
class Video:
    """A generated video (its URL expires)."""

    id: str
    url: str
    duration: str | None = None


@attrs.frozen
class GeneratedImage:
    """A generated image (its URL expires)."""

    index: int
    url: str


@attrs.frozen(kw_only=True)
class Task:
    """A task as the server reports it. The kind is not in the body: callers know it."""

    task_id: str
    status: TaskStatus
    status_message: str | None = None
    external_task_id: str | None = None
    videos: tuple[Video, ...] = ()
    images: tuple[GeneratedImage, ...] = ()
    created_at: int | None = None
    updated_at: int | None = None
    units_charged: str | None = None
    progress: float | None = None  # share done (0..1), when the server says (not documented)
