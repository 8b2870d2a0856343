"""Table values for the report templates, and the cell formatting every section shares.

Pure: strings in, strings out. Never touches a file or a device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: How many items (cases, sample ids) a table cell lists before it says "and N more".
MAX_ITEMS = 12


@dataclass(frozen=True, slots=True)
class Table:
    """A table ready for the template: header, string cells, one CSS class per row.

    `note` is printed under the table (for instance how many rows were left out of the page
    and which CSV has them).
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...]
    note: str = ""


def first_items(items: Sequence[str]) -> str:
    """The first few items, comma-separated, and how many more there are."""
    more = len(items) - MAX_ITEMS
    return ", ".join(items[:MAX_ITEMS]) + (f" and {more} more" if more > 0 else "")


def is_nan(v: Any) -> bool:
    """True for None, pd.NA and NaN; text and other values are not missing."""
    if v is None or v is pd.NA:
        return True
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def truthy(v: Any) -> bool:
    """bool() that treats missing values (NaN, pd.NA, None) as False instead of raising."""
    return False if is_nan(v) else bool(v)


def text(v: Any) -> str:
    """A cell's text; missing values are empty."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def num(v: Any) -> str:
    """A number with 3 significant-ish digits; "—" when missing."""
    if is_nan(v):
        return "—"
    x = float(v)
    if 0 < abs(x) < 1:  # sub-millisecond latencies keep 3 significant digits
        return f"{x:.3g}"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def ms(us: Any) -> str:
    """Microseconds shown as milliseconds."""
    return "—" if is_nan(us) else num(float(us) / 1e3)


def pct(v: Any) -> str:
    """A fraction shown as a percentage."""
    return "—" if is_nan(v) else f"{float(v) * 100:.1f} %"


def ci_ms(row: Any) -> str:
    """A median CI in ms with its achieved level."""
    if is_nan(row["ci_low_us"]):
        return "—"
    return f"[{ms(row['ci_low_us'])}, {ms(row['ci_high_us'])}] ({pct(row['ci_level'])})"


def case_labels(frame: pd.DataFrame) -> pd.Series:
    """model/quantization/delegate/t<threads> for every row, vectorized (analysis.case_label)."""
    if frame.empty:
        return pd.Series(dtype=str, index=frame.index)
    return (frame["model"].astype(str) + "/" + frame["quantization"].astype(str) + "/"
            + frame["delegate"].astype(str) + "/t" + frame["threads"].astype(str))


def capped_note(shown: int, total: int, csv: str = "samples.csv") -> str:
    """The note under a table that shows `shown` of `total` rows."""
    if total <= shown:
        return ""
    return f"Showing {shown} of {total} rows; every row is in {csv} next to this page."
