"""Helpers for the simulator tests: sample images, request bodies, a running simulator."""

import base64
import contextlib
import functools
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from PIL import Image

from kling_async.simulator import Simulator, SimulatorConfig

VIDEO = "/kling/v1/videos/multi-image2video"
IMAGE = "/kling/v1/images/generations"
KLING_VIDEO = "/v1/videos/multi-image2video"
KLING_IMAGE = "/v1/images/multi-image2image"


@functools.cache
def picture(width: int = 400, height: int = 300, fmt: str = "PNG", colour: str = "red") -> str:
    """A real image of the given size as Base64."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def video_body(**fields: Any) -> dict[str, Any]:
    """A valid multi-image-to-video create body, with overrides."""
    body: dict[str, Any] = {
        "model_name": "kling-v1-6",
        "image_list": [{"image": picture()}, {"image": "https://example.invalid/b.jpg"}],
        "prompt": "two friends walk",
        "duration": "5",
        "mode": "std",
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


def image_body(**fields: Any) -> dict[str, Any]:
    """A valid multi-image-to-image create body, with overrides."""
    body: dict[str, Any] = {
        "model_name": "kling-v2",
        "subject_image_list": [
            {"subject_image": picture()},
            {"subject_image": picture(colour="blue")},
        ],
        "prompt": "a poster",
        "n": 1,
        "aspect_ratio": "1:1",
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


class Api:
    """A thin JSON client over an aiohttp session for one simulator."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        keys = sim.config.api_keys
        self.headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or text)."""
        sent = dict(self.headers if headers is None else headers)
        data = None
        if body is not None:
            # A stream: aiohttp warns about large raw bodies (some bodies hold 10 MB images).
            data = io.BytesIO(json.dumps(body).encode())
            sent["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.sim.url + path, data=data, headers=sent
        ) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def create(self, path: str = VIDEO, **fields: Any) -> tuple[int, Any]:
        """POST a create body (video or image by path) with overrides."""
        body = image_body(**fields) if path in (IMAGE, KLING_IMAGE) else video_body(**fields)
        return await self.call("POST", path, body)

    async def task(self, path: str, task_id: str) -> dict[str, Any]:
        """GET one task; assert success and return ``data``."""
        status, body = await self.call("GET", f"{path}/{task_id}")
        assert status == 200, body
        return body["data"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running(**config: Any) -> AsyncIterator[Api]:
    """A started simulator (manual clock unless told otherwise) and a session for it."""
    config.setdefault("manual_clock", True)
    async with Simulator(SimulatorConfig(**config)) as sim, aiohttp.ClientSession() as session:
        yield Api(sim, session)
