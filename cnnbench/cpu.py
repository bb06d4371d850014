"""What the CPU is, as the kernel says it: its model name and the instruction sets that
decide which precisions run fast (VNNI for int8, native bf16). Recorded by `bench` and
`tune`, compared by `infer --plan`."""

from __future__ import annotations

import platform

# The flags that change which kernels ONNX Runtime and OpenVINO pick.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
)


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def isa_flags() -> tuple[str, ...]:
    """The `ISA_FLAGS` this CPU has, in that order; () where /proc/cpuinfo is not there."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return tuple(f for f in ISA_FLAGS if f in have)
    return ()


def has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(isa_flags()))
