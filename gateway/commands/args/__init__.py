"""The arguments of each `driftgate` command, one light module per command.

Each module has `register(commands)`, which adds the command's parser with `handler=run`,
and `run(args, settings)`, which imports the command's implementation (gateway/commands/,
heavy: aiohttp, asyncpg, onnxruntime, numpy) only when the command runs. `driftgate --help`
and `driftgate X --help` therefore import none of that. COMMANDS is the order `--help` lists.
"""

COMMANDS = ("serve", "demo", "models", "embed", "migrate", "adopt", "load", "loadtest", "evaluate", "worker")
