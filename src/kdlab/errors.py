"""User-facing errors.

A :class:`KdlabError` is a mistake in what the user gave us (a recipe key, a data file, a label, a path). The CLI
prints its message as one line on stderr and exits with status 2, without a traceback. Anything else that escapes
is a bug in kdlab and keeps its traceback.
"""


class KdlabError(Exception):
    """An error in the user's input; its message says what is wrong and where, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
