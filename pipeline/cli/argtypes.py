"""argparse value types shared by the commands: a bad value is one clear usage line."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer of at least 1 (``--threads 0`` is refused by argparse, not by a worker)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def size_hw(text: str) -> tuple[int, int]:
    """``HxW`` with both sides at least 1, e.g. ``224x336``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 224x336") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be 1 or more")
    return height, width
