"""TRANSITION SHIM: deleted once every component has moved to rtkit._core."""

from ._core.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
