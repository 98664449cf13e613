"""The simulator's API: lifecycle, lookups, listing, limits, auth, validation, shapes."""

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from typing import Any

import aiohttp
import pytest

from kling_async.simulator import (
    AccountState,
    CallbackConfig,
    Fault,
    FaultKind,
    Fixed,
    LogNormal,
    RateLimit,
    RateLimitStyle,
    Simulator,
    SimulatorConfig,
    Uniform,
)
from kling_async.simulator._validation import image_size
from tests._simulator_helpers import (
    IMAGE,
    KLING_IMAGE,
    KLING_VIDEO,
    VIDEO,
    picture,
    running,
    video_body,
)

FIXED = {"video": Fixed(seconds=60), "image": Fixed(seconds=20)}


async def test_video_task_moves_through_its_states_on_the_clock() -> None:
    """A video task is submitted, then processing, then succeed with a video URL and ms times."""
    async with running(durations=FIXED, start_time=1_700_000_000.0) as api:
        status, body = await api.create(VIDEO, external_task_id="job-1")
        assert status == 200
        assert body["code"] == 0
        assert body["request_id"]
        data = body["data"]
        task_id = data["task_id"]
        assert isinstance(task_id, str)
        assert task_id.isdigit()
        assert len(task_id) == 19
        assert data["task_status"] == "submitted"
        assert data["task_info"] == {"external_task_id": "job-1"}
        assert data["created_at"] == 1_700_000_000_000
        assert (await api.task(VIDEO, task_id))["task_status"] == "submitted"
        api.sim.advance(6)
        processing = await api.task(VIDEO, task_id)
        assert processing["task_status"] == "processing"
        assert processing["updated_at"] == 1_700_000_006_000
        api.sim.advance(54)
        done = await api.task(VIDEO, task_id)
        assert done["task_status"] == "succeed"
        assert done["updated_at"] == 1_700_000_060_000
        [video] = done["task_result"]["videos"]
        assert video["duration"] == "5"
        assert video["url"].startswith(api.sim.url + "/_sim/files/video/")
        assert done["final_unit_deduction"] == "1"


async def test_image_task_yields_n_images_and_holds_n_slots() -> None:
    """An image task with n=3 ends with three indexed images and held three slots meanwhile."""
    async with running(durations=FIXED) as api:
        status, body = await api.create(IMAGE, n=3)
        assert status == 200
        assert api.sim.statistics().running["image"] == 3
        api.sim.advance(20)
        done = await api.task(IMAGE, body["data"]["task_id"])
        assert [image["index"] for image in done["task_result"]["images"]] == [0, 1, 2]
        assert api.sim.statistics().running["image"] == 0
        assert api.sim.statistics().peak_concurrency["image"] == 3


async def test_kling_paths_share_the_task_table_of_their_kind() -> None:
    """A task created on the Kling path is found on the CometAPI path of the same kind only."""
    async with running() as api:
        _, video = await api.create(KLING_VIDEO)
        _, image = await api.create(KLING_IMAGE, scene_image=picture(500, 400))
        assert (await api.task(VIDEO, video["data"]["task_id"]))["task_id"] == video["data"][
            "task_id"
        ]
        assert (await api.task(IMAGE, image["data"]["task_id"]))["task_id"] == image["data"][
            "task_id"
        ]
        status, body = await api.call("GET", f"{IMAGE}/{video['data']['task_id']}")
        assert (status, body["code"]) == (404, 1203)


async def test_query_by_external_task_id_finds_the_task() -> None:
    """GET .../{external_task_id} answers the task created with that id."""
    async with running() as api:
        _, body = await api.create(VIDEO, external_task_id="batch-7")
        found = await api.task(VIDEO, "batch-7")
        assert found["task_id"] == body["data"]["task_id"]


