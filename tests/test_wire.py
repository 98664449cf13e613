"""The wire: documented fixtures, both task shapes, tolerance, malformed paths, records."""

import asyncio
import base64
import json
import pathlib
import string
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import (
    Duration,
    DynamicMask,
    GeneratedImage,
    Image,
    ImageAspectRatio,
    InvalidRequest,
    Kind,
    MalformedResponse,
    Mode,
    MultiImageToImage,
    MultiImageToVideo,
    Point,
    Request,
    Task,
    Video,
    VideoAspectRatio,
)
from kling_async._api.wire import (
    KLING_SCENE_FIELD,
    parse_task,
    parse_task_list,
    request_from_record,
    request_from_wire,
    request_to_record,
    request_to_wire,
    task_to_wire,
)
from kling_async._core.models import TaskStatus

# Copies of shared/fixtures/api-examples (the documented bodies), kept with the tests.
FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "api-examples"

URL = Image.from_url("https://example.invalid/a.png")


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# --- documented examples ---


def test_fixture_processing_cometapi() -> None:
    """A processing task with an empty result parses."""
    task = parse_task(_fixture("query-processing-cometapi.json")["data"])
    assert task == Task(
        task_id="878106242831892487",
        status=TaskStatus.PROCESSING,
        created_at=1777385361501,
        updated_at=1777385363321,
    )


def test_fixture_create_video_cometapi() -> None:
    """A create answer (no request_id, empty task_info) parses to a submitted task."""
    task = parse_task(_fixture("create-video-cometapi.json")["data"])
    assert (task.task_id, task.status, task.external_task_id) == (
        "861309198188019719",
        TaskStatus.SUBMITTED,
        None,
    )


def test_fixture_create_image_kling() -> None:
    """A create answer without task_info or task_result parses."""
    task = parse_task(_fixture("create-image-kling.json")["data"])
    assert task.status is TaskStatus.SUBMITTED
    assert task.images == ()


def test_fixture_succeed_video() -> None:
    """A succeeded video task exposes its videos, duration as a string, units charged."""
    task = parse_task(_fixture("query-succeed-video-kling.json")["data"])
    assert task.status is TaskStatus.SUCCEEDED
    assert task.videos == (Video(id="string", url="string", duration="5"),)
    assert task.units_charged == "string"
    assert task.external_task_id == "string"


def test_fixture_succeed_images() -> None:
    """A succeeded image task exposes its images; unknown keys are ignored."""
    task = parse_task(_fixture("query-succeed-images-kling.json")["data"])
    assert task.images == (GeneratedImage(index=0, url="string"),)


def test_fixture_failed() -> None:
    """A failed task carries task_status_msg."""
    task = parse_task(_fixture("query-failed.json")["data"])
    assert task.status is TaskStatus.FAILED
    assert task.status_message == "Failure to pass the risk control system"


def test_fixture_null_result() -> None:
    """task_result null and task_status_msg null are tolerated."""
    task = parse_task(_fixture("query-null-result.json")["data"])
    assert task.external_task_id == "job-17"
    assert task.status_message is None


def test_fixture_list() -> None:
    """The list answer is an array of tasks."""
    tasks = parse_task_list(_fixture("list-videos-kling.json")["data"])
    assert [task.task_id for task in tasks] == ["a1", "a2"]
    assert tasks[1].videos[0].duration == "10"
    assert tasks[1].external_task_id == "job-2"


def test_fixture_callback() -> None:
    """A callback body is a bare task object."""
    task = parse_task(_fixture("callback-video.json"), path="$")
    assert task.videos[0].url == "https://example.invalid/v.mp4"


TASK_FIXTURES = [
    "create-image-kling.json",
    "create-video-cometapi.json",
    "query-failed.json",
    "query-null-result.json",
    "query-processing-cometapi.json",
    "query-succeed-images-kling.json",
    "query-succeed-video-kling.json",
]


@pytest.mark.parametrize("name", TASK_FIXTURES)
def test_fixture_round_trips(name: str) -> None:
    """Every documented task parses, writes back in the native shape and parses equal."""
    task = parse_task(_fixture(name)["data"])
    assert parse_task(json.loads(json.dumps(task_to_wire(task)))) == task


def test_all_fixture_files_are_covered() -> None:
    """No documented example is left untested (errors are covered in test_http)."""
    names = {path.name for path in FIXTURES.glob("*.json")}
    tested = {*TASK_FIXTURES, "list-videos-kling.json", "callback-video.json"}
    assert {name for name in names if not name.startswith("error-")} == tested


