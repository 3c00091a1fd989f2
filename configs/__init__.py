"""Shipped with pipenem as pipenem_data.configs (package data; see pipenem_data/__init__.py)."""
