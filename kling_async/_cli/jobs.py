"""Job files for the command line: JSONL or CSV rows turned into checked requests.

A job file holds one job per JSONL line (or CSV row) with a ``key``, a ``kind``
(``video`` or ``image``) and the request fields under their Python names. Images are
local paths (relative to the job file), http(s) URLs or Base64. Reading happens in two
passes so every problem of the file is reported at once: :func:`read_job_file` checks
the shape of each row, then :func:`load_jobs` builds the requests through the core
models, which check every rule of the API (image bytes included).
"""

import base64
import binascii
import csv
import enum
import io
import json
import math
import os
import pathlib
import re
from collections.abc import Iterator, Mapping
from typing import Final

import attrs

import kling_async as ka

__all__ = [
    "PROFILE_RULES",
    "ImageRef",
    "JobFile",
    "JobProblem",
    "ParsedJob",
    "RawJob",
    "build_request",
    "load_jobs",
    "read_job_file",
]

MAX_KEY_LENGTH: Final = 200
MAX_JSON_DEPTH: Final = 16
"""Deepest nesting of lists and objects in a JSONL row (a row needs 5 at most)."""
MAX_NUMBER_CHARS: Final = 40
"""Longest number literal read from a job file (a real value needs far fewer)."""

_LIST_SEPARATOR: Final = "|"
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s_-]+")
_DATA_URI = re.compile(r"data:[\w/+.-]*;base64,", re.IGNORECASE)
_IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg")
_IMAGE_COLUMN = re.compile(r"images?_?(\d+)")
# A JSON string literal (escapes included), and the brackets left outside of strings.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
# Control characters (C0, DEL, C1); free text may hold tabs and line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Unix, Windows and old Mac line ends only: U+2028 and friends are text, not line breaks.
_LINE_END = re.compile(r"\r\n|\r|\n")


class FieldType(enum.Enum):
    """How a field's value is read and checked."""

    TEXT = "text"
    DURATION = "duration"
    INTEGER = "integer"
    NUMBER = "number"
    IMAGE = "image"
    IMAGES = "images"
    MASKS = "masks"


COMMON_FIELDS: Final[Mapping[str, FieldType]] = {
    "images": FieldType.IMAGES,
    "prompt": FieldType.TEXT,
    "negative_prompt": FieldType.TEXT,
    "model_name": FieldType.TEXT,
    "aspect_ratio": FieldType.TEXT,
    "callback_url": FieldType.TEXT,
}
VIDEO_FIELDS: Final[Mapping[str, FieldType]] = {
    **COMMON_FIELDS,
    "mode": FieldType.TEXT,
    "duration": FieldType.DURATION,
    "cfg_scale": FieldType.NUMBER,
    "static_mask": FieldType.IMAGE,
    "dynamic_masks": FieldType.MASKS,
}
IMAGE_FIELDS: Final[Mapping[str, FieldType]] = {
    **COMMON_FIELDS,
    "scene_image": FieldType.IMAGE,
    "style_image": FieldType.IMAGE,
    "n": FieldType.INTEGER,
}
FIELDS_BY_KIND: Final[Mapping[str, Mapping[str, FieldType]]] = {
    "video": VIDEO_FIELDS,
    "image": IMAGE_FIELDS,
}
# Wire spellings a user may copy from the API docs.
ALIASES: Final[Mapping[str, str]] = {
    "image_list": "images",
    "subject_image_list": "images",
    "scence_image": "scene_image",
}
_IMAGE_ITEM_KEYS: Final = ("image", "subject_image")
# Fields of prose, which may hold tabs and line breaks (codes, paths and URLs may not).
_FREE_TEXT: Final = frozenset({"prompt", "negative_prompt"})
_RESERVED: Final[Mapping[str, str]] = {
    "external_task_id": "set by the batch from the job key; leave it out",
}


@attrs.frozen
class JobProblem:
    """One thing wrong with a job file: where it is, which field, which rule."""

    line: int
    key: str | None
    field: str | None
    rule: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.key is not None:
            where += f" [{self.key}]"
        if self.field is not None:
            return f"{where} {self.field}: {self.rule}"
        return f"{where}: {self.rule}"

    def to_json(self) -> dict[str, object]:
        """The problem as a JSON-ready mapping."""
        return {"line": self.line, "key": self.key, "field": self.field, "rule": self.rule}


class ImageSource(enum.Enum):
    """Where an image of a job file comes from."""

    PATH = "path"
    URL = "url"
    BASE64 = "base64"


