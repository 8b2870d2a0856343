"""A bare LiteRT interpreter loop (the reference for benchmark 3), as a child process.

    python bench/_bare_loop.py MODEL THREADS WARMUP RUNS [reset]

Prints one JSON line: {"avg_us": mean of the timed invoke() calls, "n": RUNS}. Inputs are set
once before the loop (the same random data every run); with `reset`, they are set again before
every run, untimed, as benchmark_model's ResetInputsAndOutputs does (and farm's runner). Only
`invoke()` is timed, with perf_counter_ns, as farm's runner and the LiteRT tool time theirs.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main() -> int:
    """Time RUNS invokes after WARMUP."""
    model, threads, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(
        sys.argv[4])
    interp = Interpreter(model_path=model, num_threads=threads)
    interp.allocate_tensors()
    reset = sys.argv[5:6] == ["reset"]
    rng = np.random.default_rng(0)
    inputs = []
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            data = rng.uniform(-1, 1, d["shape"]).astype(dtype)
        else:
            data = rng.integers(-128, 127, d["shape"], endpoint=True).astype(dtype)
        interp.set_tensor(d["index"], data)
        inputs.append((d["index"], data))
    invoke, set_tensor = interp.invoke, interp.set_tensor
    for _ in range(warmup):
        invoke()
    clock = time.perf_counter_ns
    times = []
    for _ in range(runs):
        if reset:
            for index, data in inputs:
                set_tensor(index, data)
        t0 = clock()
        invoke()
        times.append(clock() - t0)
    print(json.dumps({"avg_us": sum(times) / len(times) / 1000, "n": len(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
