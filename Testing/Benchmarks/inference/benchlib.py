"""Shared pieces of the inference and segment benchmarks: machine, commit, models, cases, child processes.

Benchmarks run by hand (they are not tests). Each measurement that needs a clean peak-memory figure
runs in its own child process. Its peak comes from GNU time's ``%M`` (or, without /usr/bin/time, from
the child's ``VmHWM`` polled every 20 ms), not from ``ru_maxrss`` of our own ``wait4``: Linux folds
the parent's peak RSS into a child's ``ru_maxrss`` at fork/exec, so a parent that once held a large
phantom would make every child look as large.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO.parent / "shared" / "data"
IRCADB_CT = SHARED_DATA / "ircadb01_17" / "ircadb01_17_ct.nii.gz"
IRCADB_TRUTH_SPEC = REPO / "Testing" / "Benchmarks" / "real_case" / "ircadb01_17_truth.yaml"
SCRATCH = Path(os.environ.get("LVT_BENCH_SCRATCH", "/tmp/lvt-benchmark"))
RANDOM_MODEL_NOTE = ("weights are a seeded random initialisation of the bundled architecture (the trained "
                     "model did not exist yet): network time, window counts and MONAI agreement do not "
                     "depend on the weights; post-processing, surfaces and report time do")


# ----------------------------------------------------------------------------------------- the machine


def cpu_description() -> dict:
    """CPU model, family/model numbers, vector flags and nominal clock from /proc/cpuinfo."""
    info: dict = {"model": platform.processor() or "unknown"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(re.findall(r"^(model name|cpu family|model|cpu MHz|flags)\s*:\s*(.*)$", text, re.MULTILINE))
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name", info["model"]), family=fields.get("cpu family"),
                model_number=fields.get("model"), mhz=float(fields.get("cpu MHz", "nan")),
                vector=[f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
                hypervisor="hypervisor" in flags)
    return info


def fp32_flops_per_cycle_per_core(vector: list[str]) -> int:
    """FP32 FLOP per cycle per core, assuming two FMA pipes (Intel since Haswell, AMD since Zen 2)."""
    if "avx512f" in vector:
        return 2 * 16 * 2
    if "fma" in vector:
        return 2 * 8 * 2
    return 8


def machine_info() -> dict:
    """What the results file must say about the machine."""
    import psutil
    import torch

    from lvt.segment.device import available_cpu_cores

    cpu = cpu_description()
    cores = available_cpu_cores()
    per_cycle = fp32_flops_per_cycle_per_core(cpu.get("vector", []))
    return {
        "cpu": cpu, "cores_available": cores, "logical_cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "fp32_peak_gflops_estimate": round(cores * per_cycle * cpu.get("mhz", 0.0) / 1e3, 1),
        "peak_formula": f"{cores} cores x {per_cycle} FP32 FLOP/cycle x {cpu.get('mhz', 0.0):.0f} MHz",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "shared_machine": "yes: other engineers' jobs ran on the same 2 cores; timings are the min of repeats",
    }


def git_commit(repo: Path = REPO) -> str:
    """HEAD's hash in ``repo``, marked "+uncommitted" when the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance(command: list[str]) -> dict:
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "command": " ".join(command), "machine": machine_info()}


