"""Evaluate a model on the expert-labelled real case ircadb01_17 and write the figures.

Run by hand (CPU by default):
    python Testing/Benchmarks/real_case/evaluate_real_case.py [--model M.json] [--device cpu] [--tta]

Writes RESULTS.md and results.json beside this script with the machine, the command and the commit.
The case is evaluation-only: never train or tune on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from lvt.evaluate.run import evaluate_folder
from lvt.segment.model_file import bundled_model_path, read_manifest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CT = REPO.parent / "shared" / "data" / "ircadb01_17" / "ircadb01_17_ct.nii.gz"
TRUTH_SPEC = HERE / "ircadb01_17_truth.yaml"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gib = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {psutil.cpu_count()} cores, {memory_gib:.0f} GiB RAM, {platform.system()}"


def evaluate(model: Path, device: str, tta: bool, work: Path) -> dict:
    """Segment the case with `lvt segment` in a child process (timed, peak memory), then score it."""
    prediction = work / "pred" / "ircadb01_17"
    command = [sys.executable, "-m", "lvt", "segment", str(CT), "-o", str(prediction), "--model", str(model),
               "--device", device, "--progress", "none"] + (["--tta"] if tta else [])
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    evaluation = evaluate_folder([prediction.parent], TRUTH_SPEC, work / "eval", (7.0, 3.0, 3.0))
    report = json.loads((prediction / "report.json").read_text())
    return {"seconds_end_to_end": round(seconds, 1), "peak_host_memory_mb": round(peak_mb),
            "stage_seconds": report["inference"]["timings_s"], "summary_md": (work / "eval" / "summary.md").read_text(),
            "per_case_csv": (work / "eval" / "per_case.csv").read_text(), "rows": len(evaluation.rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    if not CT.exists():
        sys.exit(f"{CT} not found: the real case lives in ../shared/data beside the repository")
    manifest, _ = read_manifest(args.model)
    with tempfile.TemporaryDirectory() as work:
        result = evaluate(args.model, args.device, args.tta, Path(work))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    record = {"date": datetime.date.today().isoformat(), "machine": machine(), "commit": commit,
              "command": " ".join(["python", *sys.argv]), "model": f"{manifest.name} {manifest.version}",
              "device": args.device, "tta": args.tta, **result}
    suffix = "_tta" if args.tta else ""
    (HERE / f"results{suffix}.json").write_text(json.dumps(record, indent=2) + "\n")
    (HERE / f"RESULTS{suffix}.md").write_text(
        f"# ircadb01_17 (3D-IRCADb-01 patient 17, expert labels)\n\n"
        f"- model: {record['model']}; device: {args.device}; TTA: {args.tta}\n"
        f"- date: {record['date']}; commit: {commit}\n- machine: {record['machine']}\n"
        f"- command: `{record['command']}`\n"
        f"- end to end (`lvt segment`, child process): {record['seconds_end_to_end']} s, "
        f"peak host memory {record['peak_host_memory_mb']} MB; stages: {record['stage_seconds']}\n\n"
        f"Truth: liver; vessels = portal vein + venous system inside the liver; tumor = both tumors.\n\n"
        + result["summary_md"])
    print((HERE / f"RESULTS{suffix}.md").read_text())


if __name__ == "__main__":
    main()
