"""pipenem testbed: the emulated network (topology model, backends, link shaping, the links'
plan over time). Knows nothing of torch: it gives hosts, shaped links and a link plan."""
