"""Sizes as people read them (one formatter, so the card, the CLI and the Space agree)."""

from __future__ import annotations


def human_size(n: float) -> str:
    """``1536`` -> ``1.5 kB``; bytes in powers of 1000, as the Hub shows file sizes."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
