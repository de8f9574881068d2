"""TRANSITION SHIM: deleted once every component has moved to rtkit._core."""

from ._core.ids import new_id

__all__ = ["new_id"]
