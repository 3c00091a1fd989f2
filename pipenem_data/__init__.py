"""The files pipenem ships for users to name: suites, topologies, run configs and examples.

In the repository they live at the top (``suites/``, ``topologies/``, ``configs/``,
``examples/``); the wheel carries them as this package's subpackages, so a command finds them
by name from any folder after a normal install (``basics.shipped``; ``pipenem list``)."""
