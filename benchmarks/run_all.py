"""Run every benchmark (``benchmarks/bench_*.py``) and print its table: ``make bench``.

``--quick`` runs each at a small size (minutes in all); without it the
benchmarks use the papers' settings and take much longer.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a first look")
    parser.add_argument("only", nargs="*", help="benchmark names, e.g. cellot w1ot (default: all)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# machine load before the benchmarks: {load}")
    for script in scripts:
        print(f"\n## {script.stem}\n")
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        start = time.perf_counter()
        module.main(quick=args.quick)
        print(f"\n({script.stem}: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