def measured_matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Best FP32 GEMM rate of torch on this machine: a practical ceiling for convolution throughput."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def flops_per_window(model: Path) -> float:
    """Network FLOPs of one window (multiply-add = 2), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lvt.segment.model_file import load_model

    network, manifest = load_model(model)
    network.deep_supervision = False
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 1, *manifest.patch_size_zyx))
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------- models and cases


def resolve_model(name: str | None) -> tuple[Path, bool]:
    """The model to benchmark: a manifest path, "random" (seeded random weights), or the bundled one.

    Returns:
        The manifest path and whether its weights are random.
    """
    from lvt.segment.model_file import bundled_model_path

    if name == "random":
        return random_model(), True
    path = Path(name) if name else bundled_model_path()
    if not path.is_file():
        sys.exit(f"model {path} not found; pass --model random to benchmark a seeded random initialisation")
    return path, False


def random_model(folder: Path = SCRATCH / "random_model", seed: int = 0) -> Path:
    """The bundled architecture (default NetworkConfig, 96^3 patch at 2 mm) with seeded random weights."""
    import torch

    from lvt.segment.model_file import ModelManifest, save_model
    from lvt.segment.network import NetworkConfig, build_network
    from lvt.segment.window import Window

    path = folder / f"lvt_random_seed{seed}.json"
    if path.is_file():
        return path
    torch.manual_seed(seed)
    config = NetworkConfig()
    manifest = ModelManifest(name=f"lvt_random_seed{seed}", version="0.0.0", spacing_mm=(2.0, 2.0, 2.0),
                             patch_size_zyx=(96, 96, 96), window=Window(), network=config)
    save_model(build_network(config), manifest, path)
    return path


@dataclass(frozen=True)
class Case:
    """A benchmark input: the CT file and a reference label map on its grid."""

    name: str
    ct: Path
    reference_labels: Path


def ircadb_case() -> Case:
    """The real 512 x 512 x 119 CT with its expert labels combined into one LVT label map (in scratch)."""
    if not IRCADB_CT.is_file():
        sys.exit(f"{IRCADB_CT} not found: the real case lives in ../shared/data beside the repository")
    labels = SCRATCH / "ircadb01_17_reference_labels.nii.gz"
    if not labels.is_file():
        from lvt.evaluate.files import EvaluationCase, load_truth, read_truth_spec
        from lvt.io import write_image
        from lvt.labels import exclusive_labels

        source = read_truth_spec(IRCADB_TRUTH_SPEC)["ircadb01_17"]
        grid, masks, _ = load_truth(EvaluationCase("ircadb01_17", IRCADB_CT, source))
        write_image(grid.with_array(exclusive_labels(masks)), labels)
    return Case("ircadb01_17 (512x512x119)", IRCADB_CT, labels)


def phantom_case(slices: int = 600, seed: int = 7) -> Case:
    """A 512 x 512 x ``slices`` phantom, 0.75 mm in-plane, 1 mm slices, int16 HU as scanners write it."""
    return _phantom(f"phantom (512x512x{slices})", f"phantom_{slices}_seed{seed}",
                    seed, (0.75, 0.75, 1.0), (384.0, 384.0, float(slices)))


def small_phantom_case(seed: int = 7) -> Case:
    """A 120 x 100 x 96 phantom at 2 mm (the body cut by the field of view): 4 windows of a 96^3 patch."""
    return _phantom("phantom (120x100x96, 2 mm)", f"phantom_small_seed{seed}", seed, (2.0, 2.0, 2.0),
                    (240.0, 200.0, 192.0))


def _phantom(name: str, stem: str, seed: int, spacing_mm: tuple[float, float, float],
             field_of_view_mm: tuple[float, float, float]) -> Case:
    """A phantom CT (int16 HU) and its labels, rendered once into scratch."""
    ct, labels = SCRATCH / f"{stem}_ct.nii.gz", SCRATCH / f"{stem}_labels.nii.gz"
    if not (ct.is_file() and labels.is_file()):
        import numpy as np

        from lvt.io import write_image
        from lvt.phantom import PhantomConfig, make_phantom

        phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=spacing_mm, field_of_view_mm=field_of_view_mm))
        hu = np.clip(np.round(phantom.image.array), -1024, 3071).astype(np.int16)
        write_image(phantom.image.with_array(hu), ct)
        write_image(phantom.image.with_array(phantom.labels), labels)
    return Case(name, ct, labels)


def cases(names: list[str]) -> list[Case]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    makers = {"ircadb": ircadb_case, "phantom600": lambda: phantom_case(600), "phantom119": lambda: phantom_case(119),
              "phantom-small": small_phantom_case}
    unknown = set(names) - set(makers)
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}: choose from {sorted(makers)}")
    return [makers[name]() for name in names]


# ------------------------------------------------------------------------------------- child processes


@dataclass
class ChildRun:
    """A finished child process: exit code, wall seconds, peak RSS, and its stdout lines with arrival times."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    lines: list[tuple[float, str]]
    stderr: str


def run_child(command: list[str], env: dict | None = None) -> ChildRun:
    """Run a command, timestamp each stdout line as it arrives, and measure the command's own peak RSS."""
    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile(suffix=".maxrss") as report:
        wrapped = [str(gnu_time), "-f", "%M", "-o", report.name, *command] if gnu_time.is_file() else command
        start = time.perf_counter()
        process = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, **(env or {})}, cwd=REPO)
        poller = None if gnu_time.is_file() else _HighWaterPoller(process.pid)
        lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
        stderr = process.stderr.read()
        process.wait()
        wall = time.perf_counter() - start
        peak_mb = poller.stop() if poller else float(Path(report.name).read_text().split()[-1]) / 1024.0
    return ChildRun(process.returncode, wall, peak_mb, lines, stderr)


class _HighWaterPoller:
    """Polls a process's VmHWM (peak RSS of its current address space) until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
            if found:
                self.peak_kb = max(self.peak_kb, int(found.group(1)))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024.0


def last_json_line(run: ChildRun) -> dict:
    for _, line in reversed(run.lines):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"child wrote no JSON (exit {run.returncode}):\n{run.stderr[-3000:]}")


def peak_rss_mb_so_far() -> float:
    """This process's peak RSS since it started (VmHWM; ``ru_maxrss`` would include its parent's)."""
    return _proc_status_kb("VmHWM") / 1024.0


def rss_mb_now() -> float:
    return _proc_status_kb("VmRSS") / 1024.0


def _proc_status_kb(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def write_results(path: Path, record: dict, markdown: str) -> None:
    """Write ``<path>.json`` and ``<path>.md`` side by side (atomically)."""
    from lvt.atomic import write_text_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path.with_suffix(".json"), json.dumps(record, indent=2, default=str) + "\n")
    write_text_atomically(path.with_suffix(".md"), markdown)


def machine_markdown(record: dict) -> str:
    """The header every results file starts with: machine, command, commit, date."""
    machine = record["machine"]
    cpu = machine["cpu"]
    return "\n".join([
        f"- Date: {record['date']}",
        f"- Commit: `{record['commit']}`",
        f"- Command: `{record['command']}`",
        f"- CPU: {cpu.get('model')} (family {cpu.get('family')}, model {cpu.get('model_number')}; "
        f"{'virtual machine, ' if cpu.get('hypervisor') else ''}{', '.join(cpu.get('vector', []))}), "
        f"{machine['cores_available']} cores available, {machine['ram_gb']} GB RAM",
        f"- torch {machine['torch']} ({machine['torch_threads']} threads), Python {machine['python']}",
        f"- Shared machine: {machine['shared_machine']}; load average at start {machine['load_average_at_start']}",
        "",
    ])
