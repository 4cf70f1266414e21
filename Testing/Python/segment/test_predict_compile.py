"""torch.compile of the network (lvt.segment.compiled): auto's rule, the toolchain probe, compiled labels
equal eager ones, and a compile that fails for real (no C++ compiler) runs eager with a warning.

The compiling tests are slow: inductor compiles C++ on first use (tens of seconds on an idle machine,
minutes on a loaded one, less once its cache on disk is warm).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import _predictor, _random_hu

from lvt.segment.compiled import BREAK_EVEN_CASES, compile_pays, toolchain_available
from lvt.segment.postprocess import decode_masks
from lvt.segment.predict import SlidingWindowConfig

SHAPE = (20, 24, 18)  # 8 windows of 16^3, one of them a short last batch with 3 windows per pass

# Run in a fresh interpreter without a C++ compiler ($CXX names none) and an empty inductor cache, so
# that the compile really runs and really fails; prints what happened as JSON.
_NO_COMPILER_PROGRAM = """
import json, logging, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from test_predict import _predictor, _random_hu
from lvt.segment.compiled import toolchain_available
from lvt.segment.predict import SlidingWindowConfig

warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("lvt").addHandler(handler)
torch.set_num_threads(1)
hu = _random_hu(tuple(json.loads(sys.argv[2])))
compiled = _predictor(SlidingWindowConfig(use_compile=True, windows_per_batch=3))
probabilities, _ = compiled.predict_probabilities(hu)
eager, _ = _predictor(SlidingWindowConfig(windows_per_batch=3)).predict_probabilities(hu)
print(json.dumps({"toolchain": toolchain_available(torch.device("cpu")), "warnings": warnings,
                  "still_compiled": [network.compiled for network in compiled._compiled],
                  "max_difference": float(np.abs(probabilities - eager).max())}))
"""


def test_auto_compiles_from_the_break_even_count_on_and_only_with_a_toolchain() -> None:
    assert BREAK_EVEN_CASES > 1  # one CT never pays for a compile
    assert not compile_pays(1, True)
    assert not compile_pays(BREAK_EVEN_CASES - 1, True)
    assert compile_pays(BREAK_EVEN_CASES, True)
    assert not compile_pays(100 * BREAK_EVEN_CASES, False)


@pytest.mark.slow
def test_compiled_and_eager_networks_give_the_same_labels() -> None:
    if not toolchain_available(torch.device("cpu")):
        pytest.skip("no C++ compiler for torch.compile here")
    hu = _random_hu(SHAPE)
    config = {"windows_per_batch": 3}
    compiled_predictor = _predictor(SlidingWindowConfig(use_compile=True, **config))
    compiled, _ = compiled_predictor.predict_probabilities(hu)
    eager, _ = _predictor(SlidingWindowConfig(**config)).predict_probabilities(hu)
    assert compiled_predictor._compiled is not None and all(n.compiled for n in compiled_predictor._compiled)
    assert np.abs(compiled - eager).max() < 1e-4
    clear = np.abs(eager - 0.5) > 1e-4  # a voxel at 0.5 within float rounding may decode either way
    assert np.array_equal(decode_masks(compiled, "ml")[clear], decode_masks(eager, "ml")[clear])


@pytest.mark.slow
def test_a_compile_without_a_compiler_runs_eager_with_a_warning(tmp_path: Path) -> None:
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _NO_COMPILER_PROGRAM, str(Path(__file__).parent),
                             json.dumps(SHAPE)], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["toolchain"] is False
    assert report["still_compiled"] == [False]
    assert report["max_difference"] == 0.0  # the eager network ran: exactly the eager result
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("torch.compile failed")
    assert "no-such-compiler" in report["warnings"][0] or "C++ compiler" in report["warnings"][0]