# --- the wrapped shape ---


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("SUBMITTED", TaskStatus.SUBMITTED),
        ("QUEUED", TaskStatus.SUBMITTED),
        ("IN_PROGRESS", TaskStatus.PROCESSING),
        ("SUCCESS", TaskStatus.SUCCEEDED),
        ("FAILURE", TaskStatus.FAILED),
    ],
)
def test_wrapped_shape(status: str, expected: TaskStatus) -> None:
    """data.status + nested data.data parses; the wrapper supplies missing fields."""
    wrapped = {
        "task_id": "42",
        "status": status,
        "fail_reason": "why" if expected is TaskStatus.FAILED else "",
        "data": {"task_result": {"images": [{"index": 0, "url": "https://r/0.png"}]}},
    }
    task = parse_task(wrapped)
    assert (task.task_id, task.status) == ("42", expected)
    assert task.images == (GeneratedImage(0, "https://r/0.png"),)
    assert task.status_message == ("why" if expected is TaskStatus.FAILED else None)


def test_wrapped_shape_prefers_the_nested_task() -> None:
    """When the nested Kling task has its own status, it wins over the wrapper's."""
    nested = {"task_id": "7", "task_status": "processing"}
    task = parse_task({"task_id": "7", "status": "SUCCESS", "data": nested})
    assert task.status is TaskStatus.PROCESSING


def test_wrapped_shape_error_path_points_inside() -> None:
    """A bad nested value is reported under $.data.data."""
    with pytest.raises(MalformedResponse) as caught:
        parse_task({"status": "SUCCESS", "data": {"task_id": "1", "created_at": "x"}})
    assert caught.value.path == "$.data.data.created_at"


# --- tolerance and malformed bodies ---


def test_tolerated_variants() -> None:
    """Numeric ids, [] for objects, null lists, status spellings are all read."""
    task = parse_task(
        {
            "task_id": 861309198188019719,
            "task_status": "Succeeded",
            "task_info": [],
            "task_result": {"videos": {}, "images": [{"index": "1", "url": "u"}]},
            "created_at": 1.7e12,
            "updated_at": "1722769557708",
        }
    )
    assert task.task_id == "861309198188019719"
    assert task.status is TaskStatus.SUCCEEDED
    assert task.images == (GeneratedImage(1, "u"),)
    assert task.created_at == 1_700_000_000_000
    assert task.updated_at == 1722769557708
    assert parse_task_list(None) == []


@pytest.mark.parametrize(
    ("body", "path", "text"),
    [
        ({"task_id": "1", "task_status": "weird"}, "$.data.task_status", "unknown task status"),
        ({"task_id": "1"}, "$.data.task_status", "required field missing"),
        ({"task_status": "submitted"}, "$.data.task_id", "required field missing"),
        ({"task_id": [1], "task_status": "submitted"}, "$.data.task_id", "expected a string"),
        ({"task_id": True, "task_status": "submitted"}, "$.data.task_id", "expected a string"),
        (
            {"task_id": "1", "task_status": "succeed", "task_result": "done"},
            "$.data.task_result",
            "expected an object",
        ),
        (
            {"task_id": "1", "task_status": "succeed", "task_result": {"videos": "v"}},
            "$.data.task_result.videos[0]",
            "expected an object",
        ),
        (
            {"task_id": "1", "task_status": "succeed", "task_result": {"videos": [{"id": "v"}]}},
            "$.data.task_result.videos[0].url",
            "required field missing",
        ),
        (
            {"task_id": "1", "task_status": "s", "created_at": True},
            "$.data.task_status",
            "unknown task status",
        ),
        (
            {"task_id": "1", "task_status": "succeed", "updated_at": 1.5},
            "$.data.updated_at",
            "expected an integer",
        ),
        (
            {"task_id": "1", "task_status": 3},
            "$.data.task_status",
            "unknown task status",
        ),
        ("not a task", "$.data", "expected a task object, got str"),
        (None, "$.data", "expected a task object, got NoneType"),
    ],
)
def test_malformed_task_has_a_path(body: object, path: str, text: str) -> None:
    """A body that is not a task raises MalformedResponse naming the bad value's path."""
    with pytest.raises(MalformedResponse) as caught:
        parse_task(body)
    assert caught.value.path == path
    assert text in caught.value.message


