"""Helpers for the report tests: job files of any size and a CLI run against a simulator."""

import json
import pathlib
import shutil
from typing import Any

import anyio.to_thread

from kling_async._cli.app import main
from kling_async.simulator import Fault, FaultKind, Simulator, SimulatorConfig, Uniform

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
KEY = "sk-REPORT-TEST-KEY-7f3e9a1c5b"
"""A recognisable key: it must never show up in a report."""
CONTENDED: dict[str, Any] = {"slots": (2, 3), "seconds": (150.0, 300.0)}
"""Two video slots and long tasks: a burst of creates surely meets 1303 answers."""
PICTURES = ("beach.png", "cat.jpg", "robot.jpg", "house.png", "mountains.png", "forest.jpg")


def copy_examples(target: pathlib.Path) -> pathlib.Path:
    """A copy of the bundled examples under ``target``."""
    shutil.copytree(EXAMPLES, target / "examples")
    return target / "examples"


def many_jobs(folder: pathlib.Path, count: int, *, invalid_every: int = 0) -> pathlib.Path:
    """A JSONL job file of ``count`` jobs (videos and images) over the example pictures.

    Every ``invalid_every``-th row breaks one rule (a bad duration, too many images, an
    empty prompt), to be skipped with ``--skip-invalid``.
    """
    lines: list[str] = []
    for index in range(count):
        first = PICTURES[index % len(PICTURES)]
        second = PICTURES[(index + 1) % len(PICTURES)]
        row: dict[str, Any] = {
            "key": f"job-{index:04d}",
            "kind": "video" if index % 2 == 0 else "image",
            "images": [f"images/{first}", f"images/{second}"],
            "prompt": f"scene {index}: {first[:-4]} meets {second[:-4]}",
        }
        if invalid_every and index % invalid_every == invalid_every - 1:
            broken = (index // invalid_every) % 3
            if broken == 0:
                row.update(kind="video", duration="7")
            elif broken == 1:
                row["images"] = [f"images/{PICTURES[n % 6]}" for n in range(6)]
            else:
                row["aspect_ratio"] = "7:3"
        lines.append(json.dumps(row))
    path = folder / "many.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mp4(path: pathlib.Path, *, frames: int = 12, colour: int = 0) -> None:
    """A small real H.264 MP4 (PyAV)."""
    import av  # noqa: PLC0415 - only the tests that make videos need it
    from PIL import Image  # noqa: PLC0415

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(frames):
            picture = Image.new("RGB", (160, 120), ((colour * 40) % 256, index * 20, 160))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_run(out: pathlib.Path, count: int) -> None:
    """An output folder of ``count`` video jobs with real MP4 files, and its results.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        write_mp4(out / f"clip-{index}.mp4", colour=index)
        record = {
            "key": f"clip-{index}",
            "kind": "video",
            "status": "succeeded",
            "files": [f"clip-{index}.mp4"],
            "units_charged": "1",
        }
        lines.append(json.dumps(record))
    (out / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def busy_config(
    *,
    time_scale: float,
    failure_rate: float = 0.0,
    faults: float = 0.0,
    slots: tuple[int, int] = (4, 6),
    seconds: tuple[float, float] = (20.0, 60.0),
) -> Any:
    """A simulator with few account slots (1303s), failing tasks and server errors.

    ``slots``: video and image slots of the account; ``seconds``: the range of a video's
    run time (an image takes a quarter of it).
    """
    low, high = seconds
    return SimulatorConfig(
        api_keys=(KEY,),
        time_scale=time_scale,
        durations={
            "video": Uniform(low=low, high=high),
            "image": Uniform(low=low / 4, high=high / 4),
        },
        failure_rate=failure_rate,
        faults=(Fault(kind=FaultKind.SERVER_ERROR, rate=faults, on={"create"}),) if faults else (),
        video_slots=slots[0],
        image_slots=slots[1],
        max_input_bytes=0,
    )


async def run_cli(config: Any, *args: str) -> int:
    """``kling-async ARGS --base-url SIM --time-scale X`` against a simulator of ``config``.

    The caller sets ``COMETAPI_KEY`` to :data:`KEY` in the environment.
    """
    async with Simulator(config) as sim:
        argv = [*args, "--base-url", sim.url, "--time-scale", str(config.time_scale)]
        code: int = await anyio.to_thread.run_sync(main, argv)
    return code


# Scrolls through the page (players further down get their file as they come near the
# view), loads every image (lazy ones too) and the metadata of every video, then tells
# what loaded.
LOAD_ALL = """
async () => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  for (let y = 0, n = 0; y < document.body.scrollHeight && n < 2000; y += innerHeight / 2, n++) {
    scrollTo(0, y);
    await frame();
  }
  await frame();
  scrollTo(0, 0);
  const settle = (el, events) => new Promise((resolve) => {
    for (const name of events) el.addEventListener(name, resolve, { once: true });
  });
  const images = [...document.images];
  const pending = [];
  for (const img of images) {
    if (!img.complete) pending.push(settle(img, ["load", "error"]));
    img.loading = "eager";
  }
  const videos = [...document.querySelectorAll("video")];
  for (const video of videos) {
    if (video.getAttribute("src") && video.readyState < 1 && !video.error) {
      pending.push(settle(video, ["loadedmetadata", "error"]));
      video.preload = "metadata";
      video.load();
    }
  }
  await Promise.all(pending);
  return {
    images: images.map((img) => [img.getAttribute("src"), img.naturalWidth]),
    videos: videos.map((v) => [v.getAttribute("src"), v.readyState, v.error && v.error.code]),
    posters: videos.filter((v) => v.poster).length,
  };
}
"""
