"""Job files for the command line: JSONL/CSV reading and validation through the core models."""

import base64
import json
import pathlib

import pytest
from PIL import Image as PILImage

import kling_async._cli.jobs as jobs_mod
from kling_async import (
    Duration,
    ImageAspectRatio,
    ImageOrigin,
    Mode,
    MultiImageToImage,
    MultiImageToVideo,
)
from kling_async._cli.jobs import (
    PROFILE_RULES,
    ImageRef,
    ImageSource,
    JobProblem,
    build_request,
    detect_format,
    load_jobs,
    read_job_file,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _png(path: pathlib.Path, size: tuple[int, int] = (400, 400)) -> pathlib.Path:
    PILImage.new("RGB", size, "orange").save(path)
    return path


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (500, 300))
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "c.png")
    return tmp_path


def _jsonl(folder: pathlib.Path, *rows: object, name: str = "jobs.jsonl") -> pathlib.Path:
    path = folder / name
    path.write_text(
        "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n",
        encoding="utf-8",
    )
    return path


def _problems(path: pathlib.Path) -> list[tuple[int, str | None, str | None, str]]:
    _, _, problems = load_jobs(path)
    return [(p.line, p.key, p.field, p.rule) for p in problems]


def test_sample_job_files_are_valid() -> None:
    """The bundled examples/jobs.jsonl and jobs.csv load without a single problem."""
    for name, count in (("jobs.jsonl", 7), ("jobs.csv", 5)):
        job_file, jobs, problems = load_jobs(EXAMPLES / name)
        assert problems == ()
        assert job_file.rows == len(jobs) == count
        kinds = {job.request.kind.value for job in jobs}
        assert kinds == {"video", "image"}


def test_sample_images_follow_the_api_rules() -> None:
    """Every bundled sample image is a real PNG/JPEG >= 300 px, ratio within 2.5, small."""
    total = 0
    for path in sorted((EXAMPLES / "images").iterdir()):
        with PILImage.open(path) as image:
            width, height = image.size
            assert image.format in {"PNG", "JPEG"}
        assert min(width, height) >= 300
        assert max(width, height) / min(width, height) <= 2.5
        total += path.stat().st_size
    assert total < 200_000


def test_jsonl_row_builds_a_video_request(folder: pathlib.Path) -> None:
    """A JSONL video row becomes MultiImageToVideo with paths resolved against the file."""
    path = _jsonl(
        folder,
        {
            "key": "v1",
            "kind": "Video",
            "images": ["a.png", "sub/c.png", "https://example.com/x.png"],
            "prompt": "hello",
            "mode": "pro",
            "duration": 10,
            "cfg_scale": 1,
            "aspect_ratio": "9:16",
        },
    )
    _, jobs, problems = load_jobs(path)
    assert problems == ()
    request = jobs[0].request
    assert isinstance(request, MultiImageToVideo)
    assert request.mode is Mode.PRO
    assert request.duration is Duration.TEN
    assert request.cfg_scale == 1.0
    assert [image.origin for image in request.images] == [
        ImageOrigin.PATH,
        ImageOrigin.PATH,
        ImageOrigin.URL,
    ]
    assert request.images[1].source == folder / "sub" / "c.png"


def test_jsonl_image_row_with_wire_names_and_objects(folder: pathlib.Path) -> None:
    """Wire spellings (subject_image_list, scence_image) and image objects are accepted."""
    data = base64.b64encode((folder / "a.png").read_bytes()).decode()
    path = _jsonl(
        folder,
        {
            "key": 7,
            "kind": "image",
            "subject_image_list": [
                {"subject_image": "a.png"},
                {"base64": data},
                {"url": "http://example.com/y.jpg"},
                f"data:image/png;base64,{data}",
            ],
            "scence_image": {"path": "b.png"},
            "style_image": data,
            "n": "3",
            "aspect_ratio": "4:3",
        },
    )
    _, jobs, problems = load_jobs(path)
    assert problems == ()
    assert jobs[0].key == "7"
    request = jobs[0].request
    assert isinstance(request, MultiImageToImage)
    assert [image.origin for image in request.images] == [
        ImageOrigin.PATH,
        ImageOrigin.BASE64,
        ImageOrigin.URL,
        ImageOrigin.BASE64,
    ]
    assert request.scene_image is not None
    assert request.scene_image.origin is ImageOrigin.PATH
    assert request.style_image is not None
    assert request.style_image.origin is ImageOrigin.BASE64
    assert request.n == 3
    assert request.aspect_ratio is ImageAspectRatio.R4_3


