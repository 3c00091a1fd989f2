"""Reading a topology file: YAML (or a Mininet ``Topo`` subclass in a .py file) into the model.

The model (:mod:`testbed.topology`) knows no files; both readers build it.
"""

from __future__ import annotations

from pathlib import Path

from basics.yamlfile import read_yaml
from testbed.topology import Topology, build_topology


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file (or a Mininet topology .py file)."""
    path = Path(path)
    if path.suffix == ".py" and path.is_file():  # a Mininet Topo subclass
        from testbed.mininet_topo import topology_from_mininet

        return topology_from_mininet(path)
    return build_topology(read_yaml(path, "topology"), source=str(path), base_dir=path.parent)
