"""One module per CLI command, its arguments in `args/`; `gateway/cli.py` loads the config and dispatches."""
