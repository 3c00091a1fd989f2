"""What every layer shares and nothing else owns: the errors the CLI turns into exit codes
(``errors``), reading a user's YAML file (``yamlfile``) and the units of link parameters
(``units``). It imports nothing of pipenem."""
