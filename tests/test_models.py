"""Request models: constructors, defaults, value rules checked when a model is built."""

import pathlib

import anyio
import attrs
import pytest

import kling_async as ka
from kling_async import (
    Duration,
    DynamicMask,
    Image,
    ImageAspectRatio,
    ImageOrigin,
    InvalidRequest,
    Kind,
    Mode,
    MultiImageToImage,
    MultiImageToVideo,
    Point,
    Task,
    VideoAspectRatio,
)
from kling_async._api.images import encode_image
from kling_async._core.models import TaskStatus
from tests._core_helpers import png_bytes

URL = Image.from_url("https://example.invalid/a.png")
TWO = [URL, URL]


def _points(count: int) -> list[tuple[int, int]]:
    return [(i, i) for i in range(count)]


def test_named_constructors() -> None:
    """Each constructor records where the image comes from, without any I/O."""
    assert Image.from_path("missing/a.png") == Image(
        ImageOrigin.PATH, pathlib.Path("missing/a.png")
    )
    assert Image.from_bytes(bytearray(b"xy")).source == b"xy"
    assert Image.from_url("http://h/x.png").origin is ImageOrigin.URL
    assert Image.from_base64("QUJD").origin is ImageOrigin.BASE64


def test_image_repr_hides_big_payloads() -> None:
    """Bytes and long Base64 print as sizes, not content."""
    assert "<3 bytes>" in repr(Image.from_bytes(b"abc"))
    assert "<100 chars>" in repr(Image.from_base64("A" * 100))
    assert "'QUJD'" in repr(Image.from_base64("QUJD"))


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://h/a.png", "URL must be http(s), got 'ftp://h/a.png'"),
        ("file:///etc/passwd", "URL must be http(s), got 'file:///etc/passwd'"),
        ("example.com/a.png", "URL must be http(s), got 'example.com/a.png'"),
        ("https:///a.png", "URL has no host: 'https:///a.png'"),
    ],
)
def test_urls_must_be_http(url: str, rule: str) -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(InvalidRequest) as caught:
        Image.from_url(url)
    assert caught.value.rule == rule


def test_base64_constructor_rules() -> None:
    """A data: prefix or empty text is refused at once; bytes must be bytes."""
    with pytest.raises(InvalidRequest, match="without a data: prefix"):
        Image.from_base64("data:image/png;base64,AAAA")
    with pytest.raises(InvalidRequest, match="empty Base64"):
        Image.from_base64("  ")
    with pytest.raises(TypeError):
        Image.from_bytes("text")  # type: ignore[arg-type]


async def test_to_wire_forms(tmp_path: pathlib.Path) -> None:
    """URLs and Base64 go as they are; bytes and files become Base64 at send time."""
    path = tmp_path / "a.png"
    await anyio.Path(path).write_bytes(b"\x89PNG")
    assert await encode_image(Image.from_path(path)) == "iVBORw=="
    assert await encode_image(Image.from_bytes(b"\x89PNG")) == "iVBORw=="
    assert await encode_image(URL) == "https://example.invalid/a.png"
    assert await encode_image(Image.from_base64("QUJD")) == "QUJD"


def test_video_defaults_and_conversions() -> None:
    """Defaults follow API.md; strings and ints convert to the enums."""
    request = MultiImageToVideo(images=TWO)
    assert (request.model_name, request.mode, request.duration) == (
        "kling-v1-6",
        Mode.STD,
        Duration.FIVE,
    )
    assert request.kind is Kind.VIDEO
    assert request.slots == 1
    assert isinstance(request.images, tuple)
    converted = MultiImageToVideo(
        images=TWO,
        mode="pro",
        duration=10,
        aspect_ratio="9:16",
    )
    assert converted.mode is Mode.PRO
    assert converted.duration is Duration.TEN
    assert converted.aspect_ratio is VideoAspectRatio.R9_16


