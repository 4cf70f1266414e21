"""The ``lvt`` command: one small module per command, arguments and exit codes only."""
