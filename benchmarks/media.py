"""The simulator's result files: ``python -m benchmarks.media [--repeat N]``.

Times composing one MP4 video (PyAV, x264 ultrafast, one thread) per input count, aspect
ratio and duration, from the bundled example images, against a baseline measured in the
same run: composing one PNG image result from the same inputs (what an image download
costs). Composition runs in a worker thread once per distinct result (cached), so this
is the cost of a first download.

Columns:
  inputs, ratio, seconds   what the request asked for
  frames                   frames in the video (fps x seconds)
  ms (median)              wall time to compose the MP4
  vs png                   that time over the PNG baseline's median
  KB                       size of the MP4
"""

import argparse
import functools
import pathlib
import statistics
import time
from collections.abc import Callable

from kling_async.simulator import _media

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples" / "images"


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median)")
    args = parser.parse_args(argv)
    pictures = tuple(path.read_bytes() for path in sorted(EXAMPLES.iterdir()))[:4]
    _media.compose_video(pictures[:1], "1:1", "5")  # warm up x264
    print(
        f"{'inputs':>6} {'ratio':>5} {'seconds':>7} {'frames':>6} {'ms':>7} {'vs png':>7} {'KB':>6}"
    )
    for count in (1, 4):
        inputs = pictures[:count]
        png_ms = _median_ms(
            functools.partial(_media.compose_image, inputs, None, "16:9", 0), args.repeat
        )
        for ratio in ("16:9", "9:16", "1:1"):
            for seconds in ("5", "10"):
                data = _media.compose_video(inputs, ratio, seconds)
                ms = _median_ms(
                    functools.partial(_media.compose_video, inputs, ratio, seconds), args.repeat
                )
                frames = _media.VIDEO_FPS * int(seconds)
                print(
                    f"{count:>6} {ratio:>5} {seconds:>7} {frames:>6} {ms:>7.1f} "
                    f"{ms / png_ms:>7.2f} {len(data) / 1024:>6.1f}"
                )
        print(f"{count:>6} {'png':>5} {'-':>7} {'-':>6} {png_ms:>7.1f} {1:>7.2f} {'':>6}")


if __name__ == "__main__":
    main()
