"""Running averages weighted by sample count."""

from __future__ import annotations


class AverageMeter:
    """Mean of values each observed over ``n`` samples.

    Weighting by ``n`` makes a short last batch count for what it holds (the released code
    averaged per batch, so a batch of 3 weighed as much as one of 256).
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else float("nan")
