"""Before/after tables of two run_memory.py results, and whether their report.json numbers are identical.

Run from the repository root: python Testing/Benchmarks/memory/compare.py [before] [after]
(labels of results_<label>.json beside this file; default "before" and "after"). Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(label: str) -> dict:
    return json.loads((HERE / f"results_{label}.json").read_text())


def report_difference(before: dict, after: dict) -> str:
    """'identical' when every report.json value but the input path is the same, else the differing keys."""
    def numbers(report: dict) -> dict:
        return {**report, "input": {k: v for k, v in report["input"].items() if k != "path"}}

    a, b = numbers(before), numbers(after)
    if a == b:
        return "identical (every value, bit for bit)"
    return "differs in " + ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def case_table(before: dict, after: dict) -> list[str]:
    lines = [f"### {before['case']}", "",
             "| stage | wall s before | wall s after | CPU s before | CPU s after | added MB before | added MB after |",
             "|---|---|---|---|---|---|---|"]
    for stage, old in before["stages"].items():
        new = after["stages"][stage]
        lines.append(f"| {stage} | {old['seconds']:.1f} | {new['seconds']:.1f} | {old['cpu_s']:.2f} | "
                     f"{new['cpu_s']:.2f} | {old['peak_mb'] - old['rss_before_mb']} | "
                     f"{new['peak_mb'] - new['rss_before_mb']} |")
    old, new = before["lvt_measure"], after["lvt_measure"]
    lines += ["", "| `lvt measure LABELS --ct CT` | before | after |", "|---|---|---|",
              f"| wall s | {old['wall_s']:.1f} | {new['wall_s']:.1f} |",
              f"| CPU s | {old['cpu_s']:.1f} | {new['cpu_s']:.1f} |",
              f"| peak RSS MB | {old['peak_rss_mb']} | {new['peak_rss_mb']} |", "",
              f"- report.json before vs after: {report_difference(old['report'], new['report'])}.", ""]
    return lines


def main() -> None:
    labels = sys.argv[1:3] if len(sys.argv) > 2 else ["before", "after"]
    before, after = (load(label) for label in labels)
    lines = [f"Load average: before {before['machine']['load_average_at_start']} -> {before['load_after']}; "
             f"after {after['machine']['load_average_at_start']} -> {after['load_after']}.", ""]
    by_name = {case["case"]: case for case in after["cases"]}
    for case in before["cases"]:
        if case["case"] in by_name:
            lines += case_table(case, by_name[case["case"]])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
