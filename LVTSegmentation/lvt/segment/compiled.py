"""``torch.compile`` of the network in a long-lived process: whether it pays, and eager again when it fails.

Compiling costs once per process (far more the first time on a machine, before inductor's cache on
disk is warm) and saves a share of every window after that, so it pays only in a process that
segments many cases, a cohort worker, never for one case (``--compile auto``; the figures are in
Testing/Benchmarks/inference/compile_break_even.md). A compile that fails (no C++ compiler, no
Triton, an operator inductor cannot lower) leaves the network eager with a warning in the log: the
labels are the same up to float rounding, only slower, so a case never fails for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from lvt.segment.cohort_manifest import one_line

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CompileChoice = Literal["auto", "on", "off"]
COMPILE_CHOICES: tuple[CompileChoice, ...] = ("auto", "on", "off")
# Cases one process must segment before compiling pays, the first compile on a machine included: the
# largest such count measured (72 beside a training job, 55 at low load; compile_break_even.md in
# Testing/Benchmarks/inference/).
BREAK_EVEN_CASES = 72


def compile_pays(cases_per_process: int, toolchain: bool) -> bool:
    """``--compile auto``: compile when this process will segment at least BREAK_EVEN_CASES cases and can compile."""
    return toolchain and cases_per_process >= BREAK_EVEN_CASES


def toolchain_available(device: torch.device) -> bool:
    """Whether inductor finds what it compiles with on ``device``: a C++ compiler (CPU) or Triton (CUDA).

    A yes does not promise that the compile succeeds (headers may be missing): :class:`CompiledNetwork`
    still falls back to eager.
    """
    try:
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()  # runs `g++ --version` (or $CXX); raises when there is none
            return True
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            return bool(has_triton())
    except Exception as error:  # private torch API: any surprise means "no toolchain"
        logger.debug("no torch.compile toolchain for %s: %s", device, error)
    return False


class CompiledNetwork:
    """A network compiled once for a fixed number of windows per pass; eager for good after a failed compile."""

    def __init__(self, network: torch.nn.Module, batch: int) -> None:
        import torch  # here, not at the top: the ``lvt`` parser reads COMPILE_CHOICES without torch

        self.network, self.batch = network, batch
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        try:  # setting up can fail too (e.g. inductor reads its templates in the C locale's ASCII)
            self._compiled = torch.compile(network, dynamic=False)
        except Exception as error:
            _warn_uncompiled(error)

    @property
    def compiled(self) -> bool:
        """False once a compile failed and the network runs eager."""
        return self._compiled is not None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        from torch import OutOfMemoryError

        if self._compiled is not None:
            try:
                return self._run_compiled(self._compiled, inputs)
            except OutOfMemoryError:
                raise  # not the compiler's fault: the caller moves to the CPU
            except Exception as error:  # inductor's failures share no type; eager gives the same labels
                _warn_uncompiled(error)
                self._compiled = None
        return self.network(inputs)

    def _run_compiled(self, compiled: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """A short last batch is filled up to the compiled shape rather than triggering a recompilation."""
        import torch

        if inputs.shape[0] == self.batch:
            return compiled(inputs)
        filler = inputs[-1:].expand(self.batch - inputs.shape[0], *inputs.shape[1:])
        return compiled(torch.cat((inputs, filler)))[: inputs.shape[0]]


def _warn_uncompiled(error: Exception) -> None:
    logger.warning("torch.compile failed, the network runs uncompiled: %s",
                   one_line(f"{type(error).__name__}: {error}"))
