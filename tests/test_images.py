"""Image rules checked from real bytes: format, size, sides, ratio, Base64, files, masks."""

import base64
import pathlib
import struct

import anyio
import pytest

from kling_async import (
    DynamicMask,
    Image,
    InvalidRequest,
    MultiImageToImage,
    MultiImageToVideo,
    validate_request,
)
from kling_async._api.images import (
    MAX_IMAGE_BYTES,
    ImageInfo,
    check_image,
    check_request,
    decoded_base64_size,
    encode_bytes,
    encode_path,
    read_image_file,
    sniff_image,
    validate_image_bytes,
)
from kling_async._api.profiles import KLING_RULES
from tests._core_helpers import jpeg_header, pil_image, png_bytes

GOOD_PNG = png_bytes(400, 400)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- sniffing ---


def test_sniff_png_built_by_hand() -> None:
    """A PNG's size comes from its IHDR chunk."""
    assert sniff_image(png_bytes(640, 320)) == ImageInfo("png", 640, 320)


def test_sniff_real_png_and_jpeg_from_pillow() -> None:
    """Real files encoded by Pillow are read correctly, baseline and progressive JPEG."""
    assert sniff_image(pil_image(500, 350)) == ImageInfo("png", 500, 350)
    assert sniff_image(pil_image(720, 480, "JPEG")) == ImageInfo("jpeg", 720, 480)
    progressive = pil_image(333, 777, "JPEG", progressive=True)
    assert sniff_image(progressive) == ImageInfo("jpeg", 333, 777)


def test_sniff_jpeg_with_fill_bytes_and_restart_markers() -> None:
    """Fill bytes (FF FF) and standalone markers before the frame header are skipped."""
    header = jpeg_header(800, 600)
    patched = header[:2] + b"\xff\xff\xd0" + header[2:]
    assert sniff_image(patched) == ImageInfo("jpeg", 800, 600)


@pytest.mark.parametrize("sof", [0xC1, 0xC2, 0xC3, 0xC9])
def test_sniff_jpeg_other_frame_types(sof: int) -> None:
    """Extended, progressive, lossless and arithmetic frame headers all carry the size."""
    assert sniff_image(jpeg_header(310, 620, sof=sof)).width == 310


def test_image_info_str() -> None:
    """ImageInfo prints as WxH."""
    assert str(ImageInfo("png", 3, 4)) == "3x4"


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"GIF89a" + b"\x00" * 20, "GIF is not accepted (PNG or JPEG only)"),
        (b"GIF87a" + b"\x00" * 20, "GIF is not accepted (PNG or JPEG only)"),
        (b"BM" + b"\x00" * 30, "BMP is not accepted (PNG or JPEG only)"),
        (b"II*\x00" + b"\x00" * 30, "TIFF is not accepted (PNG or JPEG only)"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP is not accepted (PNG or JPEG only)"),
        (b"", "empty image"),
        (
            b"hello world",
            "not a PNG or JPEG image (starts with 68656c6c6f20776f; PNG or JPEG only)",
        ),
    ],
)
def test_wrong_magic_is_refused(data: bytes, rule: str) -> None:
    """Anything but PNG or JPEG magic bytes is refused, naming what it is."""
    with pytest.raises(InvalidRequest) as caught:
        sniff_image(data, "image_list[1]")
    assert caught.value.field == "image_list[1]"
    assert caught.value.rule == rule


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PN", "PNG"),
        (png_bytes(400, 400)[:20], "PNG"),
        (b"\xff", "JPEG"),
        (jpeg_header(400, 400)[:3], "JPEG"),
        (jpeg_header(400, 400)[:22], "JPEG"),
        (jpeg_header(400, 400)[:24], "JPEG"),
    ],
)
def test_truncated_headers_are_refused(data: bytes, kind: str) -> None:
    """A file that ends before its header does is refused as truncated."""
    with pytest.raises(InvalidRequest, match=f"truncated {kind}"):
        sniff_image(data)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (
            b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IDAT" + b"\x00" * 13,
            "PNG header damaged (first chunk is not IHDR)",
        ),
        (png_bytes(1, 1)[:16] + struct.pack(">II", 0, 10), "PNG header damaged (0x10)"),
        (b"\xff\xd8\x00\x00", "JPEG header damaged (no marker at byte 2)"),
        (b"\xff\xd8\xff\xda\x00\x08", "JPEG header damaged (no frame header before data)"),
        (b"\xff\xd8\xff\xe0\x00\x01", "JPEG header damaged (bad segment length)"),
        (jpeg_header(0, 400), "JPEG header damaged (0x400)"),
    ],
)
def test_damaged_headers_are_refused(data: bytes, rule: str) -> None:
    """Headers that lie (wrong first chunk, zero sizes, no frame) are refused."""
    with pytest.raises(InvalidRequest) as caught:
        sniff_image(data)
    assert caught.value.rule == rule


