"""Images a visitor hands us: every kind of bad or odd file gets either a usable 8-bit RGB
picture or an ImageError that says what to do, from the library, the page's callbacks and the
API. Nothing is decoded before its size is checked; random bytes never crash or hang."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from wemoe_core.sources.images import ImageError, load_image

from .conftest import png_bomb, png_bytes, png_declaring, write

NOISE = Image.effect_noise((64, 48), 60).convert("RGB")
GOOD_PNG = png_bytes(NOISE)
GOOD_JPEG = png_bytes(NOISE, "JPEG", quality=90)


def _palette(transparent: bool) -> bytes:
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    return png_bytes(p, transparency=0) if transparent else png_bytes(p)


REFUSED = {   # name: (file bytes, what the message must say)
    "text": (b"just some text, not a picture\n" * 4, r"not a readable image.*upload a PNG"),
    "empty": (b"", r"empty.*upload a PNG"),
    "html": (b"<html><script>alert(1)</script></html>", r"not a readable image"),
    "corrupt png": (GOOD_PNG[:40] + bytes(range(256)) * 4, r"(not a readable|truncated).*upload a PNG"),
    "truncated png": (GOOD_PNG[: len(GOOD_PNG) // 2], r"truncated.*upload a PNG"),
    "truncated jpeg": (GOOD_JPEG[: len(GOOD_JPEG) // 2], r"truncated.*upload a PNG"),
    "png header only": (GOOD_PNG[:33], r"(not a readable|truncated)"),
    "20000 x 20000 px": (png_declaring(20000, 20000), r"400,000,000 pixels.*limit is 40,000,000.*resize"),
    "zero width": (png_declaring(0, 10), r"not a readable image|0 x 10"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_files_are_refused_with_what_to_do(name, tmp_path):
    data, message = REFUSED[name]
    for source in (data, write(tmp_path / "upload.png", data)):       # bytes and a path alike
        with pytest.raises(ImageError, match=message):
            load_image(source)


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(monkeypatch):
    bomb = png_bomb(8000)                           # 64 Mpx of black in a few tens of kB
    assert len(bomb) < 200_000
    Image.open(io.BytesIO(bomb)).verify()           # a real, valid PNG
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or pytest.fail("decoded"))
    with pytest.raises(ImageError, match=r"8,000 x 8,000 pixels; the limit is 40,000,000 pixels"):
        load_image(bomb)
    assert decoded == []


def test_pillows_bomb_guard_still_answers_when_our_limit_is_off():
    with pytest.raises(ImageError, match=r"400,000,000 pixels \(a decompression bomb\?\).*resize"):
        load_image(png_declaring(20000, 20000), max_pixels=None)


def test_size_limits_are_checked_before_reading(tmp_path):
    path = write(tmp_path / "big.png", GOOD_PNG)
    with pytest.raises(ImageError, match=r"the limit is .* MB: upload a smaller image"):
        load_image(path, max_bytes=1000)
    with pytest.raises(ImageError, match=r"64 x 48 pixels; the limit is 1,000 pixels"):
        load_image(path, max_pixels=1000)
    with pytest.raises(ImageError, match="no file at"):
        load_image(tmp_path / "missing.png")


def test_odd_but_valid_images_become_what_a_person_sees():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)   # 0..65520
    sixteen = load_image(png_bytes(Image.fromarray(ramp)))
    a = np.asarray(sixteen)
    assert sixteen.mode == "RGB" and a.min() == 0 and a.max() == 254
    assert 120 <= a[32, 0, 0] <= 135                                # mid-grey, not clipped to white
    cmyk = load_image(png_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((4, 4))[0] > 200 > max(cmyk.getpixel((4, 4))[1:]) + 100
    pal = load_image(_palette(transparent=False))
    assert pal.getpixel((1, 1)) == (0, 200, 0) and pal.getpixel((0, 0)) == (0, 0, 0)
    pal_t = load_image(_palette(transparent=True))
    assert pal_t.getpixel((0, 0)) == (255, 255, 255) and pal_t.getpixel((1, 1)) == (0, 200, 0)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    out = load_image(png_bytes(rgba))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 0, 255)
    grey_float = load_image(png_bytes(Image.new("F", (4, 4), 0.5), "TIFF"))
    assert grey_float.getpixel((0, 0)) == (127, 127, 127)
    one = load_image(png_bytes(Image.new("RGB", (1, 1), (9, 8, 7))))
    assert one.size == (1, 1) and one.getpixel((0, 0)) == (9, 8, 7)
    frames = [Image.new("RGB", (6, 6), c) for c in ((250, 0, 0), (0, 250, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    first = load_image(gif.getvalue())
    assert first.mode == "RGB" and first.getpixel((0, 0))[0] > 200          # the first frame


def _check(data: bytes) -> None:
    try:
        img = load_image(data, max_pixels=4_000_000)
    except ImageError as e:
        assert str(e) and ("upload" in str(e) or "resize" in str(e)), str(e)
    else:
        assert img.mode == "RGB" and img.width * img.height <= 4_000_000


pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    _check(data)


@FUZZ
@given(st.sampled_from([GOOD_PNG, GOOD_JPEG, png_bytes(NOISE, "GIF"), png_bytes(NOISE, "WEBP"), png_bytes(NOISE, "BMP")]),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8), st.integers(0, 10**6))
def test_fuzz_damaged_real_images(data, flips, cut):
    """Valid files with bytes changed and their ends cut off: headers, chunk lengths and
    dimensions turn into anything."""
    b = bytearray(data)
    for pos, value in flips:
        b[pos % len(b)] = value
    _check(bytes(b[: max(1, len(b) - cut % len(b))]))


# --- the page and the API ----------------------------------------------------------------------
def test_the_page_answers_every_bad_file_with_a_warning(tiny8_dir, tmp_path):
    from app import explore
    from app.sessions import STORE

    sid = STORE.resume(None).id
    for name, (data, message) in {**REFUSED, "bomb": (png_bomb(8000), r"the limit is 40,000,000 pixels")}.items():
        shown, status = explore.use_upload(sid, write(tmp_path / f"{len(name)}.png", data))
        assert status.startswith("⚠️") and re.search(message, status), (name, status)
        assert STORE.get(sid).image is None                       # nothing half-read is kept
    shown, status = explore.use_upload(sid, write(tmp_path / "one.png", png_bytes(Image.new("RGB", (1, 1), (5, 6, 7)))))
    assert status == "your image (1 x 1)" and shown.size == (256, 256)
    html, *_, status = explore.predict(sid, [], None, None, None)
    assert "Task arithmetic" in html and "model(s) answered" in status


ODD = {"1 x 1": png_bytes(Image.new("RGB", (1, 1), (9, 8, 7))),
       "16-bit": png_bytes(Image.fromarray((np.arange(400, dtype=np.uint16).reshape(20, 20) * 160))),
       "CMYK": png_bytes(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"),
       "palette": _palette(transparent=True), "RGBA": png_bytes(Image.new("RGBA", (20, 20), (0, 0, 255, 128)))}


def test_the_api_answers_odd_images_and_refuses_bad_ones(live_app, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(live_app, verbose=False)
    for name, data in ODD.items():
        out = client.predict(handle_file(write(tmp_path / f"{name}.png", data)), api_name="/predict")
        assert len(out["predictions"]) == 8, name
    for name in ("text", "truncated jpeg", "20000 x 20000 px"):
        data, message = REFUSED[name]
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(write(tmp_path / "bad.png", data)), api_name="/predict")
