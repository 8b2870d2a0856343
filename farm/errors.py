"""The exception hierarchy. Library code raises these with messages a user can act on."""

from __future__ import annotations


class FarmError(Exception):
    """Base of every error farm reports to a user (the CLI prints it as one line)."""


class ConfigError(FarmError):
    """A config file is malformed; the message names the file, key path and allowed values."""


class DeviceError(FarmError):
    """A device operation failed."""

    def __init__(self, serial: str, op: str, cause: str) -> None:
        super().__init__(f"{serial}: {op}: {cause}")
        self.serial = serial
        self.op = op
        self.cause = cause


class BenchmarkError(FarmError):
    """benchmark_model could not be run or its output could not be used."""


class ConversionError(FarmError):
    """A model variant could not be converted."""


class StoreError(FarmError):
    """The results store is missing, corrupt or of an unknown schema version."""
