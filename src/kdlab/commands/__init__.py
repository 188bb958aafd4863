"""The ``kdlab`` sub-commands, one module per group; each module's ``register(commands)`` adds its parsers (with
``handler=`` defaults that :func:`kdlab.cli.main` calls). A new command is a new module listed in ``MODULES``."""

MODULES = ("training", "analysis", "export", "data", "runs")
