"""kling_async.testing: the doubles users run their own tests with."""

import pytest

import kling_async as ka
from kling_async import testing

URL = ka.Image.from_url("https://example.invalid/a.png")


def test_testing_exports_the_doubles() -> None:
    """The module names the clock, the transport and the fake server users need."""
    assert {"FakeKling", "MockTransport", "VirtualClock"} <= set(testing.__all__)
    assert testing.MockTransport is ka.MockTransport
    assert testing.VirtualClock is ka.VirtualClock


async def test_fake_kling_plays_the_api() -> None:
    """Jobs succeed (video and image), a FAIL prompt fails, unknown ids are NotFound."""
    async with testing.VirtualClock() as clock:
        fake = testing.FakeKling(clock=clock, run_time=5)
        transport = testing.MockTransport(fake)
        async with ka.Client("test-key", transport=transport, clock=clock) as kling:
            video = await kling.generate(ka.MultiImageToVideo(images=[URL, URL], prompt="go"))
            assert video.status is ka.Status.SUCCEEDED
            assert video.videos[0].url.endswith(".mp4")
            image = await kling.generate(ka.MultiImageToImage(images=[URL, URL]))
            assert image.images[0].url.endswith(".png")
            with pytest.raises(ka.TaskFailed):
                await kling.generate(ka.MultiImageToVideo(images=[URL, URL], prompt="FAIL"))
            with pytest.raises(ka.NotFound):
                await kling.tasks.get("nope", kind=ka.Kind.VIDEO)
            with pytest.raises(ka.NotFound):  # a video id asked for as an image
                await kling.tasks.get(video.task_id, kind=ka.Kind.IMAGE)
    assert fake.creates == 3
    assert fake.queries >= 3


async def test_fake_kling_refuses_a_reused_external_id() -> None:
    """A second create with the same external id is a DuplicateExternalId, as on the API."""
    fake = testing.FakeKling(run_time=0.001)  # the system clock
    async with ka.Client("test-key", transport=testing.MockTransport(fake)) as kling:
        request = ka.MultiImageToVideo(images=[URL, URL], external_task_id="once")
        first = await kling.tasks.create(request)
        assert first.status is ka.Status.PROCESSING
        with pytest.raises(ka.DuplicateExternalId):
            await kling.tasks.create(request)
        assert (await kling.tasks.get("once")).task_id == first.task_id
        anonymous = await kling.tasks.create(ka.MultiImageToVideo(images=[URL, URL]))
        assert anonymous.external_task_id is None


async def test_errors_inside_a_virtual_clock_come_out_as_themselves() -> None:
    """An error raised inside `async with VirtualClock()` is not wrapped in an ExceptionGroup."""

    async def fail() -> None:
        async with testing.VirtualClock() as clock:
            await clock.sleep(5)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await fail()
