"""ai_edge_litert's tools/benchmark_litert_model.py, run unchanged but for its rounding.

    python bench/_litert_tool.py --model=M --num_threads=N --warmup_runs=W --num_runs=R

The tool rounds its results to 0.01 ms, which is coarser than a small model's whole latency.
This shim imports the tool from the installed wheel, shadows the builtin `round` in the tool's
module with the identity (its timing loop is untouched) and prints the result dict as one JSON
line on stdout (the tool's own report goes to stderr).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any


def main() -> int:
    """Run the tool; print its unrounded results as JSON."""
    from ai_edge_litert.tools import benchmark_litert_model as tool

    def no_round(x: Any, ndigits: int | None = None) -> Any:
        return x

    tool.round = no_round
    sys.argv = ["benchmark_litert_model.py", *sys.argv[1:]]
    args = tool.parse_args()
    with contextlib.redirect_stdout(sys.stderr):
        results = tool.run_benchmark(args)
    lat = results["latency"]
    print(json.dumps({"avg_us": lat["avg_ms"] * 1000, "n": lat["num_runs"],
                      "fully_accelerated": results.get("fully_accelerated")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
