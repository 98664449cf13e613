"""The simulator's result files (real PNG images, H.264 MP4 videos) and running it stand-alone."""

import asyncio
import base64
import io
import runpy
import signal
import sys
import time
from typing import Any

import av
import pytest
from PIL import Image

from kling_async.simulator import (
    DEFAULT_API_KEY,
    Fixed,
    RateLimitStyle,
    Simulator,
    SimulatorConfig,
    _media,
    _serve,
    _server,
    main,
    serve,
)
from kling_async.simulator._serve import build_parser, config_from_args
from tests._simulator_helpers import IMAGE, VIDEO, picture, running

FIXED = {"video": Fixed(seconds=60), "image": Fixed(seconds=20)}


async def _download(api, url: str) -> tuple[int, bytes, str]:
    async with api.session.get(url) as response:
        return response.status, await response.read(), response.content_type


async def test_image_results_are_real_pngs_in_the_asked_aspect_ratio() -> None:
    """Each image result downloads as a PNG that Pillow opens, sized by aspect_ratio."""
    async with running(durations=FIXED) as api:
        _, body = await api.create(
            IMAGE, n=2, aspect_ratio="16:9", scence_image=picture(600, 400, "JPEG")
        )
        api.sim.advance(20)
        task = await api.task(IMAGE, body["data"]["task_id"])
        for image in task["task_result"]["images"]:
            status, data, content_type = await _download(api, image["url"])
            assert (status, content_type) == (200, "image/png")
            with Image.open(io.BytesIO(data)) as opened:
                assert opened.format == "PNG"
                assert opened.size == (512, 288)
        assert api.sim.statistics().files_served == 2


async def _video_url(api, **fields) -> str:
    _, body = await api.create(VIDEO, **fields)
    api.sim.advance(60)
    [video] = (await api.task(VIDEO, body["data"]["task_id"]))["task_result"]["videos"]
    assert video["url"].split("?")[0].endswith(".mp4")
    return str(video["url"])


def _decode(data: bytes) -> tuple[str, int, float, tuple[int, int], list[Image.Image]]:
    """Codec, frame count, duration (s), size and a few frames of an MP4, decoded by PyAV."""
    with av.open(io.BytesIO(data), mode="r") as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(stream)]
        assert container.duration is not None
        duration = container.duration / av.time_base
        return (
            stream.codec_context.name,
            len(frames),
            duration,
            (stream.width, stream.height),
            frames,
        )


@pytest.mark.parametrize(
    ("duration", "ratio", "size"), [("5", "9:16", (180, 320)), ("10", "16:9", (320, 180))]
)
async def test_video_results_are_h264_mp4s_of_the_asked_duration(duration, ratio, size) -> None:
    """The video result is an H.264 MP4 whose frame count is fps x the asked duration."""
    async with running(durations=FIXED) as api:
        url = await _video_url(api, duration=duration, aspect_ratio=ratio)
        status, data, content_type = await _download(api, url)
    assert (status, content_type) == (200, "video/mp4")
    codec, count, seconds, got_size, _ = _decode(data)
    assert codec == "h264"
    assert count == _media.VIDEO_FPS * int(duration)
    assert seconds == pytest.approx(int(duration), abs=0.01)
    assert got_size == size
    assert data.index(b"moov") < data.index(b"mdat")  # fast start: playable while it downloads
    assert len(data) < 200_000


async def test_video_frames_show_the_inputs_in_turn() -> None:
    """The first frames show the first input and the last frames the last one (colours kept)."""
    red, blue = picture(400, 400, colour="red"), picture(400, 400, colour="blue")
    async with running(durations=FIXED) as api:
        url = await _video_url(
            api, image_list=[{"image": red}, {"image": blue}], aspect_ratio="1:1"
        )
        data = (await _download(api, url))[1]
    *_, frames = _decode(data)
    first = frames[0].getpixel((160, 100))
    last = frames[-1].getpixel((160, 100))
    assert isinstance(first, tuple)
    assert isinstance(last, tuple)
    assert first[0] > 200 > 60 > first[2]
    assert last[2] > 200 > 60 > last[0]


