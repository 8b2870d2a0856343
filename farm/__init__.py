"""farm: an on-device benchmarking farm orchestrator for TensorFlow Lite models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_samples(db: Any = None, run_id: str | None = None) -> Any:
    """Samples from the results store as a pandas DataFrame (see `farm.api.load_samples`).

    Kept here because users call `farm.load_samples()`; imported lazily so that `import farm`
    stays cheap (no pandas, no TensorFlow).
    """
    from farm.api import DEFAULT_DB
    from farm.api import load_samples as _load

    return _load(db or DEFAULT_DB, run_id)
