"""The files pipenem ships for users to name: suites, topologies, run configs and examples.

In the repository they live at the top (``suites/``, ``topologies/``, ``configs/``,
``examples/``); the wheel carries them as this package's subpackages, so a command finds them
by name from any folder after a normal install (``basics.shipped``; ``pipenem list``)."""

from pathlib import Path

# Run from a checkout (tests, `python -m pipenem` in the repository), this folder shadows an
# installed pipenem_data and has no subfolders: its subpackages are then the repository's own
# top-level folders, as the editable install maps them.
_here = Path(__file__).resolve().parent
if not (_here / "suites").is_dir() and (_here.parent / "suites" / "__init__.py").is_file():
    __path__.append(str(_here.parent))