@attrs.frozen
class ImageRef:
    """An image named by a job file; paths are already resolved against the file."""

    source: ImageSource
    value: str = attrs.field(repr=lambda v: v if len(v) <= 80 else f"<{len(v)} chars>")


@attrs.frozen
class DynamicMaskSpec:
    """A dynamic mask group as written in a job file."""

    mask: ImageRef
    trajectories: tuple[tuple[int, int], ...]


FieldValue = str | int | float | ImageRef | tuple[ImageRef, ...] | tuple[DynamicMaskSpec, ...]


@attrs.frozen
class RawJob:
    """One row of a job file with well-formed fields, not yet checked by the core models."""

    line: int
    key: str
    kind: str
    fields: Mapping[str, FieldValue]


@attrs.frozen
class ParsedJob:
    """A job ready to run: its line, key and checked request."""

    line: int
    key: str
    request: ka.Request


@attrs.frozen
class JobFile:
    """Everything read from a job file: the good rows and every problem found."""

    path: pathlib.Path
    rows: int
    jobs: tuple[RawJob, ...]
    problems: tuple[JobProblem, ...]


class _RowError(Exception):
    """A field of one row is malformed (internal: becomes a JobProblem)."""

    def __init__(self, field: str | None, rule: str) -> None:
        super().__init__(rule)
        self.field = field
        self.rule = rule


def detect_format(path: pathlib.Path, head: str) -> str:
    """``"csv"`` or ``"jsonl"`` from the file name, else from the first character."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        return "csv"
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    return "jsonl" if head.lstrip().startswith(("{", "#")) else "csv"


def read_job_file(path: str | os.PathLike[str]) -> JobFile:
    """Read a JSONL or CSV job file, checking the shape of every row.

    Args:
        path: the job file; image paths inside it are relative to its folder.

    Raises:
        OSError: the file cannot be read.
        UnicodeDecodeError: the file is not UTF-8 text.
    """
    file = pathlib.Path(path)
    text = file.read_text(encoding="utf-8-sig")
    base = file.resolve().parent
    rows = _csv_rows(text) if detect_format(file, text) == "csv" else _jsonl_rows(text)
    jobs: list[RawJob] = []
    problems: list[JobProblem] = []
    first_line: dict[str, int] = {}
    count = 0
    for line, row, from_csv in rows:
        count += 1
        job, row_problems = _check_row(line, row, base, from_csv=from_csv)
        problems.extend(row_problems)
        if job is None:
            continue
        if job.key in first_line:
            rule = f"duplicate key (first on line {first_line[job.key]})"
            problems.append(JobProblem(line, job.key, "key", rule))
            continue
        first_line[job.key] = line
        if not row_problems:
            jobs.append(job)
    return JobFile(path=file, rows=count, jobs=tuple(jobs), problems=tuple(problems))


_Row = tuple[int, Mapping[str, object] | JobProblem, bool]


class _JsonLimit(Exception):  # noqa: N818 - internal signal, becomes a JobProblem
    """A JSON row breaks a limit of the job file (depth, number size, duplicate key)."""

    def __init__(self, field: str | None, rule: str) -> None:
        super().__init__(rule)
        self.field = field
        self.rule = rule


def _json_depth(text: str) -> int:
    """How deeply lists and objects nest in ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value: dict[str, object] = {}
    for name, item in pairs:
        if name in value:
            raise _JsonLimit(_show(name), "given twice in one object")
        value[name] = item
    return value


