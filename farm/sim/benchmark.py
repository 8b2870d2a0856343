"""benchmark_model emulation (placeholder until the performance model lands)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from farm.sim.shell import Ctx

MARKER = b"FARM_SIM_BENCHMARK_MODEL"
REAL_MARKER = b"tflite::benchmark"
ABI_OF_MACHINE: dict[int, str] = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}


def elf_info(data: bytes) -> tuple[int, int] | None:
    """(bits, e_machine) of an ELF header, or None."""
    if len(data) < 20 or not data.startswith(b"\x7fELF") or data[4] not in (1, 2):
        return None
    bits = 32 if data[4] == 1 else 64
    endian = "<" if data[5] != 2 else ">"
    (machine,) = struct.unpack_from(endian + "H", data, 18)
    return bits, machine


def is_benchmark_binary(data: bytes) -> bool:
    """Whether an ELF is the farm stub or a real benchmark_model."""
    return MARKER in data or REAL_MARKER in data


def run_benchmark_model(ctx: Ctx, abi: str) -> int:
    """Placeholder."""
    ctx.err("benchmark_model emulation not implemented yet\n")
    return 1
