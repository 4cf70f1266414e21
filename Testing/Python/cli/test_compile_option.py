"""``lvt segment --compile {auto,on,off}``: parsed, refused when unknown, and one CT compiles only with ``on``."""

from __future__ import annotations

import pytest

from lvt.cli.main import build_parser
from lvt.segment.pipeline import SegmentOptions


def _parse(*extra: str) -> object:
    return build_parser(with_options=["segment"]).parse_args(["segment", "ct.nii.gz", "-o", "out", *extra])


def test_compile_defaults_to_auto_and_an_unknown_choice_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert _parse().compile == "auto"
    with pytest.raises(SystemExit) as exit_info:
        _parse("--compile", "sometimes")
    assert exit_info.value.code == 2 and "--compile" in capsys.readouterr().err


@pytest.mark.parametrize(("choice", "compiles"), [("auto", False), ("off", False), ("on", True)])
def test_one_ct_compiles_only_when_asked(choice: str, compiles: bool) -> None:
    assert SegmentOptions.from_args(_parse("--compile", choice)).use_compile is compiles