async def test_duplicate_external_task_id_is_refused_and_counted_once() -> None:
    """A repeated external_task_id answers 400/1201 'already exists' and creates nothing."""
    async with running() as api:
        assert (await api.create(VIDEO, external_task_id="dup"))[0] == 200
        status, body = await api.create(VIDEO, external_task_id="dup")
        assert status == 400
        assert body["code"] == 1201
        assert "external_task_id already exists" in body["message"]
        stats = api.sim.statistics()
        assert stats.tasks_created == 1
        assert stats.tasks_created_per_external_id == {"dup": 1}
        assert stats.max_creates_per_external_id == 1
        assert stats.duplicates_rejected == 1


async def test_unknown_task_answers_404_1203() -> None:
    """An id nobody created is a definite not-found: 404 with code 1203."""
    async with running() as api:
        status, body = await api.call("GET", f"{VIDEO}/123")
        assert (status, body["code"]) == (404, 1203)


async def test_a_key_sees_only_its_own_tasks() -> None:
    """Two keys of one account: each finds only its own tasks, list included."""
    async with running(api_keys=("key-a", "key-b")) as api:
        _, body = await api.create(VIDEO)
        other = {"Authorization": "Bearer key-b"}
        status, _ = await api.call("GET", f"{VIDEO}/{body['data']['task_id']}", headers=other)
        assert status == 404
        status, listed = await api.call("GET", VIDEO, headers=other)
        assert listed["data"] == []


async def test_list_pages_newest_first_and_ends_with_a_short_page() -> None:
    """pageNum/pageSize walk the key's tasks newest first; the last page is short."""
    async with running(video_slots=None) as api:
        ids = [(await api.create(VIDEO))[1]["data"]["task_id"] for _ in range(5)]
        pages = []
        for page in (1, 2, 3, 4):
            status, body = await api.call("GET", f"{VIDEO}?pageNum={page}&pageSize=2")
            assert status == 200
            pages.append([task["task_id"] for task in body["data"]])
        assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1], []]
        _, default = await api.call("GET", VIDEO)
        assert len(default["data"]) == 5


@pytest.mark.parametrize("query", ["pageNum=0", "pageSize=501", "pageNum=x", "pageNum=1001"])
async def test_list_rejects_bad_paging(query: str) -> None:
    """pageNum outside 1..1000 or pageSize outside 1..500 answers 400/1201."""
    async with running() as api:
        status, body = await api.call("GET", f"{VIDEO}?{query}")
        assert (status, body["code"]) == (400, 1201)


async def test_list_can_be_switched_off() -> None:
    """With serve_list=False the list endpoint answers a bare 404, as CometAPI may."""
    async with running(serve_list=False) as api:
        status, body = await api.call("GET", IMAGE)
        assert status == 404
        assert isinstance(body, str)


async def test_failure_rate_ends_tasks_failed_with_a_message() -> None:
    """failure_rate=1 ends every task failed with task_status_msg and no charge."""
    async with running(failure_rate=1.0, failure_message="risk control", durations=FIXED) as api:
        _, body = await api.create(IMAGE)
        api.sim.advance(20)
        task = await api.task(IMAGE, body["data"]["task_id"])
        assert task["task_status"] == "failed"
        assert task["task_status_msg"] == "risk control"
        assert task["task_result"] == {}
        assert task["final_unit_deduction"] == "0"


async def test_video_concurrency_limit_answers_1303_until_a_slot_frees() -> None:
    """Past video_slots a create answers 429/1303; once a task ends the next create fits."""
    async with running(video_slots=2, durations=FIXED) as api:
        assert (await api.create(VIDEO))[0] == 200
        api.sim.advance(10)
        assert (await api.create(VIDEO))[0] == 200
        status, body = await api.create(VIDEO)
        assert (status, body["code"]) == (429, 1303)
        api.sim.advance(50)
        assert (await api.create(VIDEO))[0] == 200
        stats = api.sim.statistics()
        assert stats.peak_concurrency == {"video": 2, "image": 0}
        assert stats.rejected_concurrency == 1
        assert stats.requests_to("video.create", 429) == 1
        assert stats.requests_to("video.create") == 4