def test_one_input_makes_a_video_too() -> None:
    """A single input (now allowed) still makes a video of the full duration."""
    _, count, seconds, _, _ = _decode(_media.compose_video((None,), "16:9", "5"))
    assert count == 5 * _media.VIDEO_FPS
    assert seconds == pytest.approx(5, abs=0.01)


async def _get(api, url: str, **headers: str) -> tuple[int, bytes, Any]:
    async with api.session.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.copy()


async def test_result_files_answer_byte_ranges_like_a_file_host() -> None:
    """A Range request gets 206, the asked bytes and Content-Range; a whole file, Accept-Ranges."""
    async with running(durations=FIXED) as api:
        url = await _video_url(api)
        status, whole, headers = await _get(api, url)
        assert (status, headers["Accept-Ranges"]) == (200, "bytes")
        size = len(whole)
        cases = {
            "bytes=0-99": (0, 100),
            "bytes=100-": (100, size),
            "bytes=-50": (size - 50, size),
            f"bytes=10-{size + 500}": (10, size),
        }
        for header, (start, stop) in cases.items():
            status, part, headers = await _get(api, url, Range=header)
            assert status == 206, header
            assert part == whole[start:stop], header
            assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
            assert headers["Content-Type"] == "video/mp4"
            assert int(headers["Content-Length"]) == stop - start


async def test_range_edge_cases_follow_rfc_9110() -> None:
    """Past the end is 416; a malformed range or a stale If-Range gets the whole file."""
    async with running(durations=FIXED) as api:
        url = await _video_url(api)
        _, whole, headers = await _get(api, url)
        size = len(whole)
        status, _, past = await _get(api, url, Range=f"bytes={size}-")
        assert (status, past["Content-Range"]) == (416, f"bytes */{size}")
        for header in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6"):
            status, body, _ = await _get(api, url, Range=header)
            assert (status, body) == (200, whole), header
        status, body, _ = await _get(api, url, Range="bytes=0-9", **{"If-Range": '"stale"'})
        assert (status, body) == (200, whole)
        status, body, _ = await _get(api, url, Range="bytes=0-9", **{"If-Range": headers["ETag"]})
        assert (status, body) == (206, whole[:10])
        assert api.sim.statistics().files_served == 6  # 200s and 206s, not the 416


async def test_concurrent_downloads_compose_the_file_once() -> None:
    """Parallel first downloads of one result get identical bytes from one composition."""
    async with running(durations=FIXED) as api:
        _, body = await api.create(VIDEO)
        api.sim.advance(60)
        [video] = (await api.task(VIDEO, body["data"]["task_id"]))["task_result"]["videos"]
        answers = await asyncio.gather(*(_download(api, video["url"]) for _ in range(4)))
        assert len({data for _, data, _ in answers}) == 1
        again = await _download(api, video["url"])
        assert again[1] == answers[0][1]


async def test_result_urls_expire_after_the_ttl() -> None:
    """A result URL answers 403 once url_ttl simulated seconds passed since the task ended."""
    async with running(durations=FIXED, url_ttl=100) as api:
        _, body = await api.create(IMAGE)
        api.sim.advance(20)
        url = (await api.task(IMAGE, body["data"]["task_id"]))["task_result"]["images"][0]["url"]
        api.sim.advance(99)
        assert (await _download(api, url))[0] == 200
        api.sim.advance(2)
        status, data, _ = await _download(api, url)
        assert status == 403
        assert b"expired" in data


@pytest.mark.parametrize(
    "mangle",
    [
        lambda url: url.replace("sig=", "sig=0"),
        lambda url: url.split("?")[0],
        lambda url: url.replace("/0.png", "/1.png"),
    ],
)
async def test_tampered_result_urls_are_refused(mangle) -> None:
    """A URL whose signature, expiry or path was changed answers 403."""
    async with running(durations=FIXED) as api:
        _, body = await api.create(IMAGE)
        api.sim.advance(20)
        url = (await api.task(IMAGE, body["data"]["task_id"]))["task_result"]["images"][0]["url"]
        assert (await _download(api, mangle(url)))[0] == 403


