"""Downloads of the simulator's real result files: sha256 of what it serves, expiry as 403."""

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from PIL import Image as PIL_Image

from kling_async import Downloader, ResultExpired
from kling_async._durable.downloads import url_expiry
from kling_async.simulator import Fixed, Simulator, SimulatorConfig

IMAGE = "/kling/v1/images/generations"


def _picture(colour: str) -> str:
    buffer = io.BytesIO()
    PIL_Image.new("RGB", (400, 300), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def _json(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["data"]


async def test_simulator_results_download_and_expire(tmp_path: Path) -> None:
    """Result files save with the served bytes' sha256; past the URL's life, ResultExpired."""
    config = SimulatorConfig(
        manual_clock=True,
        durations={"image": Fixed(seconds=10.0)},
        url_ttl=60.0,
    )
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        body = {
            "subject_image_list": [
                {"subject_image": _picture("red")},
                {"subject_image": _picture("blue")},
            ],
            "prompt": "a poster",
            "n": 2,
            "aspect_ratio": "1:1",
        }
        created = await _json(session, "POST", sim.url + IMAGE, json=body, headers=headers)
        sim.advance(11.0)
        task = await _json(
            session, "GET", f"{sim.url}{IMAGE}/{created['task_id']}", headers=headers
        )
        assert task["task_status"] == "succeed"
        urls = [image["url"] for image in task["task_result"]["images"]]
        assert len(urls) == 2

        async with Downloader(tmp_path, session=session, backoff_base=0.0) as downloader:
            files = await downloader.download_all("poster/1", urls, task_id=task["task_id"])
        for record, url in zip(files, urls, strict=True):
            async with session.get(url) as response:
                served = await response.read()
            assert record.sha256 == hashlib.sha256(served).hexdigest()
            assert record.size == len(served)
            assert await anyio.Path(record.path).read_bytes() == served
            assert record.path.endswith(".png")
            assert served.startswith(b"\x89PNG")

        sim.advance(120.0)
        async with Downloader(tmp_path / "late", session=session) as downloader:
            with pytest.raises(ResultExpired) as caught:
                await downloader.download(urls[0], key="late")
        assert caught.value.http_status == 403
        expires = url_expiry(urls[0])
        assert expires is not None
        assert caught.value.expires_at == expires
