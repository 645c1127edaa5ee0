"""One module per CLI command; its arguments are in `parsers/` (light), `gateway/cli.py` loads the config and dispatches."""
