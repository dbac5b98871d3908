"""The driver's pre-flight: predict each trial before it is launched (harness.estimate) and
refuse one that cannot fit the GPU it will get (`launcher.gpu_memory_gb`, `gpu_type`, or the
visible local GPU): it is told to Optuna as PRUNED with the reason and recorded, so the report
lists it. `launcher.preflight: warn` logs and launches; `off` skips the check (the prediction
is still recorded)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from harness.errors import ConfigError
from harness.estimate.predict import check_estimate_config, gpu_memory_limit, predict
from harness.records import PRUNED, TrialRecord, TrialSpec

log = logging.getLogger(__name__)
ATTR = "preflight"   # Optuna user attribute of a refused trial: the reason


class Preflight:
    """One sweep's pre-flight check (the limit is read once)."""

    def __init__(self, cfg: DictConfig):
        self.mode = str(cfg.launcher.get("preflight", "refuse"))
        self.limit = gpu_memory_limit(cfg) if self.mode != "off" else None

    def predict(self, cfg: DictConfig) -> dict | None:
        """The trial's prediction as a dict for its spec and record (None: no estimate)."""
        try:
            return predict(cfg).as_dict()
        except ConfigError as exc:   # checked in prepare() when a limit applies
            log.warning("no memory estimate: %s", exc)
            return None

    def refusal(self, prediction: dict | None) -> str | None:
        """The reason not to launch ("predicted 93.1 GB > 80 GB"), or None."""
        if self.limit is None or prediction is None or prediction["peak_gb"] <= self.limit:
            return None
        reason = f"predicted {prediction['peak_gb']:.3g} GB > {self.limit:g} GB"
        if self.mode == "warn":
            log.warning("%s (launcher.preflight=warn: launching anyway)", reason)
            return None
        log.warning("not launched: %s (launcher.preflight=refuse)", reason)
        return reason


def refused_record(cfg: DictConfig, spec: TrialSpec, reason: str) -> TrialRecord:
    """The record of a trial the pre-flight did not launch."""
    predicted = spec.prediction or {}
    return TrialRecord(number=spec.number, status=PRUNED, method=str(cfg.method.name),
                       params=dict(spec.params), seed=spec.seed, prediction=spec.prediction,
                       preflight=reason, git_commit=spec.git_commit,
                       trainable_params=int(predicted.get("trainable_params", 0)),
                       total_params=int(predicted.get("total_params", 0)))


def check_trial(cfg: DictConfig, add) -> None:
    """prepare()'s check of one probe trial config: estimator settings, and, when a limit
    applies, that the estimate can be made (a config.json missing a field: one line)."""
    check_estimate_config(cfg, add)
    try:
        if cfg.launcher.get("preflight", "refuse") != "off" and gpu_memory_limit(cfg):
            predict(cfg)
    except ConfigError as exc:
        for line in exc.problems:
            add(line)
