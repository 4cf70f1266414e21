"""The images the extension's metadata (CMakeLists.txt, LVTSegmentation.s4ext, LVTSegmentation.json) points to
exist in this repository, where the URLs say.

The Extensions Index shows the icon and the screenshots from raw.githubusercontent.com URLs of this
repository's branch: a file missing here, or a URL naming another repository or branch, is a broken
image in the catalog that no build notices.
"""

from __future__ import annotations

import json
import re
import struct

from conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SCREENSHOT_BYTES = 500_000
RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/(?P<repo>[^/\s\"]+/[^/\s\"]+)/(?P<branch>[^/\s\"]+)/"
                     r"(?P<path>[^\s\";]+)")


def _cmake_setting(name: str) -> str:
    match = re.search(rf'set\({name} "([^"]*)"\)', (REPO / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert match, f"{name} missing from CMakeLists.txt"
    return match.group(1)


def _raw_urls() -> list[re.Match]:
    """raw.githubusercontent.com URLs of CMakeLists.txt, the .s4ext file and the catalog entry (but its
    ``$schema``, which is Slicer's)."""
    entry = json.loads((REPO / "LVTSegmentation.json").read_text(encoding="utf-8"))
    texts = [(REPO / name).read_text(encoding="utf-8") for name in ("CMakeLists.txt", "LVTSegmentation.s4ext")
             if (REPO / name).is_file()]
    texts += [str(value) for key, value in entry.items() if key != "$schema"]
    return [match for text in texts for match in RAW_URL.finditer(text)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "not a PNG file"
    return struct.unpack(">II", data[16:24])


def test_every_image_url_of_the_metadata_is_a_png_of_this_repository_and_branch():
    homepage = _cmake_setting("EXTENSION_HOMEPAGE").removeprefix("https://github.com/")
    branch = json.loads((REPO / "LVTSegmentation.json").read_text(encoding="utf-8"))["scm_revision"]
    urls = _raw_urls()
    assert {m["path"] for m in urls} >= {"Resources/Icons/LVTSegmentation.png",
                                         "docs/images/LVTSegmentation-screenshot.png"}
    for match in urls:
        assert (match["repo"], match["branch"]) == (homepage, branch), match.group(0)
        path = REPO / match["path"]
        assert path.is_file(), f"{match.group(0)} points to {match['path']}, which is not in the repository"
        _png_size(path.read_bytes())


def test_screenshots_are_reasonable_pictures():
    screenshots = _cmake_setting("EXTENSION_SCREENSHOTURLS").split()
    assert screenshots
    for url in screenshots:
        match = RAW_URL.fullmatch(url)
        assert match and match["path"].startswith("docs/images/"), url
        data = (REPO / match["path"]).read_bytes()
        width, height = _png_size(data)
        assert len(data) < MAX_SCREENSHOT_BYTES and 600 <= width <= 2400 and 300 <= height <= 1600