def test_csv_rows_split_lists_and_read_json_cells(folder: pathlib.Path) -> None:
    """CSV cells: lists as a|b or JSON, numbers converted, empty cells left out."""
    path = folder / "jobs.csv"
    masks = json.dumps([{"mask": "a.png", "trajectories": [{"x": 1, "y": 2}, [3, 4]]}])
    masks_cell = '"' + masks.replace('"', '""') + '"'
    path.write_text(
        "key,kind,images,prompt,n,cfg_scale,dynamic_masks\n"
        "one,video,a.png | sub/c.png,walk,,0.25," + masks_cell + "\n"
        "\n"
        'two,image,"[""a.png"", ""b.png""]","a, b",2,,\n',
        encoding="utf-8",
    )
    _, jobs, problems = load_jobs(path, rules=PROFILE_RULES["kling"])  # masks: Kling only
    assert problems == ()
    first, second = (job.request for job in jobs)
    assert isinstance(first, MultiImageToVideo)
    assert len(first.images) == 2
    assert first.cfg_scale == 0.25
    assert first.dynamic_masks[0].trajectories[1].x == 3
    assert isinstance(second, MultiImageToImage)
    assert second.prompt == "a, b"
    assert second.n == 2
    assert [job.line for job in jobs] == [2, 4]


def test_every_bad_line_is_reported_with_line_field_and_rule(folder: pathlib.Path) -> None:
    """Each bad row yields problems naming its line, key, field and rule; good rows pass."""
    _png(folder / "small.png", (200, 500))
    (folder / "fake.png").write_bytes(b"not an image at all")
    path = _jsonl(
        folder,
        {"key": "ok", "kind": "video", "images": ["a.png", "b.png"]},
        "",
        "# a comment line",
        {"key": "ok", "kind": "video", "images": ["a.png", "b.png"]},
        {"kind": "video", "images": ["a.png", "b.png"]},
        {"key": "k", "kind": "audio", "images": ["a.png", "b.png"]},
        {"key": "m", "kind": "video", "images": ["a.png", "missing.png"], "n": 2},
        {"key": "s", "kind": "image", "images": ["a.png", "small.png"]},
        {"key": "f", "kind": "video", "images": ["a.png", "fake.png"]},
        {"key": "one", "kind": "video", "images": ["a.png"] * 5},
        {"key": "r", "kind": "image", "images": ["a.png", "b.png"], "aspect_ratio": "5:4"},
        {"key": "x", "kind": "video", "images": "a.png", "external_task_id": "e"},
        {"key": "t", "kind": "video", "images": ["a.png", "b.png"], "color": "red"},
        "{broken",
        "[1, 2]",
    )
    problems = _problems(path)
    assert problems[0] == (4, "ok", "key", "duplicate key (first on line 1)")
    assert (5, None, "key", "required: a unique name for the job") in problems
    assert (6, "k", "kind", "must be video or image, not 'audio'") in problems
    assert (7, "m", "images[1]", "file not found: missing.png") in problems
    assert (7, "m", "n", "not a field of video jobs (it belongs to image jobs)") in problems
    assert (8, "s", "images[1]", "200x500 is below 300 px") in problems
    assert any(p[:3] == (9, "f", "images[1]") for p in problems)
    assert (10, "one", "images", "5 images, must be 1 to 4") in problems
    assert any(p[:3] == (11, "r", "aspect_ratio") and "'5:4'" in p[3] for p in problems)
    assert (12, "x", "images", "must be a list of images, not a string") in problems
    assert any(p[:3] == (12, "x", "external_task_id") for p in problems)
    assert (13, "t", "color", "unknown field") in problems
    assert any(p[0] == 14 and p[3].startswith("not valid JSON") for p in problems)
    assert (15, None, None, "expected a JSON object, got a list") in problems
    _, jobs, _ = load_jobs(path)
    assert [job.key for job in jobs] == ["ok"]


