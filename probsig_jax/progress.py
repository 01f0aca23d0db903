"""Progress bars (tqdm) that show rate and ETA and disappear with ``quiet``."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, *, quiet: bool = False, unit: str = "it") -> tqdm:
    """A tqdm bar writing to stderr; disabled when ``quiet``."""
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, leave=False)
