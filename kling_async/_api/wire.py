"""The wire: Python names <-> wire names, both response shapes, journal records.

One cattrs converter (:data:`converter`) reads task bodies leniently (unknown keys
ignored, ``{}``/``null``/missing tolerated) and turns anything else into
:class:`~kling_async.MalformedResponse` with the JSON path of the bad value. Requests
are written strictly: only fields that are set go on the wire.
"""

import base64
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs

from .._core.errors import InvalidRequest, MalformedResponse
from .._core.models import (
    Duration,
    DynamicMask,
    GeneratedImage,
    Image,
    ImageAspectRatio,
    ImageOrigin,
    Kind,
    Mode,
    MultiImageToImage,
    MultiImageToVideo,
    Point,
    Request,
    Task,
    TaskStatus,
    Video,
    VideoAspectRatio,
)
from .images import encode_image

__all__ = [
    "COMETAPI_SCENE_FIELD",
    "KLING_SCENE_FIELD",
    "converter",
    "parse_task",
    "parse_task_list",
    "request_from_record",
    "request_from_wire",
    "request_to_record",
    "request_to_wire",
    "task_to_wire",
]

#: CometAPI's documented spelling of the scene image field.
COMETAPI_SCENE_FIELD: Final = "scence_image"
#: Kling's own spelling.
KLING_SCENE_FIELD: Final = "scene_image"

# Status spellings seen besides Kling's own (the wrapped CometAPI shape uses upper case).
_STATUS_ALIASES: Final = {
    "submitted": TaskStatus.SUBMITTED,
    "queued": TaskStatus.SUBMITTED,
    "not_start": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "in_progress": TaskStatus.PROCESSING,
    "running": TaskStatus.PROCESSING,
    "succeed": TaskStatus.SUCCEEDED,
    "succeeded": TaskStatus.SUCCEEDED,
    "success": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "failure": TaskStatus.FAILED,
}

converter: Final = cattrs.Converter(forbid_extra_keys=False)
"""The one converter of kling_async: task bodies and journal records."""


# --- reading task bodies -------------------------------------------------------------


@attrs.frozen
class _WireInfo:
    external_task_id: str | None = None


@attrs.frozen
class _WireResult:
    videos: list[Video] | None = None
    images: list[GeneratedImage] | None = None


@attrs.frozen
class _WireTask:
    task_id: str
    task_status: TaskStatus
    task_status_msg: str | None = None
    task_info: _WireInfo | None = None
    task_result: _WireResult | None = None
    final_unit_deduction: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    progress: Any = None


def _progress(value: object) -> float | None:
    """A ``progress`` value as a share 0..1 ("50%", 50 and 0.5 alike); None when unreadable."""
    if isinstance(value, str):
        text = value.strip().rstrip("%")
        try:
            number = float(text)
        except ValueError:
            return None
        share = number / 100 if value.strip().endswith("%") or number > 1 else number
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = value / 100 if value > 1 else float(value)
    else:
        return None
    return share if 0.0 <= share <= 1.0 else None


def _structure_str(value: object, _: type) -> str:
    # Ids are documented as strings; a number is accepted and kept as its digits.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _structure_status(value: object, _: type) -> TaskStatus:
    status = _STATUS_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
    if status is None:
        raise ValueError(f"unknown task status {value!r}")
    return status


def _structure_optional_object(cls: type) -> Any:
    hook: Any = None

    def structure(value: object, _: object) -> object:
        nonlocal hook
        # ``null``, ``{}`` and (seen from PHP back ends) ``[]`` all mean "nothing yet".
        if value is None or value == []:
            return None
        if hook is None:  # fetched on first use: the class's hook is built on demand
            hook = converter.get_structure_hook(cls)
        return hook(value, cls)

    return structure


def _is_optional(candidate: object) -> bool:
    args = typing.get_args(candidate)
    return (
        typing.get_origin(candidate) in (types.UnionType, typing.Union)
        and len(args) == 2
        and types.NoneType in args
    )


