"""The ``fastsoftmax`` command line: ``score``, ``bench`` and ``info``.

Only the console script and ``python -m fastsoftmax`` import this package;
``import fastsoftmax`` never does. Every failure a user can cause prints one line
starting with ``fastsoftmax: error:`` on stderr and exits with status 2.
"""

import argparse
import sys

from .._version import __version__
from . import bench, info, score
from ._errors import CommandError

PROG = "fastsoftmax"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message):
        raise CommandError(f"{message} (see '{self.prog} --help')")


def build_parser():
    """The parser of the whole command line, one sub-parser per command."""
    parser = _Parser(
        prog=PROG,
        description="Row-wise softmax for files of logits, benchmarks and diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    for module in (score, bench, info):
        module.add_parser(commands)
    return parser


def main(argv=None):
    """Run the command line on `argv` (``sys.argv[1:]`` by default).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit status: 0 on success, 1 when a benchmarked backend failed,
        2 for any error a user can cause, 130 when interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
