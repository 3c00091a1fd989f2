"""Shipped with pipenem as pipenem_data.topologies (package data; see pipenem_data/__init__.py)."""