def test_image_defaults_and_slots() -> None:
    """An image task defaults to kling-v2, n=1, 16:9 and holds n slots."""
    request = MultiImageToImage(images=TWO, n=4, aspect_ratio="21:9")
    assert request.model_name == "kling-v2-1"
    assert request.kind is Kind.IMAGE
    assert request.slots == 4
    assert request.aspect_ratio is ImageAspectRatio.R21_9
    assert MultiImageToImage(images=TWO).aspect_ratio is ImageAspectRatio.R16_9


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MultiImageToVideo(images=[]), "image_list: 0 images, must be 1 to 4"),
        (lambda: MultiImageToVideo(images=[URL] * 5), "image_list: 5 images, must be 1 to 4"),
        (
            lambda: MultiImageToImage(images=[]),
            "subject_image_list: 0 images, must be 1 to 4",
        ),
        (
            lambda: MultiImageToImage(images=[URL] * 5),
            "subject_image_list: 5 images, must be 1 to 4",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, prompt="p" * 2501),
            "prompt: 2501 characters, at most 2500 allowed",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, negative_prompt="n" * 2501),
            "negative_prompt: 2501 characters, at most 2500 allowed",
        ),
        (
            lambda: MultiImageToImage(images=TWO, prompt="p" * 2501),
            "prompt: 2501 characters, at most 2500 allowed",
        ),
        (
            lambda: MultiImageToImage(images=TWO, negative_prompt="n" * 2501),
            "negative_prompt: 2501 characters, at most 2500 allowed",
        ),
        (lambda: MultiImageToImage(images=TWO, n=0), "n: 0 is outside 1..9"),
        (lambda: MultiImageToImage(images=TWO, n=10), "n: 10 is outside 1..9"),
        (lambda: MultiImageToImage(images=TWO, n=True), "n: must be an int, got True"),
        (lambda: MultiImageToVideo(images=TWO, cfg_scale=1.01), "cfg_scale: 1.01 is outside 0..1"),
        (lambda: MultiImageToVideo(images=TWO, cfg_scale=-0.1), "cfg_scale: -0.1 is outside 0..1"),
        (
            lambda: MultiImageToVideo(images=TWO, cfg_scale=float("nan")),
            "cfg_scale: must be a number, got nan",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, mode="fast"),
            "mode: 'fast' is not one of 'std', 'pro'",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, duration=7),
            "duration: 7 is not one of '5', '10'",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, aspect_ratio="4:3"),
            "aspect_ratio: '4:3' is not one of '16:9', '9:16', '1:1'",
        ),
        (
            lambda: MultiImageToImage(images=TWO, aspect_ratio="5:4"),
            "aspect_ratio: '5:4' is not one of '16:9', '9:16', '1:1', '4:3', '3:4', '3:2', "
            "'2:3', '21:9'",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, model_name=" "),
            "model_name: must be a non-empty string, got ' '",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, callback_url="ftp://x"),
            "callback_url: URL must be http(s), got 'ftp://x'",
        ),
        (
            lambda: MultiImageToVideo(images=TWO, external_task_id=""),
            "external_task_id: must be a non-empty string, got ''",
        ),
        (
            lambda: MultiImageToVideo(
                images=TWO,
                dynamic_masks=[DynamicMask(mask=URL, trajectories=_points(2))] * 7,
            ),
            "dynamic_masks: 7 groups, at most 6",
        ),
        (
            lambda: DynamicMask(mask=URL, trajectories=_points(1)),
            "trajectories: 1 points, must be 2 to 77",
        ),
        (
            lambda: DynamicMask(mask=URL, trajectories=_points(78)),
            "trajectories: 78 points, must be 2 to 77",
        ),
        (lambda: Point(-1, 0), "x: -1 is negative (pixel coordinates)"),
        (
            lambda: Point(0, 1.5),  # type: ignore[arg-type]
            "y: must be an int, got 1.5",
        ),
    ],
)
def test_value_rules(build: object, message: str) -> None:
    """Each value rule of API.md is refused when the model is built, naming field and rule."""
    with pytest.raises(InvalidRequest) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value) == message


def test_limits_are_inclusive() -> None:
    """The documented limits themselves are accepted."""
    MultiImageToVideo(
        images=[URL] * 4,
        prompt="p" * 500,
        negative_prompt="n" * 200,
        cfg_scale=0,
        dynamic_masks=[DynamicMask(mask=URL, trajectories=_points(77))] * 6,
    )
    MultiImageToVideo(images=TWO, cfg_scale=1)
    MultiImageToImage(images=[URL] * 4, n=9, prompt="p" * 2500, negative_prompt="n" * 2500)


def test_type_errors_for_misuse() -> None:
    """Wrong Python types are TypeErrors (misuse), not InvalidRequest."""
    with pytest.raises(TypeError, match=r"image_list\[1\] must be an Image"):
        MultiImageToVideo(images=[URL, "https://x"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="static_mask must be an Image"):
        MultiImageToVideo(images=TWO, static_mask="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a str"):
        MultiImageToVideo(images=TWO, prompt=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trajectory point"):
        DynamicMask(mask=URL, trajectories=[(1, 2, 3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"dynamic_masks\[0\] must be a DynamicMask"):
        MultiImageToVideo(images=TWO, dynamic_masks=["x"])  # type: ignore[list-item]
    with pytest.raises(InvalidRequest, match="cfg_scale: must be a number"):
        MultiImageToVideo(images=TWO, cfg_scale="0.5")  # type: ignore[arg-type]


def test_points_accept_tuples_and_points() -> None:
    """Trajectories take Point objects or (x, y) pairs."""
    mask = DynamicMask(mask=URL, trajectories=[Point(1, 2), (3, 4), [5, 6]])  # type: ignore[list-item]
    assert mask.trajectories == (Point(1, 2), Point(3, 4), Point(5, 6))


def test_models_are_frozen_and_evolvable() -> None:
    """Requests are immutable; attrs.evolve makes variants and re-validates."""
    request = MultiImageToImage(images=TWO)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.n = 2  # type: ignore[misc]
    assert attrs.evolve(request, n=2).n == 2
    with pytest.raises(InvalidRequest):
        attrs.evolve(request, n=12)


def test_status_is_one_vocabulary() -> None:
    """One Status for tasks and jobs: only SUBMITTED and PROCESSING are not terminal."""
    assert [status.is_terminal for status in ka.Status] == [False, False, *[True] * 5]
    assert ka.Status("succeed") is ka.Status("succeeded") is ka.Status.SUCCEEDED
    assert TaskStatus is ka.Status
    with pytest.raises(ValueError, match="'unknown'"):
        ka.Status("unknown")


def test_task_defaults() -> None:
    """A task needs only id and status."""
    task = Task(task_id="1", status=TaskStatus.SUBMITTED)
    assert task.videos == ()
    assert task.images == ()
    assert task.external_task_id is None


def test_bytes_image_holds_the_real_image() -> None:
    """An in-memory image keeps its exact bytes."""
    data = png_bytes(300, 300)
    assert Image.from_bytes(data).source == data