async def test_image_tasks_hold_n_slots_against_the_limit() -> None:
    """image_slots=4: an n=3 task fits, a following n=2 task answers 1303, n=1 fits."""
    async with running(image_slots=4) as api:
        assert (await api.create(IMAGE, n=3))[0] == 200
        status, body = await api.create(IMAGE, n=2)
        assert (status, body["code"]) == (429, 1303)
        assert (await api.create(IMAGE, n=1))[0] == 200


async def test_rate_limit_answers_1302_with_retry_after_then_recovers() -> None:
    """Past the bucket a request answers 429/1302 with Retry-After; tokens come back with time."""
    async with running(rate_limit=RateLimit(rate=1.0, burst=2)) as api:
        assert (await api.call("GET", VIDEO))[0] == 200
        assert (await api.call("GET", VIDEO))[0] == 200
        async with api.session.get(api.sim.url + VIDEO, headers=api.headers) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["code"] == 1302
        api.sim.advance(1)
        assert (await api.call("GET", VIDEO))[0] == 200
        assert api.sim.statistics().rejected_rate == 1


async def test_cometapi_style_rate_limit_without_retry_after() -> None:
    """The CometAPI style answers 429 with an error envelope and, if told, no Retry-After."""
    limit = RateLimit(rate=0.5, burst=1, style=RateLimitStyle.COMETAPI, retry_after=False)
    async with running(rate_limit=limit) as api:
        assert (await api.call("GET", VIDEO))[0] == 200
        async with api.session.get(api.sim.url + VIDEO, headers=api.headers) as response:
            assert response.status == 429
            assert "Retry-After" not in response.headers
            body = await response.json()
        assert body["error"]["type"] == "comet_api_error"
        assert "(request id: " in body["error"]["message"]


async def test_rate_limit_can_count_creates_only() -> None:
    """creates_only leaves queries unlimited while creates run out of tokens."""
    async with running(rate_limit=RateLimit(rate=0.1, burst=1, creates_only=True)) as api:
        assert (await api.create(VIDEO))[0] == 200
        for _ in range(3):
            assert (await api.call("GET", VIDEO))[0] == 200
        status, body = await api.create(VIDEO)
        assert (status, body["code"]) == (429, 1302)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 1001),
        ({"Authorization": "Basic abc"}, 1002),
        ({"Authorization": "Bearer "}, 1002),
        ({"Authorization": "Bearer wrong"}, 1000),
    ],
)
async def test_missing_or_wrong_keys_answer_401(headers: dict[str, str], code: int) -> None:
    """No key answers 1001, a malformed header 1002, an unknown key 1000, all with 401."""
    async with running() as api:
        status, body = await api.call("GET", VIDEO, headers=headers)
        assert (status, body["code"]) == (401, code)


def _jwt(secret: str, **claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    head = part({"alg": "HS256", "typ": "JWT"})
    payload = part(claims)
    signature = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (_jwt("sk", iss="ak", exp=time.time() + 1800, nbf=time.time() - 5), 200, 0),
        (_jwt("sk", iss="ak", exp=time.time() - 1), 401, 1004),
        (_jwt("sk", iss="ak", exp=time.time() + 1800, nbf=time.time() + 600), 401, 1003),
        (_jwt("wrong", iss="ak", exp=time.time() + 1800), 401, 1000),
        (_jwt("sk", iss="nobody", exp=time.time() + 1800), 401, 1000),
        ("a.!!!.c", 401, 1002),
    ],
)
async def test_kling_jwt_auth(token: str, status: int, code: int) -> None:
    """HS256 JWTs: valid passes; expired 1004, not yet valid 1003, bad signature/issuer 1000."""
    async with running(api_keys=(), jwt_keys={"ak": "sk"}) as api:
        answer, body = await api.call(
            "GET", KLING_VIDEO, headers={"Authorization": f"Bearer {token}"}
        )
        assert (answer, body["code"]) == (status, code)
        with pytest.raises(RuntimeError, match="JWT"):
            _ = api.sim.api_key


