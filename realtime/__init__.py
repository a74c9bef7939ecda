"""The live process: backends, scheduler, metrics, session recording and the CLI entry point.

Importing this package stays light: no PyQt6 and no training-only packages.
"""