def test_malformed_list_items_have_indexed_paths() -> None:
    """A bad item of a list answer is reported as $.data[i]...."""
    with pytest.raises(MalformedResponse) as caught:
        parse_task_list([{"task_id": "1", "task_status": "submitted"}, {"task_id": "2"}])
    assert caught.value.path == "$.data[1].task_status"
    with pytest.raises(MalformedResponse, match="expected a list of tasks"):
        parse_task_list({"task_id": "1"})


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
KNOWN = {
    "task_id",
    "task_status",
    "task_status_msg",
    "task_info",
    "task_result",
    "final_unit_deduction",
    "created_at",
    "updated_at",
    "external_task_id",
    "videos",
    "images",
    "id",
    "url",
    "duration",
    "index",
    "status",
    "data",
    "fail_reason",
}
extra_keys = st.dictionaries(
    st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(lambda k: k not in KNOWN),
    json_value,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(extra_keys, extra_keys, extra_keys, extra_keys)
def test_unknown_keys_anywhere_are_ignored(
    top: dict[str, Any], info: dict[str, Any], result: dict[str, Any], item: dict[str, Any]
) -> None:
    """Any task object with unknown extra keys at any level parses as without them."""
    base = _fixture("query-succeed-video-kling.json")["data"]
    expected = parse_task(base)
    noisy = {
        **base,
        **top,
        "task_info": {**base["task_info"], **info},
        "task_result": {
            **result,
            "videos": [{**video, **item} for video in base["task_result"]["videos"]],
        },
    }
    assert parse_task(json.loads(json.dumps(noisy))) == expected


# --- requests on the wire ---


async def test_video_request_to_wire(tmp_path: pathlib.Path) -> None:
    """A full video request writes every field with its wire name; unset ones are omitted."""
    path = tmp_path / "a.png"
    await anyio.Path(path).write_bytes(b"PNGDATA")
    request = MultiImageToVideo(
        images=[Image.from_path(path), URL],
        prompt="walk",
        negative_prompt="blur",
        mode=Mode.PRO,
        duration=Duration.TEN,
        aspect_ratio=VideoAspectRatio.R1_1,
        cfg_scale=0.5,
        static_mask=Image.from_bytes(b"MASK"),
        dynamic_masks=[DynamicMask(mask=URL, trajectories=[(1, 2), (3, 4)])],
        callback_url="https://cb.example/hook",
        external_task_id="job-1",
    )
    assert await request_to_wire(request) == {
        "model_name": "kling-v1-6",
        "image_list": [
            {"image": base64.b64encode(b"PNGDATA").decode()},
            {"image": "https://example.invalid/a.png"},
        ],
        "prompt": "walk",
        "negative_prompt": "blur",
        "mode": "pro",
        "duration": "10",
        "aspect_ratio": "1:1",
        "cfg_scale": 0.5,
        "static_mask": base64.b64encode(b"MASK").decode(),
        "dynamic_masks": [
            {
                "mask": "https://example.invalid/a.png",
                "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
            }
        ],
        "callback_url": "https://cb.example/hook",
        "external_task_id": "job-1",
    }
    minimal = await request_to_wire(MultiImageToVideo(images=[URL, URL]))
    assert set(minimal) == {"model_name", "image_list", "mode", "duration"}


async def test_image_request_scene_spelling() -> None:
    """The scene image goes under the profile's spelling; reading accepts both."""
    request = MultiImageToImage(
        images=[URL, URL], scene_image=URL, style_image=Image.from_base64("QUJD"), n=2
    )
    comet = await request_to_wire(request)
    assert comet["scence_image"] == "https://example.invalid/a.png"
    assert "scene_image" not in comet
    assert comet["subject_image_list"][0] == {"subject_image": "https://example.invalid/a.png"}
    assert (comet["n"], comet["aspect_ratio"], comet["style_image"]) == (2, "16:9", "QUJD")
    kling = await request_to_wire(request, scene_image_field=KLING_SCENE_FIELD)
    assert kling["scene_image"] == "https://example.invalid/a.png"
    assert request_from_wire(Kind.IMAGE, comet) == request
    assert request_from_wire(Kind.IMAGE, kling) == request


text = st.text(st.characters(codec="utf-8"), max_size=40)
wire_images = st.one_of(
    st.from_regex(r"https://[a-z]{1,10}\.example/[a-z0-9]{0,10}\.png", fullmatch=True).map(
        Image.from_url
    ),
    st.from_regex(r"[A-Za-z0-9+/]{4,40}", fullmatch=True)
    .filter(lambda t: not t.startswith("http"))
    .map(Image.from_base64),
)
optional_url = st.none() | st.from_regex(r"https://cb\.example/[a-z]{0,8}", fullmatch=True)
optional_id = st.none() | st.text(string.ascii_letters + "-_", min_size=1, max_size=20)
points = st.builds(Point, st.integers(0, 4000), st.integers(0, 4000))
masks = st.builds(
    DynamicMask, mask=wire_images, trajectories=st.lists(points, min_size=2, max_size=77)
)
videos = st.builds(
    MultiImageToVideo,
    images=st.lists(wire_images, min_size=2, max_size=4),
    prompt=text,
    negative_prompt=st.text(max_size=30),
    model_name=st.sampled_from(["kling-v1-6", "kling-v1", "kling-v2-1"]),
    mode=st.sampled_from(Mode),
    duration=st.sampled_from(Duration),
    aspect_ratio=st.none() | st.sampled_from(VideoAspectRatio),
    cfg_scale=st.none() | st.floats(0, 1) | st.sampled_from([0, 1]),
    static_mask=st.none() | wire_images,
    dynamic_masks=st.lists(masks, max_size=6),
    callback_url=optional_url,
    external_task_id=optional_id,
)
image_requests = st.builds(
    MultiImageToImage,
    images=st.lists(wire_images, min_size=2, max_size=4),
    prompt=text,
    negative_prompt=text,
    model_name=st.sampled_from(["kling-v2", "kling-v2-1"]),
    scene_image=st.none() | wire_images,
    style_image=st.none() | wire_images,
    n=st.integers(1, 9),
    aspect_ratio=st.sampled_from(ImageAspectRatio),
    callback_url=optional_url,
    external_task_id=optional_id,
)
requests = st.one_of(videos, image_requests)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.sampled_from(["scence_image", "scene_image"]))
def test_any_accepted_request_round_trips_through_wire_json(
    request: Request, scene_field: str
) -> None:
    """Any request the models accept -> wire JSON text -> back is equal."""
    wire = asyncio.run(request_to_wire(request, scene_image_field=scene_field))
    assert request_from_wire(request.kind, json.loads(json.dumps(wire))) == request