@pytest.mark.parametrize(
    ("row", "field", "rule"),
    [
        ({"key": ""}, "key", "must not be empty"),
        ({"key": "a\tb"}, "key", "must not contain control characters"),
        ({"key": "k" * 201}, "key", "at most 200 characters, got 201"),
        ({"key": True}, "key", "must be a string, not a boolean"),
        ({"key": ["k"]}, "key", "must be a string, not a list"),
        ({"kind": None}, "kind", "required: video or image"),
        ({"prompt": {"a": 1}}, "prompt", "must be a string, not an object"),
        ({"cfg_scale": True}, "cfg_scale", "must be a number, not a boolean"),
        ({"cfg_scale": [1]}, "cfg_scale", "must be a number, not [1]"),
        ({"images": [1, 2]}, "images[0]", "must be a path, URL or Base64 text, not a number"),
        ({"images": ["a.png", " "]}, "images[1]", "must not be empty"),
        ({"images": ["a.png", {"path": "a.png", "url": "u"}]}, "images[1]", "exactly one"),
        ({"images": ["a.png", {"url": ""}]}, "images[1]", "url must be a non-empty string"),
        ({"images": ["a.png", {"base64": "@@@"}]}, "images[1]", "not valid Base64"),
        ({"image_list": ["a.png", "b.png"]}, "image_list", "given twice (also as images)"),
        ({"static_mask": None}, None, None),
        ({"dynamic_masks": {}}, "dynamic_masks", "must be a list of mask groups, not an object"),
        ({"dynamic_masks": [1]}, "dynamic_masks[0]", "must be an object"),
        (
            {"dynamic_masks": [{"mask": "a.png", "trajectories": 3}]},
            "dynamic_masks[0].trajectories",
            "must be a list of points",
        ),
        (
            {"dynamic_masks": [{"mask": "a.png", "trajectories": [{"x": 1}]}]},
            "dynamic_masks[0].trajectories[0]",
            'must be {"x": int, "y": int}',
        ),
        (
            {"dynamic_masks": [{"mask": "a.png", "trajectories": [[1, 2]]}]},
            "dynamic_masks[0].trajectories",
            "1 points, must be 2 to 77",
        ),
        (
            {"dynamic_masks": [{"mask": "a.png", "trajectories": [[1, "b"], [1, 2]]}]},
            "dynamic_masks[0].trajectories[0].y",
            "must be a whole number, not 'b'",
        ),
        (
            {"dynamic_masks": [{"mask": "ftp://x", "trajectories": [[1, 2], [1, 2]]}]},
            "dynamic_masks[0].mask",
            "file not found",
        ),
        ({"static_mask": "http://"}, "static_mask", "URL has no host"),
        ({"images": ["a.png", "data:image/png;base64,@@"]}, "images[1]", "not valid Base64"),
    ],
)
def test_field_rules(
    folder: pathlib.Path, row: dict[str, object], field: str | None, rule: str | None
) -> None:
    """Each malformed field gives one problem naming that field and the rule."""
    base: dict[str, object] = {"key": "k", "kind": "video", "images": ["a.png", "b.png"]}
    path = _jsonl(folder, {**base, **row})
    problems = _problems(path)
    if field is None:
        assert problems == []
        return
    assert rule is not None
    assert any(p[2] == field and rule in p[3] for p in problems), problems


