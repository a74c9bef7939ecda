"""Helpers shared by the test suite (importable as ``helpers`` via pytest's pythonpath)."""

from .wait import wait_until

__all__ = ["wait_until"]
