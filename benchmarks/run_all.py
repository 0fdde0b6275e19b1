"""Runs every benchmark and writes one Markdown table of ratios with their absolute numbers.

    python -m benchmarks.run_all [--quick] [--only mining,trainer] [--output benchmarks/RESULTS.md]

Each benchmark module has `run(quick: bool) -> list[dict]`; a row holds the measured value,
the baseline measured in the same run, their ratio and the target. Each benchmark runs in its
own Python process, so that one's leftover TensorFlow threads, graphs and memory do not slow
the next.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks.common import COLUMNS, fmt, format_row

BENCHMARKS = {
    "mining": "benchmarks.bench_mining",
    "beam_embed": "benchmarks.bench_mine_embed",
    "trainer": "benchmarks.bench_trainer",
    "input_pipeline": "benchmarks.bench_input_pipeline",
    "pretrained": "benchmarks.bench_pretrained",
    "tflite": "benchmarks.bench_tflite",
    "detection": "benchmarks.bench_detection",
    "detector_runs": "benchmarks.bench_detector_runs",
    "index": "benchmarks.bench_index",
    "gallery": "benchmarks.bench_gallery",
    "gallery_scale": "benchmarks.bench_gallery_scale",
    "service": "benchmarks.bench_service",
}


_CHILD = """
import json, sys, importlib
rows = importlib.import_module(sys.argv[1]).run(quick=sys.argv[2] == "1")
print("ROWS_JSON " + json.dumps(rows, default=float))
"""


def run_isolated(module: str, quick: bool) -> list[dict]:
    """Runs one benchmark module in a fresh interpreter; returns its rows.

    Its output streams through; raises RuntimeError if it fails."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, module, "1" if quick else "0"],
                            stdout=subprocess.PIPE, text=True)
    rows = None
    for line in proc.stdout:
        if line.startswith("ROWS_JSON "):
            rows = json.loads(line[len("ROWS_JSON "):])
        else:
            print("   | " + line, end="", flush=True)
    if proc.wait() != 0 or rows is None:
        raise RuntimeError(f"{module} failed (exit {proc.returncode})")
    return rows


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorflow as tf
    gpus = len(tf.config.list_physical_devices("GPU"))
    return (f"{os.cpu_count()} cores ({cpu}), {gpus} GPU, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def to_markdown(rows, header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated subset of: "
                        + ", ".join(BENCHMARKS))
    parser.add_argument("--output", default="", help="write the Markdown table here")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choices: {list(BENCHMARKS)}")

    rows, failures = [], []
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.time()
        try:
            new_rows = run_isolated(BENCHMARKS[name], args.quick)
        except RuntimeError as e:  # one broken benchmark must not hide the others' results
            print(f"   {e}", flush=True)
            failures.append(name)
            new_rows = [{"benchmark": name, "metric": "FAILED", "notes": "see log"}]
        for row in new_rows:
            print("   " + format_row(row), flush=True)
        rows.extend(new_rows)
        print(f"   ({time.time() - t0:.0f} s)", flush=True)

    header = (f"Benchmarks run {datetime.date.today().isoformat()} on {machine_description()}"
              + (" (quick mode)" if args.quick else ""))
    table = to_markdown(rows, header)
    print()
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table)
        print(f"wrote {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