def test_integer_fields(folder: pathlib.Path) -> None:
    """n accepts whole numbers (also 2.0 and "2"), refuses booleans and fractions."""
    base = {"kind": "image", "images": ["a.png", "b.png"]}
    path = _jsonl(
        folder,
        {**base, "key": "a", "n": 2.0},
        {**base, "key": "b", "n": True},
        {**base, "key": "c", "n": 2.5},
        {**base, "key": "d", "n": "two"},
    )
    problems = _problems(path)
    assert [p[:3] for p in problems] == [(2, "b", "n"), (3, "c", "n"), (4, "d", "n")]
    assert problems[0][3] == "must be a whole number, not a boolean"


def test_model_rules_are_reported_per_field(folder: pathlib.Path) -> None:
    """Rules of the core models come back with the job file's field names."""
    _png(folder / "wide.png", (900, 300))
    base: dict[str, object] = {"kind": "image", "images": ["a.png", "b.png"]}
    path = _jsonl(
        folder,
        {**base, "key": "a", "scene_image": "wide.png"},
        {**base, "key": "b", "images": ["a.png", "wide.png"]},
        {**base, "key": "c", "style_image": "ftp://nope/x.png"},
        {**base, "key": "d", "images": ["a.png", "ftp://x.png"]},
        {**base, "key": "e", "callback_url": "nope"},
        {"kind": "video", "images": ["a.png", "b.png"], "key": "f", "static_mask": "wide.png"},
    )
    problems = _problems(path)
    fields = [(p[1], p[2]) for p in problems]
    assert ("a", "scene_image") in fields
    assert ("b", "images[1]") in fields
    assert ("e", "callback_url") in fields
    assert ("f", "static_mask") in fields
    assert problems[0][3] == "900x300 has aspect ratio 3.00:1, outside 1:2.5..2.5:1"


def test_image_strings_are_told_apart(folder: pathlib.Path) -> None:
    """URLs, data URIs, long Base64 and file names are recognised by their shape."""
    data = base64.b64encode(b"\x89PNG" + b"x" * 400).decode()
    read = jobs_mod._read_image
    assert read("f", "https://h/x.png", folder) == ImageRef(ImageSource.URL, "https://h/x.png")
    assert read("f", data, folder).source is ImageSource.BASE64
    assert read("f", "data:image/png;base64," + data, folder).value == data
    assert read("f", "a.png", folder) == ImageRef(ImageSource.PATH, str(folder / "a.png"))
    assert read("f", str(folder / "a.png"), folder).source is ImageSource.PATH
    assert read("f", {"image": "a.png"}, folder).source is ImageSource.PATH


def test_build_request_maps_image_errors_to_fields(folder: pathlib.Path) -> None:
    """An image the core refuses at construction is reported under its job-file field."""
    raw = jobs_mod.RawJob(
        line=1,
        key="k",
        kind="image",
        fields={
            "images": (
                ImageRef(ImageSource.PATH, str(folder / "a.png")),
                ImageRef(ImageSource.URL, "ftp://bad"),
            ),
        },
    )
    with pytest.raises(ValueError, match=r"images\[1\]"):
        build_request(raw)
    raw = jobs_mod.RawJob(
        line=1,
        key="k",
        kind="image",
        fields={
            "images": (ImageRef(ImageSource.PATH, "a.png"), ImageRef(ImageSource.PATH, "b.png")),
            "style_image": ImageRef(ImageSource.BASE64, "data:xyz"),
        },
    )
    with pytest.raises(ValueError, match="style_image"):
        build_request(raw)
    mask = jobs_mod.DynamicMaskSpec(mask=ImageRef(ImageSource.URL, "ftp://m"), trajectories=())
    raw = jobs_mod.RawJob(
        line=1,
        key="k",
        kind="video",
        fields={
            "images": (ImageRef(ImageSource.PATH, "a.png"), ImageRef(ImageSource.PATH, "b.png")),
            "dynamic_masks": (mask,),
        },
    )
    with pytest.raises(ValueError, match=r"dynamic_masks\[0\]\.mask"):
        build_request(raw)


