"""What GPUs this machine has, from the CUDA driver through cuda-python when it is installed
(``pip install 'livswap[gpu]'``), else from PyTorch's view of the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GpuInfo", "describe_gpus"]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_gib: float
    compute_capability: tuple[int, int]
    driver: str  # "CUDA driver 12.8" or "" when unknown
    source: str  # "cuda-python" or "torch"

    def describe(self) -> str:
        major, minor = self.compute_capability
        driver = f", {self.driver}" if self.driver else ""
        return (
            f"GPU {self.index}: {self.name}, {self.memory_gib:.1f} GiB, "
            f"compute {major}.{minor}{driver} (via {self.source})"
        )


def describe_gpus() -> list[GpuInfo]:
    """Every CUDA device; empty without a GPU or driver."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return _from_torch()
    return _from_driver(driver)


def _check(result: Any) -> Any:
    """cuda-python returns (error, value...) tuples; any error means "not usable"."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(str(err))
    return values[0] if len(values) == 1 else tuple(values)


def _from_driver(driver: Any) -> list[GpuInfo]:
    try:
        _check((driver.cuInit(0)[0], None))
        count = _check(driver.cuDeviceGetCount())
        version = int(_check(driver.cuDriverGetVersion()))
    except RuntimeError:
        return []
    attr = driver.CUdevice_attribute
    gpus = []
    for index in range(int(count)):
        device = _check(driver.cuDeviceGet(index))
        raw_name = _check(driver.cuDeviceGetName(128, device))
        name = bytes(raw_name).split(b"\0", 1)[0].decode(errors="replace")
        memory = int(_check(driver.cuDeviceTotalMem(device)))
        major = int(
            _check(
                driver.cuDeviceGetAttribute(
                    attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device
                )
            )
        )
        minor = int(
            _check(
                driver.cuDeviceGetAttribute(
                    attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device
                )
            )
        )
        gpus.append(
            GpuInfo(
                index=index,
                name=name,
                memory_gib=memory / 2**30,
                compute_capability=(major, minor),
                driver=f"CUDA driver {version // 1000}.{version % 1000 // 10}",
                source="cuda-python",
            )
        )
    return gpus


def _from_torch() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            GpuInfo(
                index=index,
                name=props.name,
                memory_gib=props.total_memory / 2**30,
                compute_capability=(props.major, props.minor),
                driver=f"CUDA runtime {torch.version.cuda}" if torch.version.cuda else "",
                source="torch",
            )
        )
    return gpus
