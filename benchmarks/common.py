"""What every benchmark shares: the row format and the `python -m benchmarks.<name>` CLI."""

import argparse

COLUMNS = ("benchmark", "metric", "value", "baseline", "ratio", "target", "notes")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def format_row(row: dict) -> str:
    return ", ".join(f"{k}={fmt(row.get(k))}" for k in COLUMNS if k in row)


def bench_main(run, doc: str, quick_help: str, argv=None) -> int:
    """Parses --quick, runs the benchmark and prints its rows."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    for row in run(quick=args.quick):
        print(format_row(row), flush=True)
    return 0
