"""Per-profile rules: what CometAPI and Kling document, each edge, and the named ways past them."""

import logging
from typing import Any

import attrs
import pytest

import kling_async as ka
from kling_async._api.images import check_request, validate_request
from kling_async._api.profiles import COMETAPI_RULES, KLING_RULES, KindRules, Rules
from tests._core_helpers import CANARY_KEY, json_response, ok, task_body

URL = ka.Image.from_url("https://example.invalid/a.png")
MASK = ka.DynamicMask(mask=URL, trajectories=[(0, 0), (5, 5)])


def _video(**fields: Any) -> ka.MultiImageToVideo:
    fields.setdefault("images", [URL, URL])
    return ka.MultiImageToVideo(**fields)


def _image(**fields: Any) -> ka.MultiImageToImage:
    fields.setdefault("images", [URL, URL])
    return ka.MultiImageToImage(**fields)


# (rules, request at the edge, request just past it or None when the model's own bounds
# already refuse it, the field named)
EDGES: list[tuple[Rules, Any, Any, str]] = [
    # CometAPI, multi-image to video
    (COMETAPI_RULES, lambda: _video(images=[URL]), None, "image_list"),
    (COMETAPI_RULES, lambda: _video(images=[URL] * 4), None, "image_list"),
    (COMETAPI_RULES, lambda: _video(prompt="p" * 500), lambda: _video(prompt="p" * 501), "prompt"),
    (
        COMETAPI_RULES,
        lambda: _video(negative_prompt="n" * 200),
        lambda: _video(negative_prompt="n" * 201),
        "negative_prompt",
    ),
    (
        COMETAPI_RULES,
        lambda: _video(model_name="kling-v1-6"),
        lambda: _video(model_name="kling-v2-1"),
        "model_name",
    ),
    (COMETAPI_RULES, _video, lambda: _video(static_mask=URL), "static_mask"),
    (COMETAPI_RULES, _video, lambda: _video(dynamic_masks=[MASK]), "dynamic_masks"),
    # CometAPI, multi-image to image
    (COMETAPI_RULES, lambda: _image(images=[URL]), None, "subject_image_list"),
    (COMETAPI_RULES, lambda: _image(images=[URL] * 4), None, "subject_image_list"),
    (COMETAPI_RULES, lambda: _image(prompt="p" * 2500), None, "prompt"),
    (COMETAPI_RULES, lambda: _image(negative_prompt="n" * 2500), None, "negative_prompt"),
    (
        COMETAPI_RULES,
        lambda: _image(model_name="kling-v2"),
        lambda: _image(model_name="kling-v1-6"),
        "model_name",
    ),
    (COMETAPI_RULES, lambda: _image(model_name="kling-v2-1"), None, "model_name"),
    # Kling, multi-image to video: longer prompts and masks are documented there
    (KLING_RULES, lambda: _video(images=[URL]), None, "image_list"),
    (KLING_RULES, lambda: _video(images=[URL] * 4), None, "image_list"),
    (KLING_RULES, lambda: _video(prompt="p" * 2500), None, "prompt"),
    (KLING_RULES, lambda: _video(negative_prompt="n" * 2500), None, "negative_prompt"),
    (
        KLING_RULES,
        lambda: _video(static_mask=URL, dynamic_masks=[MASK] * 6),
        None,
        "dynamic_masks",
    ),
    (
        KLING_RULES,
        lambda: _video(model_name="kling-v1-6"),
        lambda: _video(model_name="kling-v2"),
        "model_name",
    ),
    # Kling, multi-image to image
    (KLING_RULES, lambda: _image(images=[URL] * 4, prompt="p" * 2500), None, "prompt"),
    (
        KLING_RULES,
        lambda: _image(model_name="kling-v2-1"),
        lambda: _image(model_name="kling-v3"),
        "model_name",
    ),
]


@pytest.mark.parametrize(("rules", "at_edge", "past_edge", "field"), EDGES)
def test_each_rule_holds_at_its_edge_and_refuses_past_it(
    rules: Rules, at_edge: Any, past_edge: Any, field: str
) -> None:
    """A request at a documented limit passes the profile's rules; one past it names the field."""
    rules.check(at_edge())
    validate_request(at_edge(), rules)
    if past_edge is None:
        return
    request = past_edge()
    with pytest.raises(ka.InvalidRequest) as caught:
        validate_request(request, rules)
    assert caught.value.field == field
    assert f"by the {rules.name} profile" in caught.value.rule
    assert "strict_rules=False" in caught.value.rule


def test_bounds_every_profile_shares_stay_in_the_models() -> None:
    """0 or 5 images and prompts past 2,500 characters are refused when the model is built."""
    with pytest.raises(ka.InvalidRequest, match=r"^image_list: 0 images, must be 1 to 4"):
        _video(images=[])
    with pytest.raises(ka.InvalidRequest, match=r"^subject_image_list: 5 images"):
        _image(images=[URL] * 5)
    with pytest.raises(ka.InvalidRequest, match=r"^prompt: 2501 characters"):
        _video(prompt="p" * 2501)


def test_the_two_profiles_differ_where_their_docs_do() -> None:
    """A 501-character video prompt with masks is fine for Kling and refused for CometAPI."""
    request = _video(prompt="p" * 501, static_mask=URL)
    KLING_RULES.check(request)
    assert [broken.field for broken in COMETAPI_RULES.violations(request)] == [
        "prompt",
        "static_mask",
    ]
    assert ka.CometAPI("k").rules is COMETAPI_RULES
    assert ka.Kling("k").rules is KLING_RULES


