"""farm: an on-device benchmarking farm orchestrator for TensorFlow Lite models."""

__version__ = "0.1.0"
