"""TRANSITION SHIM: deleted once every component has moved to rtkit._core."""

from ._core.pages import Page

__all__ = ["Page"]