def test_csv_problems(folder: pathlib.Path) -> None:
    """CSV: too many cells, bad JSON cells and bad numbers are reported by line."""
    path = folder / "jobs.csv"
    path.write_text(
        "key,kind,images,n,dynamic_masks\n"
        "a,image,a.png|b.png,1,\n"
        "b,image,a.png|b.png,x,\n"
        "c,video,a.png|b.png,,[oops\n"
        "d,video,a.png|b.png,,,extra\n"
        'e,image,"[""a.png""",1,\n',
        encoding="utf-8",
    )
    problems = _problems(path)
    assert [(p[0], p[2]) for p in problems] == [
        (3, "n"),
        (4, "dynamic_masks"),
        (5, None),
        (6, "images"),
    ]
    assert problems[2][3] == "6 cells but the header names 5 columns"


def test_csv_edge_cases(folder: pathlib.Path) -> None:
    """An empty CSV has no rows; a semicolon CSV is sniffed; unreadable CSV is reported."""
    empty = folder / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert read_job_file(empty).rows == 0
    semi = folder / "semi.csv"
    semi.write_text("key;kind;images\nk;video;a.png|b.png\n", encoding="utf-8")
    _, jobs, problems = load_jobs(semi)
    assert problems == ()
    assert len(jobs) == 1
    broken = folder / "broken.csv"
    broken.write_text('key,kind,images\nk,video,"a.png\x00|b.png"\n', encoding="utf-8")
    problems_broken = _problems(broken)
    assert problems_broken
    assert problems_broken[0][0] == 2


def test_format_detection(tmp_path: pathlib.Path) -> None:
    """The format comes from the suffix, else from the first character."""
    assert detect_format(pathlib.Path("x.CSV"), "{") == "csv"
    assert detect_format(pathlib.Path("x.ndjson"), "key") == "jsonl"
    assert detect_format(pathlib.Path("x.txt"), '  {"key": 1}') == "jsonl"
    assert detect_format(pathlib.Path("x.txt"), "key,kind") == "csv"


def test_problem_text_and_json() -> None:
    """A problem prints as 'line N [key] field: rule' and converts to JSON."""
    problem = JobProblem(3, "k", "images[1]", "file not found: x.png")
    assert str(problem) == "line 3 [k] images[1]: file not found: x.png"
    assert str(JobProblem(4, None, None, "not valid JSON")) == "line 4: not valid JSON"
    assert problem.to_json() == {
        "line": 3,
        "key": "k",
        "field": "images[1]",
        "rule": "file not found: x.png",
    }


def test_core_type_errors_become_problems(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TypeError/ValueError from the core is still reported as a problem of its line."""

    def explode(job: object) -> object:
        raise TypeError("something odd")

    monkeypatch.setattr(jobs_mod, "build_request", explode)
    path = _jsonl(folder, {"key": "k", "kind": "video", "images": ["a.png", "b.png"]})
    assert _problems(path) == [(1, "k", None, "something odd")]


def test_spreadsheet_headers_and_one_image_per_column(folder: pathlib.Path) -> None:
    """CSV headers are case/space-insensitive; image1..image4 columns form the images list."""
    path = folder / "sheet.csv"
    path.write_text(
        "Key,Kind,Image 2,Image 1,Negative Prompt\nk,video,b.png,a.png,no text\nm,video,,a.png,\n",
        encoding="utf-8",
    )
    _, jobs, problems = load_jobs(path)
    request = jobs[0].request
    assert isinstance(request, MultiImageToVideo)
    assert [image.source for image in request.images] == [folder / "a.png", folder / "b.png"]
    assert request.negative_prompt == "no text"
    assert problems == ()
    assert [image.source for image in jobs[1].request.images] == [folder / "a.png"]
    both = folder / "both.csv"
    both.write_text("key,kind,images,image3\nk,video,a.png|b.png,c.png\n", encoding="utf-8")
    assert [(p.field, p.rule) for p in load_jobs(both)[2]] == [("image3", "unknown field")]
