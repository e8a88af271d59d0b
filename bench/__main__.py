"""`make bench`: run every benchmark, write bench/results/*.md and print them."""

from __future__ import annotations

import sys

from bench import cli, lifecycle, notifications, orchestration, reports, web
from bench.common import RESULTS


def main() -> int:
    suites = {
        "reports": reports.main,
        "orchestration": orchestration.main,
        "notifications": notifications.main,
        "web": web.main,
        "cli": cli.main,
        "lifecycle": lifecycle.main,
    }
    chosen = sys.argv[1:] or list(suites)
    unknown = [name for name in chosen if name not in suites]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(suites)})",
            file=sys.stderr,
        )
        return 2
    for name in chosen:
        suites[name]()
    print(f"results in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
