"""``python -m fastsoftmax``: the same command line as the ``fastsoftmax`` script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