def _optional(union: Any) -> Any:
    # cattrs' own ``X | None`` hook looks up the hook of X on every call; this one binds it
    # once (the same behaviour: None stays None, anything else is structured as X).
    (inner,) = (arg for arg in typing.get_args(union) if arg is not types.NoneType)
    inner_hook = converter.get_structure_hook(inner)

    def structure(value: object, _: object) -> object:
        return None if value is None else inner_hook(value, inner)

    return structure


def _is_optional_of(cls: type) -> Any:
    target = cls | None
    return lambda candidate: candidate == target


def _is_mapping(value: object) -> typing.TypeGuard[Mapping[str, Any]]:
    # Decoded JSON objects are dicts: the exact type check spares the ABC machinery.
    return type(value) is dict or isinstance(value, Mapping)


def _mapping_only(cls: type) -> Any:
    # cattrs reads attrs classes from any container; a string or list must not pass.
    inner: Any = converter.gen_structure_attrs_fromdict(cls)

    def structure(value: object, _: object) -> object:
        if not _is_mapping(value):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return inner(value, cls)

    return structure


converter.register_structure_hook_factory(attrs.has, _mapping_only)
converter.register_structure_hook_factory(_is_optional, _optional)
converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(TaskStatus, _structure_status)
for _cls in (_WireInfo, _WireResult):
    converter.register_structure_hook_func(_is_optional_of(_cls), _structure_optional_object(_cls))


def _describe(exc: BaseException, _: object) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    return f"invalid value ({type(exc).__name__})"


def _malformed(exc: Exception, path: str) -> MalformedResponse:
    if isinstance(exc, cattrs.BaseValidationError):
        first = cattrs.transform_error(exc, path=path, format_exception=_describe)[0]
        message, _, where = first.rpartition(" @ ")
        return MalformedResponse(f"unexpected task body: {message}", path=where or path)
    return MalformedResponse(f"unexpected task body: {exc}", path=path)


def _unwrap(data: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], str]:
    """Turn the wrapped CometAPI shape (``status`` + nested ``data``) into a Kling task."""
    if "task_status" in data or not isinstance(data.get("data"), Mapping):
        return data, path
    task = dict(data["data"])
    if "task_status" not in task and "status" in data:
        task["task_status"] = data["status"]
    if "task_id" not in task and "task_id" in data:
        task["task_id"] = data["task_id"]
    if task.get("task_status_msg") is None and data.get("fail_reason"):
        task["task_status_msg"] = data["fail_reason"]
    return task, f"{path}.data"


# Bound once: ``converter.structure`` would look the hook up again on every task read.
_structure_wire_task: Final = converter.get_structure_hook(_WireTask)


def parse_task(data: object, *, path: str = "$.data") -> Task:
    """Read a task object (native Kling shape or the wrapped CometAPI shape).

    Args:
        data: The decoded JSON value (the envelope's ``data``, a list item, a callback body).
        path: JSON path of ``data`` for error messages.

    Raises:
        MalformedResponse: The value is not a task; ``.path`` names the bad value.
    """
    if not _is_mapping(data):
        raise MalformedResponse(f"expected a task object, got {type(data).__name__}", path=path)
    body, path = _unwrap(data, path)
    try:
        wire = _structure_wire_task(body, _WireTask)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _malformed(exc, path) from exc
    result = wire.task_result or _WireResult()
    return Task(
        task_id=wire.task_id,
        status=wire.task_status,
        status_message=wire.task_status_msg,
        external_task_id=wire.task_info.external_task_id if wire.task_info else None,
        videos=tuple(result.videos or ()),
        images=tuple(result.images or ()),
        created_at=wire.created_at,
        updated_at=wire.updated_at,
        units_charged=wire.final_unit_deduction,
        progress=_progress(wire.progress),
    )