# --- the rules ---


def test_valid_images_pass() -> None:
    """300x300, 2.5:1 and 1:2.5 are all inside the rules."""
    assert validate_image_bytes(png_bytes(300, 300)).width == 300
    assert validate_image_bytes(png_bytes(750, 300)).width == 750
    assert validate_image_bytes(pil_image(300, 750, "JPEG")).height == 750


@pytest.mark.parametrize(
    ("width", "height", "rule"),
    [
        (280, 900, "280x900 is below 300 px"),
        (299, 400, "299x400 is below 300 px"),
        (400, 299, "400x299 is below 300 px"),
        (780, 300, "780x300 has aspect ratio 2.60:1, outside 1:2.5..2.5:1"),
        (300, 780, "300x780 has aspect ratio 1:2.60, outside 1:2.5..2.5:1"),
    ],
)
def test_size_and_ratio_rules(width: int, height: int, rule: str) -> None:
    """Sides under 300 px and ratios past 2.5 are refused with the field path."""
    with pytest.raises(InvalidRequest) as caught:
        validate_image_bytes(png_bytes(width, height), "image_list[2]")
    assert str(caught.value) == f"image_list[2]: {rule}"


def test_over_ten_megabytes_is_refused() -> None:
    """10 MB + 1 byte is refused; exactly 10 MB passes."""
    header = png_bytes(400, 400)
    exactly = header + b"\x00" * (MAX_IMAGE_BYTES - len(header))
    assert validate_image_bytes(exactly).width == 400
    with pytest.raises(InvalidRequest, match="10485761 bytes is over 10 MB"):
        validate_image_bytes(exactly + b"\x00", "style_image")


# --- files ---


def test_read_image_file_reads_only_the_header(tmp_path: pathlib.Path) -> None:
    """A file's rules are checked from its header and size."""
    path = tmp_path / "a.jpg"
    path.write_bytes(pil_image(640, 480, "JPEG"))
    assert read_image_file(path) == ImageInfo("jpeg", 640, 480)


def test_read_image_file_with_large_metadata(tmp_path: pathlib.Path) -> None:
    """A JPEG whose frame header sits past the first 64 KiB is still read."""
    path = tmp_path / "exif.jpg"
    path.write_bytes(jpeg_header(500, 400, app_padding=200_000))
    assert read_image_file(path) == ImageInfo("jpeg", 500, 400)


def test_read_image_file_refuses_big_and_missing_files(tmp_path: pathlib.Path) -> None:
    """A file over 10 MB or a missing file is refused with the field."""
    big = tmp_path / "big.png"
    big.write_bytes(GOOD_PNG + b"\x00" * MAX_IMAGE_BYTES)
    with pytest.raises(InvalidRequest, match=r"^image_list\[0\]: \d+ bytes is over 10 MB"):
        read_image_file(big, "image_list[0]")
    with pytest.raises(InvalidRequest, match="cannot read"):
        read_image_file(tmp_path / "missing.png", "image_list[1]")


def test_read_image_file_truncated(tmp_path: pathlib.Path) -> None:
    """A file cut inside its header is refused as truncated."""
    path = tmp_path / "cut.png"
    path.write_bytes(GOOD_PNG[:12])
    with pytest.raises(InvalidRequest, match="truncated PNG"):
        read_image_file(path)


# --- Base64 and URLs ---


def test_base64_images_are_checked_from_their_header() -> None:
    """A Base64 image is decoded only as far as its header."""
    assert check_image(Image.from_base64(_b64(GOOD_PNG)), "x") == ImageInfo("png", 400, 400)


def test_long_base64_is_decoded_in_part() -> None:
    """Long Base64 text (over 64 KiB) is checked from a decoded prefix."""
    data = GOOD_PNG + b"\x00" * 100_000
    assert check_image(Image.from_base64(_b64(data)), "x") == ImageInfo("png", 400, 400)
    deep = jpeg_header(500, 400, app_padding=100_000)
    assert check_image(Image.from_base64(_b64(deep)), "x") == ImageInfo("jpeg", 500, 400)