@pytest.mark.parametrize(
    ("state", "code"), [(AccountState.ARREARS, 1101), (AccountState.PACK_EXHAUSTED, 1102)]
)
async def test_account_states_refuse_creates(state: AccountState, code: int) -> None:
    """An account in arrears or out of its pack answers creates with 429 and its code."""
    async with running(account_state=state) as api:
        status, body = await api.create(VIDEO)
        assert (status, body["code"]) == (429, code)
        assert (await api.call("GET", VIDEO))[0] == 200


async def test_account_state_changes_at_run_time_and_by_admin_endpoint() -> None:
    """set_account_state and POST /_sim/account switch the account between states."""
    async with running() as api:
        api.sim.set_account_state(AccountState.ACCOUNT_ERROR)
        assert (await api.create(VIDEO))[1]["code"] == 1100
        status, body = await api.call("POST", "/_sim/account?state=active")
        assert (status, body) == (200, {"state": "ACTIVE"})
        assert (await api.create(VIDEO))[0] == 200
        status, text = await api.call("POST", "/_sim/account?state=broke")
        assert status == 400
        assert "ARREARS" in text


BIG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (10 * 1024 * 1024 + 10)).decode()


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"image_list": []}, "1 to 4"),
        ({"image_list": [{"image": picture()}] * 5}, "1 to 4"),
        ({"image_list": None}, "image_list: required"),
        ({"image_list": [{"image": picture()}, {"url": "x"}]}, "image_list[1]: must be an object"),
        ({"image_list": [{"image": picture()}, {"image": 3}]}, "non-empty string"),
        (
            {"image_list": [{"image": picture()}, {"image": "data:image/png;base64,AAAA"}]},
            "data: prefix",
        ),
        ({"image_list": [{"image": picture()}, {"image": "%%%not-base64"}]}, "not valid Base64"),
        ({"image_list": [{"image": picture()}, {"image": BIG}]}, "larger than 10MB"),
        (
            {"image_list": [{"image": picture()}, {"image": picture(400, 300, "GIF")}]},
            "JPG, JPEG or PNG",
        ),
        ({"image_list": [{"image": picture()}, {"image": picture(200, 400)}]}, "at least 300x300"),
        (
            {"image_list": [{"image": picture()}, {"image": picture(1000, 300, "JPEG")}]},
            "between 1:2.5",
        ),
        ({"prompt": "x" * 501}, "prompt: at most 500"),
        ({"prompt": 5}, "prompt: must be a string"),
        ({"negative_prompt": "x" * 201}, "negative_prompt: at most 200"),
        ({"mode": "fast"}, "mode: must be one of"),
        ({"duration": 5}, 'duration: must be the string "5" or "10"'),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"cfg_scale": 1.5}, "cfg_scale"),
        ({"cfg_scale": True}, "cfg_scale"),
        ({"static_mask": picture(500, 300)}, "static_mask: must have the same resolution"),
        ({"dynamic_masks": "x"}, "dynamic_masks: must be a list"),
        (
            {"dynamic_masks": [{"mask": picture(), "trajectories": [{"x": 1, "y": 1}]}] * 7},
            "at most 6",
        ),
        ({"dynamic_masks": ["x"]}, "dynamic_masks[0]: must be an object"),
        (
            {"dynamic_masks": [{"mask": picture(), "trajectories": [{"x": 1, "y": 1}]}]},
            "2 to 77 points",
        ),
        ({"dynamic_masks": [{"mask": picture(), "trajectories": None}]}, "2 to 77 points"),
        (
            {
                "dynamic_masks": [
                    {"mask": picture(), "trajectories": [{"x": 1, "y": 1}, {"x": 1.5, "y": 2}]}
                ]
            },
            "trajectories[1]",
        ),
        ({"callback_url": "ftp://x"}, "callback_url: must be an http(s) URL"),
        ({"external_task_id": ""}, "external_task_id: must be a non-empty string"),
        ({"model_name": 7}, "model_name: must be a string"),
    ],
)
async def test_video_create_validation_rejects_with_1201(
    fields: dict[str, Any], fragment: str
) -> None:
    """Every documented video rule is checked server-side: 400/1201 naming the field.

    Mask rules are checked where masks are documented (Kling's API).
    """
    path = KLING_VIDEO if any("mask" in name for name in fields) else VIDEO
    async with running() as api:
        body = video_body()
        body.update(fields)
        status, answer = await api.call(
            "POST", path, {k: v for k, v in body.items() if v is not None}
        )
        assert (status, answer["code"]) == (400, 1201), answer
        assert fragment in answer["message"]
        assert api.sim.statistics().tasks_created == 0


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"subject_image_list": []}, "1 to 4"),
        ({"subject_image_list": [{"subject_image": picture()}] * 5}, "1 to 4"),
        ({"subject_image_list": [{"image": picture()}] * 2}, "subject_image_list[0]"),
        ({"prompt": "x" * 2501}, "prompt: at most 2500"),
        ({"negative_prompt": "x" * 2501}, "negative_prompt: at most 2500"),
        ({"n": 10}, "n: must be an integer from 1 to 9"),
        ({"n": "2"}, "n: must be an integer"),
        ({"aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"scence_image": picture(100, 100)}, "scence_image: "),
        ({"scene_image": "nope!"}, "scene_image: "),
        ({"style_image": picture(300, 1000)}, "style_image: "),
    ],
)
async def test_image_create_validation_rejects_with_1201(
    fields: dict[str, Any], fragment: str
) -> None:
    """Every API.md rule for an image create is checked server-side, answering 400/1201."""
    async with running() as api:
        status, answer = await api.create(IMAGE, **fields)
        assert (status, answer["code"]) == (400, 1201), answer
        assert fragment in answer["message"]