def parse_task_list(data: object, *, path: str = "$.data") -> list[Task]:
    """Read the ``data`` of a list answer: an array of task objects (``null`` = empty).

    Raises:
        MalformedResponse: naming the path of the first bad item.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        raise MalformedResponse(f"expected a list of tasks, got {type(data).__name__}", path=path)
    return [parse_task(item, path=f"{path}[{index}]") for index, item in enumerate(data)]


def task_to_wire(task: Task) -> dict[str, Any]:
    """Write a task in Kling's native shape (the simulator and webhooks use it)."""
    result: dict[str, Any] = {}
    if task.videos:
        result["videos"] = [converter.unstructure(video) for video in task.videos]
    if task.images:
        result["images"] = [converter.unstructure(image) for image in task.images]
    body: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": "succeed" if task.status is TaskStatus.SUCCEEDED else task.status.value,
        "task_status_msg": task.status_message,
        "task_info": ({"external_task_id": task.external_task_id} if task.external_task_id else {}),
        "task_result": result,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }
    if task.units_charged is not None:
        body["final_unit_deduction"] = task.units_charged
    return body


# --- writing requests ----------------------------------------------------------------


async def request_to_wire(
    request: Request, *, scene_image_field: str = COMETAPI_SCENE_FIELD
) -> dict[str, Any]:
    """Build the JSON body of a create; files are read and encoded now, off the loop.

    Args:
        request: The request (already validated).
        scene_image_field: Wire name of ``scene_image`` (a profile setting).

    Raises:
        InvalidRequest: A file could not be read.
    """
    body: dict[str, Any] = {"model_name": request.model_name}
    if isinstance(request, MultiImageToVideo):
        body["image_list"] = [{"image": await encode_image(image)} for image in request.images]
    else:
        body["subject_image_list"] = [
            {"subject_image": await encode_image(image)} for image in request.images
        ]
    if request.prompt:
        body["prompt"] = request.prompt
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if isinstance(request, MultiImageToVideo):
        body["mode"] = request.mode.value
        body["duration"] = request.duration.value
        if request.aspect_ratio is not None:
            body["aspect_ratio"] = request.aspect_ratio.value
        if request.cfg_scale is not None:
            body["cfg_scale"] = request.cfg_scale
        if request.static_mask is not None:
            body["static_mask"] = await encode_image(request.static_mask)
        if request.dynamic_masks:
            body["dynamic_masks"] = [
                {
                    "mask": await encode_image(mask.mask),
                    "trajectories": [{"x": p.x, "y": p.y} for p in mask.trajectories],
                }
                for mask in request.dynamic_masks
            ]
    else:
        if request.scene_image is not None:
            body[scene_image_field] = await encode_image(request.scene_image)
        if request.style_image is not None:
            body["style_image"] = await encode_image(request.style_image)
        body["n"] = request.n
        body["aspect_ratio"] = request.aspect_ratio.value
    if request.callback_url is not None:
        body["callback_url"] = request.callback_url
    if request.external_task_id is not None:
        body["external_task_id"] = request.external_task_id
    return body


def _wire_image(text: str) -> Image:
    if text.startswith(("http://", "https://")):
        return Image.from_url(text)
    return Image.from_base64(text)


