"""The ``monitor:`` and ``retrain:`` sections of a policy file (issue 8).

```yaml
monitor:
  window: 500              # predictions per window
  interval_s: 5            # how often 'mlledger serve' looks for a new full window (background monitor)
  prediction_psi: 0.2      # PSI of the window's scores against the training data's; 0.2 blocks (DESIGN.md 6)
  input_psi: 0.2           # per-feature PSI of the inputs, when they are stored (serve --store-inputs)
  latency_p99_ms: 250      # optional
  accuracy_min: 0.7        # optional; needs at least min_labels labels in the window
  selection_ratio_min: 0.8 # optional; four-fifths rule (29 CFR 1607.4(D)) over the labels file's groups
  min_labels: 30
retrain:
  id: drift-retrain
  trigger: [prediction-drift, input-drift, accuracy]  # alert kinds
  data: reference+labelled # the incumbent's training data plus the labelled windows' inputs
  spec: incumbent          # the incumbent's recorded training spec, retrained on the new dataset
  seed: 7                  # optional: override the spec's seed
```

A section left out means: no monitor thresholds beyond the cited defaults, and no retraining.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from policies._rule_models import StrictModel

__all__ = ["ALERT_KINDS", "DEFAULT_PSI", "MonitorSection", "RetrainSection"]

AlertKind = Literal["prediction-drift", "input-drift", "latency", "accuracy", "fairness"]
ALERT_KINDS: Final[tuple[str, ...]] = AlertKind.__args__  # type: ignore[attr-defined]
#: DESIGN.md section 6: PSI 0.1 warns, 0.2 blocks.
DEFAULT_PSI: Final = 0.2

Positive = Annotated[float, Field(gt=0)]
Unit = Annotated[float, Field(ge=0, le=1)]


class MonitorSection(StrictModel):
    """Thresholds for the windows of recorded predictions at the policy's stage."""

    window: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    #: How often a server ('mlledger serve') looks for new full windows.
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0
    prediction_psi: Positive = DEFAULT_PSI
    input_psi: Positive = DEFAULT_PSI
    latency_p95_ms: Positive | None = None
    latency_p99_ms: Positive | None = None
    accuracy_min: Unit | None = None
    selection_ratio_min: Unit | None = None
    min_labels: Annotated[int, Field(ge=1)] = 30


class RetrainSection(StrictModel):
    """Which alerts retrain the model, on what data, with which spec."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")]
    trigger: Annotated[tuple[AlertKind, ...], Field(min_length=1, strict=False)]
    data: Literal["reference", "reference+labelled"] = "reference+labelled"
    spec: Literal["incumbent"] = "incumbent"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
