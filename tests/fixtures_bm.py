"""Shared helpers for the benchmark_model tests: golden-file loading and sample synthesis.

Reads files under tests/data only; never touches a device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data" / "benchmark_model"
MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
TRANSCRIPTS: tuple[Path, ...] = tuple(sorted(DATA_DIR.glob("*.txt")))


def split_transcript(path: Path) -> tuple[list[str], str]:
    """(header lines, body) of a golden transcript: the header ends at the '# ---' line."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "# ---":
            return lines[: i + 1], "\n".join(lines[i + 1:])
    return [], text


def expected(path: Path) -> dict[str, Any]:
    """The hand-written expectations next to a transcript."""
    data: dict[str, Any] = json.loads(path.with_suffix(".expected.json").read_text())
    return data


def _g(x: float) -> str:
    return f"{x:.6g}"


def _std(values: list[int]) -> int:
    n = len(values)
    avg = sum(values) / n
    sq = 0.0
    for v in values:
        sq += float(v) * v
    var = int(sq / n - avg * avg)
    return int(math.sqrt(var)) if var > 0 else 0


def synthesize_samples(
    *, count: int, first: int, curr: int, min_us: int, max_us: int, avg: str, std: int,
    p5: int | None = None, median: int | None = None, p95: int | None = None,
) -> list[int]:
    """A latency list (in run order) whose tsl::Stat line has exactly these printed values.

    Used to re-render published transcripts: positions 0/n-1 of the sorted list hold min/max,
    the percentile indices (n*p/100) hold p5/median/p95, `first` and `curr` are placed where
    their value fits, and the free values are then moved (sum kept) until the printed avg and
    the truncated population std match.
    """
    n = count
    if n == 1:
        return [curr]
    fixed: dict[int, int] = {0: min_us, n - 1: max_us}
    for p, v in ((5, p5), (50, median), (95, p95)):
        if v is not None:
            fixed[n * p // 100] = v

    def bounds(i: int) -> tuple[int, int]:
        lo = max((v for j, v in fixed.items() if j < i), default=min_us)
        hi = min((v for j, v in fixed.items() if j > i), default=max_us)
        return lo, hi

    used: set[int] = set()

    def place(v: int) -> int:
        for i in sorted(fixed):
            if fixed[i] == v and i not in used:
                used.add(i)
                return i
        # Put it at its likely rank (as if the samples were normal around avg with this std),
        # or the nearest free slot whose neighbours allow the value.
        fits = [i for i in range(n) if i not in fixed and bounds(i)[0] <= v <= bounds(i)[1]]
        if not fits:
            raise ValueError(f"cannot place {v}")
        z = (v - float(avg)) / max(std, 1)
        rank = n * 0.5 * (1 + math.erf(z / math.sqrt(2)))
        i = min(fits, key=lambda j: abs(j - rank))
        fixed[i] = v
        used.add(i)
        return i

    first_slot, curr_slot = place(first), place(curr)
    free = [i for i in range(n) if i not in fixed]
    order = [first_slot] + [i for i in range(n) if i not in (first_slot, curr_slot)] + [curr_slot]
    if not free:
        return [fixed[i] for i in order]
    lims = {i: bounds(i) for i in free}
    want_sum = round(float(avg) * n)
    for k in range(n + 1):
        if _g((want_sum + k) / n) == avg:
            want_sum += k
            break
        if _g((want_sum - k) / n) == avg:
            want_sum -= k
            break
    vals = dict(fixed)
    rest = want_sum - sum(fixed.values())
    for i in free:
        lo, hi = lims[i]
        vals[i] = min(max(round(rest / len(free)), lo), hi)
    diff = want_sum - sum(vals.values())
    while diff:
        step = 1 if diff > 0 else -1
        moved = False
        for i in free:
            lo, hi = lims[i]
            if lo <= vals[i] + step <= hi:
                vals[i] += step
                diff -= step
                moved = True
                if not diff:
                    break
        if not moved:
            raise ValueError("cannot reach the sum")
    target = (std + 0.5) ** 2
    for _ in range(20000):
        cur = _std([vals[i] for i in range(n)])
        if cur == std:
            break
        mean = want_sum / n
        cur_var = sum(float(v) * v for v in vals.values()) / n - mean * mean
        spread = cur < std
        downs = [i for i in free if vals[i] > lims[i][0]]
        ups = [i for i in free if vals[i] < lims[i][1]]
        if not downs or not ups:
            raise ValueError("no room to change the spread")
        if spread:
            a = min(downs, key=lambda i: vals[i])
            b = max((i for i in ups if i != a), key=lambda i: vals[i])
        else:
            a = max(downs, key=lambda i: vals[i])
            b = min((i for i in ups if i != a), key=lambda i: vals[i])
        gap = vals[b] - vals[a]
        need = abs(target - cur_var) * n
        if spread:
            k = int((-abs(gap) + math.sqrt(gap * gap + 2 * need)) / 2)
        else:
            k = int(need / (2 * max(abs(gap), 1)))
        k = max(1, min(k, vals[a] - lims[a][0], lims[b][1] - vals[b]))
        vals[a] -= k
        vals[b] += k
    else:
        raise ValueError("std not reached")
    return [vals[i] for i in order]
