"""Where sweep tasks run: :mod:`robustkit.executors` (shared with sharded evaluation)."""
from __future__ import annotations

from robustkit.executors import (
    DaskExecutor,
    DeviceExecutor,
    ProcessExecutor,
    SerialExecutor,
    make_executor,
)

__all__ = ["DaskExecutor", "DeviceExecutor", "ProcessExecutor", "SerialExecutor",
           "make_executor"]