async def test_serve_runs_until_cancelled() -> None:
    """serve() listens, reports the running simulator, and stops on cancellation."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(SimulatorConfig(), started=lambda sim: ready.set_result(sim.url))
    )
    url = await asyncio.wait_for(ready, 5)
    assert url.startswith("http://127.0.0.1:")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_command_line_builds_the_config() -> None:
    """The options of `kling-async simulate` map onto SimulatorConfig."""
    args = build_parser().parse_args(
        [
            "--time-scale",
            "0.01",
            "--seed",
            "4",
            "--fixed-durations",
            "--video-seconds",
            "30",
            "--rate",
            "5",
            "--cometapi-429",
            "--fault",
            "gateway=0.1",
            "--fault",
            "html",
            "--api-key",
            "k1",
            "--callback-secret",
            "whsec_AAAA",
            "--account-state",
            "arrears",
        ]
    )
    config = config_from_args(args)
    assert config.time_scale == 0.01
    assert config.durations["video"] == Fixed(seconds=30)
    assert config.rate_limit is not None
    assert config.rate_limit.style is RateLimitStyle.COMETAPI
    assert [(fault.kind.value, fault.rate) for fault in config.faults] == [
        ("gateway", 0.1),
        ("html", 1.0),
    ]
    assert config.api_keys == ("k1",)
    assert config.account_state.value == 1101
    assert config_from_args(build_parser().parse_args([])).api_keys == (DEFAULT_API_KEY,)


def test_command_line_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown fault kinds and invalid values exit with status 2 and a message."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "meteor"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--time-scale", "0"])
    assert "time_scale" in capsys.readouterr().err


async def test_stand_alone_process_serves_and_stops_on_interrupt() -> None:
    """`python -m kling_async.simulator --port 0` prints its URL, serves, and exits 0 on SIGINT."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kling_async.simulator",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert "listening on http://127.0.0.1:" in line
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_failing_composition_answers_500_and_is_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If making a result file fails, parallel downloads answer 500 and a later one succeeds."""
    real = _media.compose_video
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)  # in the worker thread: the other downloads arrive meanwhile
            raise ValueError("boom")
        return real(*args)

    monkeypatch.setattr(_media, "compose_video", broken)
    async with running(durations=FIXED) as api:
        _, body = await api.create(VIDEO)
        api.sim.advance(60)
        [video] = (await api.task(VIDEO, body["data"]["task_id"]))["task_result"]["videos"]
        answers = await asyncio.gather(*(_download(api, video["url"]) for _ in range(3)))
        assert {status for status, _, _ in answers} == {500}
        assert (await _download(api, video["url"]))[0] == 200


async def test_damaged_inputs_still_give_a_result_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A valid header over damaged pixels composes from a placeholder; old files are evicted."""
    monkeypatch.setattr(_server, "_FILE_CACHE_SIZE", 1)
    damaged = base64.b64decode(picture())[:40]
    async with running(durations=FIXED) as api:
        _, body = await api.create(
            IMAGE,
            n=2,
            subject_image_list=[{"subject_image": base64.b64encode(damaged).decode()}] * 2,
        )
        assert "data" in body, body
        api.sim.advance(20)
        images = (await api.task(IMAGE, body["data"]["task_id"]))["task_result"]["images"]
        for image in images + images:
            assert (await _download(api, image["url"]))[0] == 200


def test_main_prints_the_url_and_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() serves with the parsed config, prints URL and key, and returns 0 when serving ends."""

    async def once(config, host, port, *, started):
        async with Simulator(config, host=host, port=port) as sim:
            started(sim)

    monkeypatch.setattr(_serve, "serve", once)
    assert main(["--port", "0", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "listening on http://127.0.0.1:" in out
    assert DEFAULT_API_KEY in out
    monkeypatch.setattr(sys, "argv", ["kling-async-simulate", "--port", "0"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("kling_async.simulator", run_name="__main__")
    assert exit_info.value.code == 0


async def test_inputs_past_the_memory_budget_compose_from_placeholders() -> None:
    """With max_input_bytes=0 no input is kept, yet results are still real files."""
    async with running(durations=FIXED, max_input_bytes=0) as api:
        _, body = await api.create(IMAGE)
        api.sim.advance(20)
        [image] = (await api.task(IMAGE, body["data"]["task_id"]))["task_result"]["images"]
        status, data, _ = await _download(api, image["url"])
        assert status == 200
        with Image.open(io.BytesIO(data)) as opened:
            assert opened.format == "PNG"
