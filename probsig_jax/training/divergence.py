"""The one exception every training loop raises when the loss or the gradient stops being finite."""

from __future__ import annotations

from typing import Any


class TrainingDiverged(FloatingPointError):
    """The loss or the gradient norm became NaN or infinite.

    Attributes:
      history: the recorded curve up to that step (the loop's own format), or ``None``.
      last_good_step: the newest checkpoint written before it (``None`` if the loop keeps none).
    """

    def __init__(self, message: str, history: Any = None, last_good_step: int | None = None):
        super().__init__(message)
        self.history = history
        self.last_good_step = last_good_step
