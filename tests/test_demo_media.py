"""The demo run (examples/jobs.jsonl on the in-process simulator) leaves playable MP4s and PNGs."""

import json
import pathlib
import shutil

import av
import pytest
from PIL import Image

from kling_async._cli.app import main
from kling_async.simulator import _media

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_the_demo_leaves_mp4_videos_of_the_asked_duration_and_png_images(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each video job leaves an .mp4 (H.264, fps x its duration in frames), each image a .png."""
    for name in ("COMETAPI_KEY", "KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES, examples)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    jobs = examples / "jobs.jsonl"
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", "0.002", "-q"]) == 0
    asked = {
        row["key"]: (row["kind"], int(row.get("duration", 5)))
        for row in map(json.loads, jobs.read_text(encoding="utf-8").splitlines())
    }
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    videos = 0
    for result in results:
        kind, seconds = asked[result["key"]]
        for name in result["files"]:
            path = out / name
            if kind == "image":
                assert path.suffix == ".png"
                with Image.open(path) as opened:
                    assert opened.format == "PNG"
                continue
            assert path.suffix == ".mp4"
            videos += 1
            with av.open(str(path), mode="r") as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                frames = sum(1 for _ in container.decode(stream))
                assert container.duration is not None
                duration = container.duration / av.time_base
            assert frames == _media.VIDEO_FPS * seconds
            assert duration == pytest.approx(seconds, abs=0.01)
    assert videos == sum(1 for kind, _ in asked.values() if kind == "video") > 0