def _json_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _JsonLimit(None, f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _JsonLimit(None, f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise _JsonLimit(None, f"the number {text} is out of range")
    return value


def _json_constant(text: str) -> object:
    raise _JsonLimit(None, f"{text} is not a JSON number")


def _parse_json(text: str) -> tuple[object, _JsonLimit | None]:
    if _json_depth(text) > MAX_JSON_DEPTH:
        return None, _JsonLimit(None, f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except _JsonLimit as exc:
        return None, exc
    except json.JSONDecodeError as exc:
        return None, _JsonLimit(None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:  # pragma: no cover - the depth check above comes first
        return None, _JsonLimit(None, f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value, None


def _jsonl_rows(text: str) -> Iterator[_Row]:
    for number, line in enumerate(_LINE_END.split(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            continue
        value, problem = _parse_json(stripped)
        if problem is not None:
            yield number, JobProblem(number, None, problem.field, problem.rule), False
            continue
        if not isinstance(value, dict):
            rule = f"expected a JSON object, got {_json_type(value)}"
            yield number, JobProblem(number, None, None, rule), False
            continue
        yield number, value, False


def _delimiter(text: str) -> str:
    # Only the delimiter is guessed: quoting stays the spreadsheet standard ('"', doubled
    # to escape), since a guessed quoting turns a stray quote into silent cell merging.
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _csv_rows(text: str) -> Iterator[_Row]:
    # Universal line ends only (newline=""), so a cell may hold U+2028; strict=True makes
    # a stray or unterminated quote an error instead of a cell that swallows later rows.
    lines = io.StringIO(text, newline="").readlines()
    delimiter = _delimiter(text)
    reader = csv.reader(lines, csv.excel, delimiter=delimiter, strict=True)
    try:
        header = [_column_name(name) for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, JobProblem(1, None, None, f"unreadable CSV header ({exc})"), True
        return
    offset = reader.line_num
    repeated = _repeated_column(header)
    while offset < len(lines):
        restart = None
        reader = csv.reader(lines[offset:], csv.excel, delimiter=delimiter, strict=True)
        start = offset + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line, end = start, offset + reader.line_num
                if "end of data" in str(exc):
                    rule = "unterminated quote: the quoted cell runs to the end of the file"
                elif end > line:
                    rule = f"unbalanced quote: a quoted cell runs on to line {end} ({exc})"
                else:
                    rule = f"unreadable CSV ({exc})"
                yield line, JobProblem(line, None, None, rule), True
                if end > line:
                    # The bad record ran over later lines: read them again as rows.
                    restart = line
                    break
                start = end + 1
                continue
            line, start = start, offset + reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            yield line, _csv_row(line, header, cells, repeated), True
        if restart is None:
            return
        offset = restart


def _repeated_column(header: list[str]) -> JobProblem | None:
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if not name:
            continue
        if name in seen:
            column = _show(name)
            rule = f"not read: the header names column {column!r} twice ({seen[name]} and {number})"
            return JobProblem(0, None, None, rule)
        seen[name] = number
    return None


def _csv_row(
    line: int, header: list[str], cells: list[str], repeated: JobProblem | None
) -> Mapping[str, object] | JobProblem:
    if repeated is not None:
        return attrs.evolve(repeated, line=line)
    if len(cells) > len(header):
        rule = f"{len(cells)} cells but the header names {len(header)} columns"
        return JobProblem(line, None, None, rule)
    row: dict[str, object] = {
        name: cell.strip()
        for name, cell in zip(header, cells, strict=False)
        if name and cell.strip()
    }
    return _gather_image_columns(row)


def _column_name(header: str) -> str:
    # Spreadsheet headers: "Negative prompt" is negative_prompt.
    return "_".join(header.strip().lower().replace("-", " ").split())


def _gather_image_columns(row: dict[str, object]) -> dict[str, object]:
    """One image per column (image1, image_2, ...) becomes the images list, in order."""
    numbered = sorted(
        (int(match.group(1)), name)
        for name in row
        if (match := _IMAGE_COLUMN.fullmatch(name)) is not None
    )
    if not numbered or "images" in row:
        return row
    columns = {name for _, name in numbered}
    gathered = {name: value for name, value in row.items() if name not in columns}
    gathered["images"] = [row[name] for _, name in numbered]
    return gathered


def _check_row(
    line: int, row: Mapping[str, object] | JobProblem, base: pathlib.Path, *, from_csv: bool
) -> tuple[RawJob | None, list[JobProblem]]:
    if isinstance(row, JobProblem):
        return None, [row]
    problems: list[JobProblem] = []
    key = _read_key(row.get("key"))
    if isinstance(key, _RowError):
        problems.append(JobProblem(line, None, key.field, key.rule))
        key_text: str | None = None
    else:
        key_text = key
    kind = row.get("kind")
    fields_for_kind: Mapping[str, FieldType] | None = None
    if kind is None:
        problems.append(JobProblem(line, key_text, "kind", "required: video or image"))
    elif not isinstance(kind, str) or kind.strip().lower() not in FIELDS_BY_KIND:
        problems.append(JobProblem(line, key_text, "kind", f"must be video or image, not {kind!r}"))
    else:
        kind = kind.strip().lower()
        fields_for_kind = FIELDS_BY_KIND[kind]
    fields: dict[str, FieldValue] = {}
    for name, value in row.items():
        if name in {"key", "kind"}:
            continue
        canonical = ALIASES.get(name, name)
        if name in _RESERVED:
            problems.append(JobProblem(line, key_text, name, _RESERVED[name]))
            continue
        if fields_for_kind is None:
            continue
        if canonical not in fields_for_kind:
            other = "image" if kind == "video" else "video"
            rule = (
                f"not a field of {kind} jobs (it belongs to {other} jobs)"
                if canonical in FIELDS_BY_KIND[other]
                else "unknown field"
            )
            problems.append(JobProblem(line, key_text, _show(name), rule))
            continue
        if canonical in fields:
            problems.append(JobProblem(line, key_text, name, f"given twice (also as {canonical})"))
            continue
        if value is None:
            continue
        field_type = fields_for_kind[canonical]
        try:
            _check_strings(canonical, value, free_text=canonical in _FREE_TEXT)
            fields[canonical] = _read_field(canonical, field_type, value, base, from_csv=from_csv)
        except _RowError as exc:
            problems.append(JobProblem(line, key_text, exc.field or canonical, exc.rule))
    has_images = any(ALIASES.get(name, name) == "images" for name in row)
    if fields_for_kind is not None and not has_images:
        problems.append(JobProblem(line, key_text, "images", "required: 1 to 4 images"))
    if key_text is None or fields_for_kind is None:
        return None, problems
    assert isinstance(kind, str)
    return RawJob(line=line, key=key_text, kind=kind, fields=fields), problems


def _read_key(value: object) -> str | _RowError:
    if value is None:
        return _RowError("key", "required: a unique name for the job")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return _RowError("key", f"must be a string, not {_json_type(value)}")
    key = str(value).strip()
    if not key:
        return _RowError("key", "must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        return _RowError("key", f"at most {MAX_KEY_LENGTH} characters, got {len(key)}")
    if _CONTROL.search(key) is not None:
        return _RowError("key", "must not contain control characters")
    try:
        ka.check_job_key(key)
    except ka.UnsafeKey as exc:
        return _RowError("key", exc.rule)
    return key


def _check_strings(name: str, value: object, *, free_text: bool) -> None:
    """Refuse control characters (NUL included) and lone surrogates in any string of a field.

    Free text (a prompt) may hold tabs and line breaks; paths, URLs and codes may not.
    """
    if isinstance(value, str):
        control = (_TEXT_CONTROL if free_text else _CONTROL).search(value)
        if control is not None:
            code = f"U+{ord(control.group()):04X}"
            raise _RowError(name, f"must not contain control characters ({code})")
        if _SURROGATE.search(value) is not None:
            raise _RowError(name, "must be valid Unicode (holds a lone surrogate)")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(f"{name}[{index}]", item, free_text=free_text)
    elif isinstance(value, dict):
        for item_name, item in value.items():
            _check_strings(f"{name}.{_show(item_name)}", item, free_text=free_text)


def _show(text: str) -> str:
    """``text`` as it can be printed: control characters and surrogates escaped."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _read_field(
    name: str, kind: FieldType, value: object, base: pathlib.Path, *, from_csv: bool
) -> FieldValue:
    if kind is FieldType.TEXT:
        # Strict: a prompt of 5 is a mistake in the file, not text to send.
        if not isinstance(value, str):
            raise _RowError(name, f"must be a string, not {_json_type(value)}")
        return value
    if kind is FieldType.DURATION:
        # "5" as on the wire, or the whole number of seconds.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _RowError(name, f'must be a string such as "5", not {_json_type(value)}')
        return value
    if kind is FieldType.INTEGER:
        return _read_integer(name, value)
    if kind is FieldType.NUMBER:
        return _read_number(name, value)
    if kind is FieldType.IMAGE:
        return _read_image(name, value, base)
    if from_csv and isinstance(value, str):
        value = _split_cell(name, value, json_only=kind is FieldType.MASKS)
    if kind is FieldType.IMAGES:
        if not isinstance(value, list):
            raise _RowError(name, f"must be a list of images, not {_json_type(value)}")
        return tuple(_read_image(f"{name}[{i}]", item, base) for i, item in enumerate(value))
    return _read_masks(name, value, base)


def _read_integer(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise _RowError(name, "must be a whole number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value.strip()) <= MAX_NUMBER_CHARS:
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _RowError(name, f"must be a whole number, not {_clip(value)!r}")


def _read_number(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise _RowError(name, "must be a number, not a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and len(value.strip()) <= MAX_NUMBER_CHARS:
        try:
            number = float(value.strip())
        except ValueError:
            raise _RowError(name, f"must be a number, not {_clip(value)!r}") from None
    else:
        raise _RowError(name, f"must be a number, not {_clip(value)!r}")
    if not math.isfinite(number):
        raise _RowError(name, f"must be a finite number, not {_clip(value)!r}")
    return number


def _clip(value: object) -> object:
    # A value quoted in a message, cut short so a huge cell cannot flood the report.
    if isinstance(value, str) and len(value) > MAX_NUMBER_CHARS:
        return value[:MAX_NUMBER_CHARS] + "..."
    return value


def _split_cell(name: str, cell: str, *, json_only: bool) -> object:
    text = cell.strip()
    if text.startswith("[") or json_only:
        value, problem = _parse_json(text)
        if problem is not None:
            raise _RowError(problem.field or name, f"not a valid JSON list ({problem.rule})")
        return value
    return [part.strip() for part in text.split(_LIST_SEPARATOR) if part.strip()]


def _read_image(name: str, value: object, base: pathlib.Path) -> ImageRef:
    if isinstance(value, dict):
        return _read_image_object(name, value, base)
    if not isinstance(value, str):
        raise _RowError(name, f"must be a path, URL or Base64 text, not {_json_type(value)}")
    text = value.strip()
    if not text:
        raise _RowError(name, "must not be empty")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return ImageRef(ImageSource.URL, text)
    data_uri = _DATA_URI.match(text)
    if data_uri is not None:
        return _base64_ref(name, text[data_uri.end() :])
    if _looks_like_base64(text):
        return _base64_ref(name, text)
    return _path_ref(name, text, base)


def _read_image_object(name: str, value: Mapping[str, object], base: pathlib.Path) -> ImageRef:
    for item_key in _IMAGE_ITEM_KEYS:
        if set(value) == {item_key}:
            # The wire shape {"image": "..."} copied from the API docs.
            return _read_image(name, value[item_key], base)
    sources = [source for source in ImageSource if source.value in value]
    if len(sources) != 1 or len(value) != 1:
        raise _RowError(name, 'an image object needs exactly one of "path", "url", "base64"')
    source = sources[0]
    text = value[source.value]
    if not isinstance(text, str) or not text.strip():
        raise _RowError(name, f"{source.value} must be a non-empty string")
    if source is ImageSource.PATH:
        return _path_ref(name, text.strip(), base)
    if source is ImageSource.URL:
        return ImageRef(ImageSource.URL, text.strip())
    return _base64_ref(name, text.strip())


def _looks_like_base64(text: str) -> bool:
    # A long token of Base64 characters is data; anything shorter or with an image
    # suffix is taken as a file name so typos in paths say "file not found".
    return (
        len(text) >= 256
        and not text.lower().endswith(_IMAGE_SUFFIXES)
        and _BASE64_TEXT.fullmatch(text) is not None
    )


def _base64_ref(name: str, text: str) -> ImageRef:
    compact = "".join(text.split())
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _RowError(name, "not valid Base64") from None
    return ImageRef(ImageSource.BASE64, compact)


def _path_ref(name: str, text: str, base: pathlib.Path) -> ImageRef:
    path = pathlib.Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise _RowError(name, f"file not found: {text}")
    return ImageRef(ImageSource.PATH, str(path))


def _read_masks(name: str, value: object, base: pathlib.Path) -> tuple[DynamicMaskSpec, ...]:
    if not isinstance(value, list):
        raise _RowError(name, f"must be a list of mask groups, not {_json_type(value)}")
    groups: list[DynamicMaskSpec] = []
    for index, group in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(group, dict) or set(group) != {"mask", "trajectories"}:
            raise _RowError(where, 'must be an object with "mask" and "trajectories"')
        points = group["trajectories"]
        if not isinstance(points, list):
            raise _RowError(f"{where}.trajectories", "must be a list of points")
        trajectory: list[tuple[int, int]] = []
        for number, point in enumerate(points):
            trajectory.append(_read_point(f"{where}.trajectories[{number}]", point))
        groups.append(
            DynamicMaskSpec(
                mask=_read_image(f"{where}.mask", group["mask"], base),
                trajectories=tuple(trajectory),
            )
        )
    return tuple(groups)


def _read_point(name: str, point: object) -> tuple[int, int]:
    if isinstance(point, dict) and set(point) == {"x", "y"}:
        x, y = point["x"], point["y"]
    elif isinstance(point, list) and len(point) == 2:
        x, y = point
    else:
        raise _RowError(name, 'must be {"x": int, "y": int}')
    return _read_integer(f"{name}.x", x), _read_integer(f"{name}.y", y)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# Wire names in the core's error paths, as a job file spells them.
_WIRE_FIELD = re.compile(r"^(image_list|subject_image_list|scence_image)")
_JOB_FIELD: Final[Mapping[str, str]] = {
    "image_list": "images",
    "subject_image_list": "images",
    "scence_image": "scene_image",
}


def _job_field(field: str) -> str:
    return _WIRE_FIELD.sub(lambda match: _JOB_FIELD[match.group(1)], field)


def _image(ref: ImageRef) -> ka.Image:
    if ref.source is ImageSource.URL:
        return ka.Image.from_url(ref.value)
    if ref.source is ImageSource.BASE64:
        return ka.Image.from_base64(ref.value)
    return ka.Image.from_path(ref.value)


def _images(name: str, refs: object) -> tuple[ka.Image, ...]:
    assert isinstance(refs, tuple)
    images: list[ka.Image] = []
    for index, ref in enumerate(refs):
        try:
            images.append(_image(ref))
        except ka.InvalidRequest as exc:
            raise exc.at(f"{name}[{index}]") from None
    return tuple(images)


def _masks(specs: object) -> tuple[ka.DynamicMask, ...]:
    assert isinstance(specs, tuple)
    masks: list[ka.DynamicMask] = []
    for index, spec in enumerate(specs):
        assert isinstance(spec, DynamicMaskSpec)
        where = f"dynamic_masks[{index}]"
        try:
            mask = _image(spec.mask)
        except ka.InvalidRequest as exc:
            raise exc.at(f"{where}.mask") from None
        try:
            points = tuple(ka.Point(x, y) for x, y in spec.trajectories)
            masks.append(ka.DynamicMask(mask=mask, trajectories=points))
        except ka.InvalidRequest as exc:
            raise exc.at(f"{where}.trajectories") from None
    return tuple(masks)


def build_request(job: RawJob) -> ka.Request:
    """Build the core request model of a row (no I/O: images are not read yet).

    Raises:
        InvalidRequest: a value breaks a rule of the API; ``field`` is the job file's name.
    """
    values: dict[str, object] = {}
    for name, value in job.fields.items():
        if name == "images":
            values[name] = _images(name, value)
        elif name == "dynamic_masks":
            values[name] = _masks(value)
        elif isinstance(value, ImageRef):
            try:
                values[name] = _image(value)
            except ka.InvalidRequest as exc:
                raise exc.at(name) from None
        else:
            values[name] = value
    model = ka.MultiImageToVideo if job.kind == "video" else ka.MultiImageToImage
    return model(**values)  # type: ignore[arg-type]


#: The documented rules of each ``--profile`` (checked before anything is sent).
PROFILE_RULES: Final = {"cometapi": ka.COMETAPI_RULES, "kling": ka.KLING_RULES}


def load_jobs(
    path: str | os.PathLike[str],
    *,
    check_images: bool = True,
    rules: ka.Rules | None = ka.COMETAPI_RULES,
) -> tuple[JobFile, tuple[ParsedJob, ...], tuple[JobProblem, ...]]:
    """Read a job file and check every row through the core models.

    Args:
        path: the JSONL or CSV job file.
        check_images: also read each local image's header (format, size, dimensions).
        rules: the documented rules of the profile the jobs go to (``PROFILE_RULES``).

    Returns:
        The file as read, the jobs that passed every check, and every problem found
        (sorted by line).

    Raises:
        OSError: the file cannot be read.
        UnicodeDecodeError: the file is not UTF-8 text.
    """
    job_file = read_job_file(path)
    problems = list(job_file.problems)
    jobs: list[ParsedJob] = []
    for raw in job_file.jobs:
        try:
            request = build_request(raw)
            if check_images:
                ka.validate_request(request, rules)
            elif rules is not None:
                rules.check(request)
        except ka.InvalidRequest as exc:
            problems.append(JobProblem(raw.line, raw.key, _job_field(exc.field), exc.rule))
            continue
        except (TypeError, ValueError) as exc:
            problems.append(JobProblem(raw.line, raw.key, None, str(exc)))
            continue
        jobs.append(ParsedJob(line=raw.line, key=raw.key, request=request))
    problems.sort(key=lambda problem: problem.line)
    return job_file, tuple(jobs), tuple(problems)
