"""The one exception type of the command line."""


class CommandError(Exception):
    """A user-facing failure: printed as one ``fastsoftmax: error:`` line, exit status 2."""