# --- journal records ---

record_images = st.one_of(
    wire_images,
    st.binary(max_size=20).map(Image.from_bytes),
    st.from_regex(r"/[a-z]{1,8}/[a-z]{1,8}\.png", fullmatch=True).map(Image.from_path),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        videos.map(lambda r: r),
        image_requests,
    ),
    st.lists(record_images, min_size=2, max_size=4),
)
def test_any_request_round_trips_through_a_record(request: Request, images: list[Image]) -> None:
    """request_to_record is JSON-able and request_from_record rebuilds an equal request."""
    import attrs  # noqa: PLC0415 - local to keep the strategy section readable

    request = attrs.evolve(request, images=images)
    record = json.loads(json.dumps(request_to_record(request)))
    assert record["kind"] == request.kind.value
    assert request_from_record(record) == request


def test_record_forms() -> None:
    """Images are recorded as path (absolute), url, base64 or bytes (as Base64)."""
    request = MultiImageToVideo(
        images=[Image.from_path("rel/a.png"), Image.from_bytes(b"\x00\x01")],
        static_mask=Image.from_base64("QUJD"),
    )
    record = request_to_record(request)
    assert record["images"][0] == {"path": str(pathlib.Path("rel/a.png").absolute())}
    assert record["images"][1] == {"bytes": "AAE="}
    assert record["static_mask"] == {"base64": "QUJD"}
    assert record["mode"] == "std"
    assert record["duration"] == "5"


def test_bad_records() -> None:
    """A broken record raises ValueError; a rule broken in an edited record, InvalidRequest."""
    record = request_to_record(MultiImageToImage(images=[URL, URL]))
    with pytest.raises(InvalidRequest, match="n: 12 is outside"):
        request_from_record({**record, "n": 12})
    with pytest.raises(ValueError, match="bad request record"):
        request_from_record({**record, "images": [{"ftp": "x"}, {"url": "https://a"}]})
    with pytest.raises(ValueError, match="bad request record"):
        request_from_record({**record, "images": ["x", {"url": "https://a"}]})
    video = request_to_record(
        MultiImageToVideo(
            images=[URL, URL], dynamic_masks=[DynamicMask(mask=URL, trajectories=[(1, 1)] * 2)]
        )
    )
    video["dynamic_masks"][0]["trajectories"] = [[1, 1], [2, 2]]
    rebuilt = request_from_record(video)
    assert isinstance(rebuilt, MultiImageToVideo)
    assert rebuilt.dynamic_masks[0].trajectories[1] == Point(2, 2)
    video["dynamic_masks"][0]["trajectories"] = ["x", "y"]
    with pytest.raises(ValueError, match="bad request record"):
        request_from_record(video)
    with pytest.raises(ValueError):
        request_from_record({**record, "kind": "audio"})


def test_error_descriptions_fall_back_to_the_exception_type() -> None:
    """Errors without text still produce a readable MalformedResponse."""
    from kling_async._api import wire as _wire  # noqa: PLC0415 - private helpers under test

    assert _wire._describe(ValueError(), None) == "invalid value (ValueError)"
    assert _wire._describe(RuntimeError("x"), None) == "invalid value (RuntimeError)"
    error = _wire._malformed(ValueError("odd"), "$.data")
    assert (error.message, error.path) == ("unexpected task body: odd", "$.data")
