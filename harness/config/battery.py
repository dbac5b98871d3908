"""What the evaluation battery computes, decided from the config alone (no torch).

- `preference_wanted`: whether a trial computes the preference metrics (pref_accuracy,
  reward_mean, win_rate_vs_sft), which need the sweep's scoring reward model. With
  `data.preference.metrics.enabled: auto` (the default) they are computed when the sweep asks
  for them: its trial trains on preference data (dpo, kto, orpo, ppo, grpo, rloo), or one of
  the sweep's objectives or `report.metrics` is a preference metric. An SFT-only sweep that
  optimizes perplexity (the default sweep) never trains a reward model it does not use.
- `perplexity_batching`: windows and padded tokens per forward pass of the sliding-window
  perplexity for `eval.perplexity.batch_size: auto`, per device (measurements in its docstring).
- `check_battery`: the config checks of these settings and of `eval.mt_bench.batch_size`
  (harness.config.validate).
"""

from __future__ import annotations

from omegaconf import DictConfig

from harness.config.scale import check_scorer
from harness.errors import ConfigError

PREFERENCE_METRICS = ("pref_accuracy", "reward_mean", "win_rate_vs_sft")
PREFERENCE_CHOICES = (True, False, "auto")
# Padded tokens per perplexity forward under `batch_size: auto` (perplexity_batching).
PPL_TOKENS_PER_BATCH = {"cuda": 32768, "cpu": 512}
LOGITS_BUDGET = 1 << 30   # float32 logits elements per forward (4 GiB)


def _names(rows) -> set[str]:
    out = set()
    for row in rows or []:
        out.add(str(row.get("metric") if hasattr(row, "get") else row))
    return out


def preference_wanted(enabled, method_kind: str, objectives=(), report_metrics=()) -> bool:
    """Whether a trial of `method_kind` computes the preference metrics: `enabled` true/false
    as given; "auto": for non-SFT methods, or when an objective (rows with `metric`) or a
    `report.metrics` name is a preference metric."""
    if enabled not in PREFERENCE_CHOICES:
        raise ConfigError(f"data.preference.metrics.enabled must be true, false or auto, "
                          f"got {enabled!r}")
    if enabled != "auto":
        return bool(enabled)
    asked = (_names(objectives) | _names(report_metrics)) & set(PREFERENCE_METRICS)
    return str(method_kind) != "sft" or bool(asked)


def trial_wants_preference(cfg: DictConfig) -> bool:
    """preference_wanted for a composed trial config (False without data.preference)."""
    pdata = cfg.data.get("preference")
    if pdata is None:
        return False
    enabled = (pdata.get("metrics") or {}).get("enabled", "auto")
    return preference_wanted(enabled, str(cfg.method.get("kind", "sft")),
                             (cfg.get("sweep") or {}).get("objectives") or [],
                             (cfg.get("report") or {}).get("metrics") or [])


def perplexity_batching(setting, device_type: str,
                        vocab_size: int = 32000) -> tuple[int, int | None]:
    """(windows, padded tokens) per perplexity forward: an int setting as given, with no
    token cap; "auto" per device, windows longest first, as many per forward as fit the
    device's token budget and 4 GiB of float32 logits (one window at least).

    CPU: 512 tokens. Measured on the 2-core machine (1 thread, alternating, best of 2) against
    one window per forward: 2.2x on the embedded model's held-out texts (windows of 22-91
    tokens; 256 tokens 1.8x, 1024 2.1x, 2048 1.6x), and 1.0x on 256-token windows of a 4 x 256
    Llama, where 8 windows per forward (the old fixed batch) were 0.89x and 2048 tokens 0.93x:
    a CPU forward of a few hundred tokens already fills the matrix kernels, and more only adds
    padding and the 4-D mask. CUDA (any accelerator): 32768 tokens (128 windows of 256, 16 of
    2048, 4 of 2048 at a 128k vocabulary): one window at a time leaves a GPU waiting on
    kernel launches.
    """
    if setting != "auto":
        return int(setting), None
    tokens = PPL_TOKENS_PER_BATCH.get(device_type, PPL_TOKENS_PER_BATCH["cuda"])
    tokens = max(1, min(tokens, LOGITS_BUDGET // max(1, int(vocab_size))))
    return tokens, tokens


def check_battery(cfg: DictConfig) -> None:
    """ConfigError with a line per bad setting: the preference-metrics switch and scorer
    overrides, the MT-Bench and perplexity batch sizes."""
    lines = []
    for check in (trial_wants_preference, check_scorer):
        try:
            check(cfg)
        except ConfigError as exc:
            lines.extend(exc.problems)
    mt_batch = (cfg.eval.get("mt_bench") or {}).get("batch_size", 1)
    if isinstance(mt_batch, bool) or not isinstance(mt_batch, int) or mt_batch < 1:
        lines.append(f"eval.mt_bench.batch_size must be an integer >= 1, got {mt_batch!r}")
    batch = cfg.eval.perplexity.get("batch_size")
    if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        lines.append(f"eval.perplexity.batch_size must be an integer >= 1 or auto, "
                     f"got {batch!r}")
    if lines:
        raise ConfigError(problems=lines)
