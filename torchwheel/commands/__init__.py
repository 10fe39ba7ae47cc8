"""One module per sub-command: ``configure(parser)`` and ``run(args) -> int``."""
