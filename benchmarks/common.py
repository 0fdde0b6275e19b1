"""What every benchmark shares: the row format and the `python -m benchmarks.<name>` CLI."""

import argparse

COLUMNS = ("benchmark", "metric", "value", "baseline", "ratio", "target", "notes")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def format_row(row: dict) -> str:
    return ", ".join(f"{k}={fmt(row.get(k))}" for k in COLUMNS if k in row)


def bench_main(run, doc: str, quick_help: str, argv=None, options=None) -> int:
    """Parses --quick (and `options`: {name: argparse keyword arguments} of run's other
    keyword arguments, passed as --NAME), runs the benchmark and prints its rows."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    for name, spec in (options or {}).items():
        parser.add_argument(f"--{name}", **spec)
    for row in run(**vars(parser.parse_args(argv))):
        print(format_row(row), flush=True)
    return 0