async def test_valid_optional_video_fields_are_accepted() -> None:
    """Masks with matching size, trajectories, cfg_scale, ratio and callback pass (Kling)."""
    async with running() as api:
        status, body = await api.create(
            KLING_VIDEO,
            image_list=[
                {"image": picture()},
                {"image": picture(colour="green")},
                {"image": "http://x.invalid/c.png"},
            ],
            static_mask=picture(colour="white"),
            dynamic_masks=[
                {
                    "mask": picture(colour="black"),
                    "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
                }
            ],
            cfg_scale=0.5,
            aspect_ratio="1:1",
            duration="10",
            mode="pro",
            callback_url="http://127.0.0.1:9/hook",
        )
        assert status == 200, body


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        (VIDEO, {"image_list": [{"image": picture()}]}, 200),
        (KLING_VIDEO, {"image_list": [{"image": picture()}]}, 200),
        (VIDEO, {"prompt": "x" * 500, "negative_prompt": "x" * 200}, 200),
        (KLING_VIDEO, {"prompt": "x" * 2500, "negative_prompt": "x" * 2500}, 200),
        (KLING_VIDEO, {"prompt": "x" * 2501}, 400),
        (VIDEO, {"static_mask": picture()}, 400),
        (VIDEO, {"dynamic_masks": []}, 400),
        (KLING_VIDEO, {"static_mask": picture()}, 200),
        (IMAGE, {"subject_image_list": [{"subject_image": picture()}]}, 200),
        (KLING_IMAGE, {"subject_image_list": [{"subject_image": picture()}] * 4}, 200),
        (IMAGE, {"model_name": "kling-v2-1"}, 200),
        (KLING_IMAGE, {"model_name": "kling-v2-1", "prompt": "x" * 2500}, 200),
    ],
)
async def test_each_surface_checks_the_rules_it_documents_now(
    path: str, fields: dict[str, Any], status: int
) -> None:
    """One image, kling-v2-1, CometAPI's 500/200 and no masks, Kling's 2,500 and masks."""
    async with running() as api:
        answer, body = await api.create(path, **fields)
        assert answer == status, body
        if status == 400:
            assert body["code"] == 1201


