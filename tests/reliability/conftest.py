"""Fixtures of the reliability tests: the Tiny-8 zoo of the app tests, the app launched in this
process on a free loopback port (so a test can read the server's job table and set limits by
environment variable while it runs), and small helpers."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.app.conftest import app_url, free_port, tiny8_dir  # noqa: F401 - fixtures

SECRET = "hf_reliabilitytestSECRETvalue0123456789"


def launch(**env_limits) -> tuple:
    """Build and launch the app here (limits read at build time, such as the queue length and
    the upload size, come from the environment as it is now). Returns (url, demo)."""
    from app.ui import build_demo, launch_options

    demo = build_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options())
    return f"http://127.0.0.1:{port}/", demo


@pytest.fixture(scope="module")
def live_app(tiny8_dir):  # noqa: F811 - the fixture imported above
    """The app served from this process; yields its URL."""
    url, demo = launch()
    yield url
    demo.close()


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with ``idat`` as its
    (compressed) data: nothing of that size is ever allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, valid greyscale PNG of side x side black pixels that compresses ~1000:1 (a
    decompression bomb): the rows are streamed through zlib, never held in memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)                     # filter byte + one byte per pixel
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
