"""pipenem testbed: the emulated network (topology model, backends, link shaping).

Knows nothing of torch: it gives hosts, shaped links and a bandwidth schedule.
"""

from testbed.errors import ConfigError, UnsupportedError

__all__ = ["ConfigError", "UnsupportedError"]