async def test_cometapi_video_refuses_masks_naming_them() -> None:
    """CometAPI's video page says not to send masks: the simulator refuses them by name."""
    async with running() as api:
        status, body = await api.create(VIDEO, static_mask=picture())
        assert (status, body["code"]) == (400, 1201)
        assert body["message"].startswith("static_mask: not supported")


async def test_unknown_model_answers_404_1203_and_bad_json_400() -> None:
    """An unknown model_name answers 404/1203; a body that is not JSON answers 400/1201."""
    async with running() as api:
        status, body = await api.create(IMAGE, model_name="kling-v9")
        assert (status, body["code"]) == (404, 1203)
        async with api.session.post(
            api.sim.url + VIDEO, data=b"{nope", headers=api.headers
        ) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 1201
        status, body = await api.call("POST", VIDEO, [1, 2])
        assert (status, body["code"]) == (400, 1201)
        status, body = await api.call("POST", IMAGE, "text")
        assert (status, body["code"]) == (400, 1201)


async def test_wrapped_shape_on_cometapi_queries() -> None:
    """wrapped_rate=1 nests CometAPI query answers in data.data; Kling paths stay flat."""
    async with running(wrapped_rate=1.0, durations=FIXED) as api:
        _, body = await api.create(VIDEO)
        task_id = body["data"]["task_id"]
        wrapped = await api.task(VIDEO, task_id)
        assert wrapped["status"] == "SUBMITTED"
        assert wrapped["data"]["task_status"] == "submitted"
        api.sim.advance(30)
        assert (await api.task(VIDEO, task_id))["status"] == "IN_PROGRESS"
        api.sim.advance(30)
        done = await api.task(VIDEO, task_id)
        assert (done["status"], done["progress"]) == ("SUCCESS", "100%")
        assert done["data"]["task_result"]["videos"]
        assert (await api.task(KLING_VIDEO, task_id))["task_status"] == "succeed"


async def test_time_scale_makes_a_minute_take_milliseconds() -> None:
    """time_scale=0.001 on the real clock: a 60 s video is done within a short bounded wait."""
    async with running(manual_clock=False, time_scale=0.001, durations=FIXED) as api:
        _, body = await api.create(VIDEO)
        task_id = body["data"]["task_id"]
        deadline = time.monotonic() + 2.0
        status = "submitted"
        while status != "succeed" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            status = (await api.task(VIDEO, task_id))["task_status"]
        assert status == "succeed"


def test_duration_distributions_sample_within_their_bounds() -> None:
    """Fixed, Uniform and LogNormal sample as configured; the lognormal respects its cap."""
    rng = random.Random(1)
    assert Fixed(seconds=3).sample(rng) == 3
    assert all(2 <= Uniform(low=2, high=4).sample(rng) <= 4 for _ in range(100))
    samples = [LogNormal(median=10, sigma=0.5, cap=20).sample(rng) for _ in range(500)]
    assert max(samples) <= 20
    assert 7 < sorted(samples)[250] < 13


async def test_same_seed_gives_same_times_but_fresh_task_ids() -> None:
    """Two simulators with one seed give tasks the same times, but never the same task ids."""
    runs = []
    for _ in range(2):
        async with running(
            seed=42, durations={"video": Uniform(low=10, high=100)}, start_time=0.0
        ) as api:
            _, body = await api.create(VIDEO)
            api.sim.advance(100)
            runs.append(await api.task(VIDEO, body["data"]["task_id"]))
    assert runs[0]["updated_at"] == runs[1]["updated_at"]
    assert runs[0]["task_id"] != runs[1]["task_id"]