def test_base64_rules() -> None:
    """Bad Base64, a data: prefix and > 10 MB decoded size are refused."""
    with pytest.raises(InvalidRequest, match=r"^scene_image: not valid Base64$"):
        check_image(Image.from_base64("@@@@not base64"), "scene_image")
    with pytest.raises(InvalidRequest, match="not valid Base64"):
        check_image(Image.from_base64("@@@@" + "A" * 70_000), "x")
    with pytest.raises(InvalidRequest, match="data: prefix"):
        check_image(Image(Image.from_base64("x").origin, "data:image/png;base64,AAAA"), "x")
    with pytest.raises(InvalidRequest, match="is over 10 MB"):
        check_image(Image.from_base64("A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)), "x")


def test_decoded_base64_size() -> None:
    """The decoded size is computed from the text length and padding."""
    for data in (b"", b"a", b"ab", b"abc", b"abcd", GOOD_PNG):
        assert decoded_base64_size(_b64(data)) == len(data)


def test_url_images_are_not_fetched() -> None:
    """A URL image only has its scheme checked locally."""
    assert check_image(Image.from_url("https://example.invalid/a.png"), "x") is None


# --- requests ---


def test_validate_request_names_the_path(tmp_path: pathlib.Path) -> None:
    """The first broken image is reported with its wire path."""
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(280, 900))
    request = MultiImageToVideo(
        images=[Image.from_bytes(GOOD_PNG), Image.from_bytes(GOOD_PNG), Image.from_path(small)]
    )
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request)
    assert str(caught.value) == "image_list[2]: 280x900 is below 300 px"


def test_image_request_paths() -> None:
    """Subject, scene and style images are reported under their wire names."""
    bad = Image.from_bytes(png_bytes(200, 400))
    good = Image.from_bytes(GOOD_PNG)
    with pytest.raises(InvalidRequest, match=r"^subject_image_list\[1\]: 200x400"):
        validate_request(MultiImageToImage(images=[good, bad]))
    with pytest.raises(InvalidRequest, match=r"^scene_image: "):
        validate_request(MultiImageToImage(images=[good, good], scene_image=bad))
    with pytest.raises(InvalidRequest, match=r"^style_image: "):
        validate_request(MultiImageToImage(images=[good, good], style_image=bad))
    validate_request(MultiImageToImage(images=[good, good], scene_image=good, style_image=good))


def test_masks_must_match_the_input_resolution() -> None:
    """Static and dynamic masks (Kling profile) must match the first local input's resolution."""
    inputs = [Image.from_url("https://example.invalid/a.png"), Image.from_bytes(GOOD_PNG)]
    same = Image.from_bytes(png_bytes(400, 400))
    other = Image.from_bytes(png_bytes(600, 400))
    validate_request(
        MultiImageToVideo(
            images=inputs,
            static_mask=same,
            dynamic_masks=[DynamicMask(mask=same, trajectories=[(0, 0), (5, 5)])],
        ),
        KLING_RULES,
    )
    with pytest.raises(InvalidRequest) as caught:
        validate_request(MultiImageToVideo(images=inputs, static_mask=other), KLING_RULES)
    assert caught.value.field == "static_mask"
    assert "600x400 but image_list[1] is 400x400" in caught.value.rule
    with pytest.raises(InvalidRequest, match=r"^dynamic_masks\[0\]\.mask: mask is 600x400"):
        validate_request(
            MultiImageToVideo(
                images=inputs,
                dynamic_masks=[DynamicMask(mask=other, trajectories=[(0, 0), (5, 5)])],
            ),
            KLING_RULES,
        )


def test_mask_rule_skipped_when_inputs_are_urls() -> None:
    """With only URL inputs, the mask resolution rule is left to the server."""
    urls = [Image.from_url("https://example.invalid/a.png")] * 2
    validate_request(
        MultiImageToVideo(images=urls, static_mask=Image.from_bytes(GOOD_PNG)), KLING_RULES
    )


async def test_check_request_reads_files_in_a_thread(tmp_path: pathlib.Path) -> None:
    """The async check gives the same verdicts for path and in-memory images."""
    path = tmp_path / "a.png"
    await anyio.Path(path).write_bytes(GOOD_PNG)
    await check_request(MultiImageToVideo(images=[Image.from_path(path)] * 2))
    await check_request(MultiImageToVideo(images=[Image.from_bytes(GOOD_PNG)] * 2))
    with pytest.raises(InvalidRequest, match=r"image_list\[0\]: cannot read"):
        await check_request(MultiImageToVideo(images=[Image.from_path(tmp_path / "no.png")] * 2))


async def test_encoding_is_lazy_and_exact(tmp_path: pathlib.Path) -> None:
    """Files and bytes are Base64-encoded at send time, large ones off the loop."""
    big = GOOD_PNG + b"\x01" * 300_000
    path = tmp_path / "big.png"
    await anyio.Path(path).write_bytes(big)
    assert await encode_path(path) == _b64(big)
    assert await encode_bytes(big) == _b64(big)
    assert await encode_bytes(GOOD_PNG) == _b64(GOOD_PNG)
    with pytest.raises(InvalidRequest, match="cannot read"):
        await encode_path(tmp_path / "gone.png")


def test_bad_base64_past_the_header_window() -> None:
    """When the header needs more than the first 64 KiB, the rest must be valid Base64."""
    deep = _b64(jpeg_header(500, 400, app_padding=100_000))
    with pytest.raises(InvalidRequest, match="not valid Base64"):
        check_image(Image.from_base64(deep[:-8] + "@@@@" + deep[-4:]), "x")