def test_default_rules_are_the_default_profiles_and_none_skips_them() -> None:
    """validate_request checks CometAPI's rules unless told which; rules=None checks images only."""
    request = _video(dynamic_masks=[MASK])
    with pytest.raises(ka.InvalidRequest, match=r"^dynamic_masks: masks are not accepted"):
        ka.validate_request(request)
    ka.validate_request(request, None)
    ka.validate_request(request, ka.KLING_RULES)


def test_older_or_newer_limits_are_profile_data() -> None:
    """Rules are data: a profile built with the older 2-image minimum refuses one image."""
    older = attrs.evolve(COMETAPI_RULES, video=attrs.evolve(COMETAPI_RULES.video, min_images=2))
    with pytest.raises(ka.InvalidRequest, match=r"1 images, 2 to 4 allowed by the CometAPI"):
        validate_request(_video(images=[URL]), older)
    profile = ka.CometAPI("k", rules=older)
    assert profile.rules.video.min_images == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_images": 0}, "min_images must be a positive int"),
        ({"max_prompt": True}, "max_prompt must be a positive int"),
        ({"min_images": 3, "max_images": 2}, "min_images 3 > max_images 2"),
        ({"models": ()}, "models must name at least one model"),
    ],
)
def test_rules_refuse_nonsense(fields: dict[str, Any], message: str) -> None:
    """KindRules refuses non-positive limits, an empty range and an empty model set."""
    values: dict[str, Any] = {
        "min_images": 1,
        "max_images": 4,
        "models": {"m"},
        "max_prompt": 10,
        "max_negative_prompt": 10,
    }
    with pytest.raises(ValueError, match=message):
        KindRules(**(values | fields))


def _client(**kwargs: Any) -> tuple[ka.Client, ka.MockTransport]:
    transport = ka.MockTransport(lambda request: json_response(200, ok(task_body())))
    return ka.Client(CANARY_KEY, transport=transport, **kwargs), transport


PAST_COMETAPI = {"prompt": "p" * 600, "model_name": "kling-v2-6", "static_mask": URL}


async def test_client_checks_the_profile_rules_before_sending() -> None:
    """A request past a CometAPI rule raises InvalidRequest and sends nothing."""
    client, transport = _client()
    async with client:
        with pytest.raises(ka.InvalidRequest, match=r"^model_name: 'kling-v2-6' is not documented"):
            await client.tasks.create(_video(**PAST_COMETAPI))
    assert transport.requests == []


async def test_strict_rules_false_sends_past_the_rules_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """strict_rules=False sends the request, logging one warning per rule it breaks."""
    client, transport = _client(strict_rules=False)
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        async with client:
            await client.tasks.create(_video(**PAST_COMETAPI))
    assert len(transport.requests) == 1
    warned = [r.getMessage() for r in caplog.records if "strict_rules=False" in r.getMessage()]
    assert len(warned) == 3
    assert all("CometAPI profile" in message for message in warned)
    assert any(message.startswith("strict_rules=False: sending model_name") for message in warned)


async def test_strict_rules_false_still_checks_the_shared_bounds_and_images() -> None:
    """Past the switch, broken image bytes are still refused before anything is sent."""
    client, transport = _client(strict_rules=False)
    async with client:
        with pytest.raises(ka.InvalidRequest, match=r"^image_list\[0\]: "):
            await client.tasks.create(_video(images=[ka.Image.from_bytes(b"GIF89a....")]))
    assert transport.requests == []


async def test_a_profile_with_other_rules_sends_without_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A profile given rules= that document a newer model sends it quietly."""
    video = attrs.evolve(COMETAPI_RULES.video, models={"kling-v1-6", "kling-v2-6"})
    profile = ka.CometAPI(CANARY_KEY, rules=attrs.evolve(COMETAPI_RULES, video=video))
    client, transport = _client(profile=profile)
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        async with client:
            await client.tasks.create(_video(model_name="kling-v2-6"))
    assert len(transport.requests) == 1
    assert not [r for r in caplog.records if "strict_rules" in r.getMessage()]


async def test_kling_client_sends_masks_and_long_prompts() -> None:
    """The Kling profile's rules let masks and a 2,500-character prompt through."""
    client, transport = _client(profile=ka.Kling(CANARY_KEY))
    async with client:
        await client.tasks.create(_video(prompt="p" * 2500, static_mask=URL))
    assert len(transport.requests) == 1


async def test_async_check_uses_the_same_rules() -> None:
    """check_request checks the given rules first, and only logs them when not strict."""
    with pytest.raises(ka.InvalidRequest, match=r"^negative_prompt: 201 characters"):
        await check_request(_video(negative_prompt="n" * 201), COMETAPI_RULES)
    await check_request(_video(negative_prompt="n" * 201), COMETAPI_RULES, strict=False)
    await check_request(_video(negative_prompt="n" * 201), KLING_RULES)


def test_a_profile_repr_names_documented_rules_and_shows_overrides() -> None:
    """The documented rules show by name in a profile's repr; an override shows in full."""
    assert "rules=COMETAPI_RULES" in repr(ka.CometAPI("k"))
    assert "rules=KLING_RULES" in repr(ka.Kling("k"))
    mine = attrs.evolve(COMETAPI_RULES, name="mine")
    assert "rules=Rules(name='mine'" in repr(ka.CometAPI("k", rules=mine))
