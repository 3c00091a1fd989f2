"""Shipped with pipenem as pipenem_data.examples (package data; see pipenem_data/__init__.py)."""
