"""What a parameter prediction did to a network: predicted, tiled from a smaller block, left untouched, or kept at
its initial values (the classifier, with ``keep_classifier_init``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PredictionReport:
    """Coverage of one in-place prediction (:meth:`ghn.GHN.predict`).

    Attributes:
        predicted: names of the parameters set from the GHN, in ``named_parameters()`` order.
        tiled: the subset of ``predicted`` larger than the GHN's block along some axis, so their values repeat
            periodically along it (channels beyond ``max_shape``, kernels beyond the maximum, ...).
        untouched: parameters no graph node is bound to; they keep their previous values.
        kept_init: the classifier's parameters, left at their initial values on request
            (``keep_classifier_init=True``), e.g. because it has another number of outputs than the GHN's classes.
        num_params_predicted: scalars in ``predicted``.
        num_params_total: scalars in all parameters.
        bn_mode: how BatchNorm layers were left, ``"batch"`` or ``"running"`` (see :func:`ghn.batchnorm.set_bn_mode`).
        seconds: wall time of the prediction, graph construction included.
        widened_from: the width at which the network's narrow sibling was predicted before being widened into it
            (:mod:`ghn.widen`), ``None`` when it was predicted as it is.
    """

    predicted: list[str] = field(default_factory=list)
    tiled: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    kept_init: list[str] = field(default_factory=list)
    num_params_predicted: int = 0
    num_params_total: int = 0
    bn_mode: str = "batch"
    seconds: float = 0.0
    widened_from: int | None = None

    @property
    def complete(self) -> bool:
        """True when every parameter was predicted."""
        return not self.untouched and not self.kept_init

    def as_dict(self) -> dict:
        """Plain-dict form (for JSON)."""
        return asdict(self)

    def summary(self) -> str:
        """One line: counts of tensors and scalars."""
        n = len(self.predicted) + len(self.untouched) + len(self.kept_init)
        kept = f", {len(self.kept_init)} kept at their initial values (classifier)" if self.kept_init else ""
        return (f"predicted {len(self.predicted)}/{n} parameter tensors ({self.num_params_predicted:,}/"
                f"{self.num_params_total:,} values), {len(self.tiled)} tiled from a smaller block, "
                f"{len(self.untouched)} untouched{kept}; "
                + (f"predicted at width {self.widened_from} and widened; " if self.widened_from else "")
                + f"BatchNorm mode {self.bn_mode!r}; "
                f"{self.seconds * 1000:.1f} ms")

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.tiled:
            lines.append("tiled: " + ", ".join(self.tiled))
        if self.untouched:
            lines.append("untouched: " + ", ".join(self.untouched))
        if self.kept_init:
            lines.append("classifier kept at its initial values (keep_classifier_init): " + ", ".join(self.kept_init))
        return "\n".join(lines)