async def test_admin_endpoints_and_unknown_paths() -> None:
    """/_sim/statistics mirrors statistics(); /_sim/advance moves time; unknown paths 404/1202."""
    async with running() as api:
        await api.create(VIDEO, external_task_id="e1")
        status, body = await api.call("GET", "/nope")
        assert (status, body["code"]) == (404, 1202)
        status, moved = await api.call("POST", "/_sim/advance?seconds=2.5")
        assert (status, moved) == (200, {"now": 2.5})
        assert (await api.call("POST", "/_sim/advance?seconds=-1"))[0] == 400
        assert (await api.call("POST", "/_sim/advance"))[0] == 400
        status, stats = await api.call("GET", "/_sim/statistics")
        assert status == 200
        assert stats["requests"]["video.create 200"] == 1
        assert stats["requests"]["unknown 404"] == 1
        assert stats["tasks_created_per_external_id"] == {"e1": 1}
        assert stats["peak_concurrency"]["video"] == 1
        assert api.sim.statistics().requests_to("admin") == 4


def test_config_rejects_nonsense() -> None:
    """Config objects validate their knobs."""
    with pytest.raises(ValueError, match="high"):
        Uniform(low=5, high=1)
    with pytest.raises(ValueError, match="whsec_"):
        CallbackConfig(secret="plain")
    with pytest.raises(ValueError, match="unknown actions"):
        Fault(kind=FaultKind.HTML, on={"delete"})
    with pytest.raises(ValueError, match="at least one"):
        SimulatorConfig(api_keys=())
    with pytest.raises(ValueError, match="unknown kinds"):
        SimulatorConfig(durations={"audio": Fixed(seconds=1)})


async def test_lifetime_misuse() -> None:
    """url before start raises; advancing backwards raises; aclose twice is harmless."""
    sim = Simulator(SimulatorConfig(manual_clock=True))
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.url
    with pytest.raises(ValueError, match="backwards"):
        sim.advance(-1)
    await sim.start()
    await sim.aclose()
    await sim.aclose()


async def test_port_in_use_fails_start_cleanly() -> None:
    """Binding a busy port raises OSError from start and leaves nothing running."""
    async with Simulator() as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            async with Simulator(port=port):
                pass
        async with (
            aiohttp.ClientSession() as session,
            session.get(first.url + "/_sim/statistics") as answer,
        ):
            assert answer.status == 200


async def test_rate_limit_on_the_real_clock_reports_a_long_retry_after() -> None:
    """On the real clock a slow bucket refuses a second request with a long Retry-After."""
    async with running(manual_clock=False, rate_limit=RateLimit(rate=0.01, burst=1)) as api:
        assert api.sim.api_key == "sk-simulator"
        assert (await api.call("GET", VIDEO))[0] == 200
        async with api.session.get(api.sim.url + VIDEO, headers=api.headers) as response:
            assert response.status == 429
            assert 99 <= int(response.headers["Retry-After"]) <= 100


def test_public_names_are_sorted_and_resolve() -> None:
    """kling_async.simulator.__all__ is sorted (constants, classes, functions) and resolves."""
    import kling_async.simulator as simulator  # noqa: PLC0415

    def group(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert simulator.__all__ == sorted(simulator.__all__, key=group)
    assert all(hasattr(simulator, name) for name in simulator.__all__)


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"\xff\xd8\xff\xff\xd0\xff\xc0\x00\x11\x08\x01\x90\x02\x58", (600, 400)),  # fill, RST
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x01", None),  # cut inside the frame header
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x02\x58", None),  # zero height
        (b"\xff\xd8\xff\xda\x00\x08\x00\x00", None),  # scan data before any frame header
        (b"\xff\xd8\xff\xe0\x00\x01\x00\x00", None),  # a segment length below 2
    ],
)
def test_the_simulators_own_jpeg_reader(data: bytes, size: tuple[int, int] | None) -> None:
    """The simulator reads JPEG sizes on its own: fill bytes and RST skipped, damage is None."""
    assert image_size(data) == size
