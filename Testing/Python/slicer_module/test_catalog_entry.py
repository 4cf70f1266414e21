"""The Extensions Index entry: since Slicer 5.8 the index reads only JSON catalog entries, checked against
Slicer's published schema (vendored in Testing/Data/slicer_schemas with its license)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

jsonschema = pytest.importorskip("jsonschema", reason="needs jsonschema (test extra)")

ENTRY = REPO / "LVTSegmentation.json"
SCHEMA = REPO / "Testing" / "Data" / "slicer_schemas" / "slicer-extension-catalog-entry-schema-v1.0.2.json"


def _entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def _cmake_setting(name: str) -> str:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf'set\({name} "([^"]*)"\)', text)
    assert match, f"{name} missing from CMakeLists.txt"
    return match.group(1)


def test_catalog_entry_is_valid_against_slicers_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    entry = _entry()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(entry, schema)
    assert entry["$schema"] == schema["$id"]


def test_the_schema_rejects_what_the_index_would_reject() -> None:
    """The vendored schema is strict: a field the index does not know fails (so the test above can fail)."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError, match="homepage"):
        jsonschema.validate({**_entry(), "homepage": "https://example.org"}, schema)
    with pytest.raises(jsonschema.ValidationError, match="scm_url"):
        jsonschema.validate({k: v for k, v in _entry().items() if k != "scm_url"}, schema)


def test_catalog_entry_matches_the_cmake_metadata() -> None:
    entry = _entry()
    assert entry["category"] == _cmake_setting("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == _cmake_setting("EXTENSION_DEPENDS").split()
    assert entry["scm_url"].removesuffix(".git") == _cmake_setting("EXTENSION_HOMEPAGE")