def request_from_wire(kind: Kind, body: Mapping[str, Any]) -> Request:
    """Read a create body back into a request (the inverse of :func:`request_to_wire`).

    Image strings become URL or Base64 images. Both scene spellings are accepted.

    Raises:
        InvalidRequest: A value breaks a rule.
        KeyError, TypeError: The body lacks the image list or has the wrong types.
    """
    common: dict[str, Any] = {
        key: body[key]
        for key in ("model_name", "prompt", "negative_prompt", "callback_url", "external_task_id")
        if key in body
    }
    if kind is Kind.VIDEO:
        return MultiImageToVideo(
            images=[_wire_image(item["image"]) for item in body["image_list"]],
            mode=body.get("mode", Mode.STD),
            duration=body.get("duration", Duration.FIVE),
            aspect_ratio=body.get("aspect_ratio"),
            cfg_scale=body.get("cfg_scale"),
            static_mask=_wire_image(body["static_mask"]) if body.get("static_mask") else None,
            dynamic_masks=[
                DynamicMask(
                    mask=_wire_image(group["mask"]),
                    trajectories=[Point(p["x"], p["y"]) for p in group["trajectories"]],
                )
                for group in body.get("dynamic_masks") or ()
            ],
            **common,
        )
    scene = body.get(KLING_SCENE_FIELD) or body.get(COMETAPI_SCENE_FIELD)
    return MultiImageToImage(
        images=[_wire_image(item["subject_image"]) for item in body["subject_image_list"]],
        scene_image=_wire_image(scene) if scene else None,
        style_image=_wire_image(body["style_image"]) if body.get("style_image") else None,
        n=body.get("n", 1),
        aspect_ratio=body.get("aspect_ratio", ImageAspectRatio.R16_9),
        **common,
    )


# --- journal records -----------------------------------------------------------------


def _image_to_record(image: Image) -> dict[str, str]:
    if image.origin is ImageOrigin.PATH:
        assert isinstance(image.source, pathlib.Path)
        return {"path": str(image.source.absolute())}
    if image.origin is ImageOrigin.BYTES:
        assert isinstance(image.source, bytes)
        return {"bytes": base64.b64encode(image.source).decode("ascii")}
    assert isinstance(image.source, str)
    return {image.origin.value: image.source}


def _image_from_record(record: object, _: type) -> Image:
    if not isinstance(record, Mapping) or len(record) != 1:
        raise ValueError(f"an image record has one of path/bytes/url/base64, got {record!r}")
    ((origin, value),) = record.items()
    if origin == "path":
        return Image.from_path(pathlib.Path(value))
    if origin == "bytes":
        return Image.from_bytes(base64.b64decode(value))
    if origin == "url":
        return Image.from_url(value)
    if origin == "base64":
        return Image.from_base64(value)
    raise ValueError(f"unknown image origin {origin!r}")


def _point_from_record(value: object, _: type) -> Point:
    if isinstance(value, Mapping):
        return Point(value["x"], value["y"])
    if isinstance(value, list | tuple):
        return Point(*value)
    raise ValueError(f"expected a point, got {value!r}")


converter.register_unstructure_hook(Image, _image_to_record)
converter.register_structure_hook(Image, _image_from_record)
converter.register_structure_hook(Point, _point_from_record)
converter.register_structure_hook(float, lambda value, _: value)
for _enum in (Mode, Duration, VideoAspectRatio, ImageAspectRatio):
    converter.register_structure_hook(_enum, lambda value, cls: cls(value))


def request_to_record(request: Request) -> dict[str, Any]:
    """Turn a request into a JSON-able dict for the journal (no file is read).

    Images become ``{"path": abs}``, ``{"url": ...}``, ``{"base64": ...}`` or
    ``{"bytes": base64}``.
    """
    record: dict[str, Any] = converter.unstructure(request)
    record["kind"] = request.kind.value
    return record


def request_from_record(record: Mapping[str, Any]) -> Request:
    """Rebuild a request from :func:`request_to_record` output.

    Raises:
        InvalidRequest: A value breaks a rule (the record was edited).
        ValueError: The record is not a request record.
    """
    fields = dict(record)
    kind = Kind(fields.pop("kind"))
    cls: type[Request] = MultiImageToVideo if kind is Kind.VIDEO else MultiImageToImage
    try:
        return converter.structure(fields, cls)
    except cattrs.BaseValidationError as exc:
        invalid = _find_invalid(exc)
        if invalid is not None:
            raise invalid from exc
        raise ValueError(f"bad request record: {cattrs.transform_error(exc)}") from exc


def _find_invalid(exc: BaseException) -> InvalidRequest | None:
    if isinstance(exc, InvalidRequest):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_invalid(inner)
            if found is not None:
                return found
    return None
