"""Argument types shared by the commands."""

import argparse


def positive_int(text):
    """An integer >= 1, else the argparse error that names the text given."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
