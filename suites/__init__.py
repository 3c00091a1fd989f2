"""Shipped with pipenem as pipenem_data.suites (package data; see pipenem_data/__init__.py)."""
