"""One module per CLI command; `gateway/cli.py` only parses arguments and dispatches."""
