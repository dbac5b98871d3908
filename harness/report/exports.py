"""A sweep's tables as files beside its report (reports/<sweep>/):

    <sweep>_trials.csv / .parquet     SweepData.trials, one row per trial folder
    <sweep>_best_config.yaml          the best trial's params, overrides and config
    <sweep>_replicates.csv            every run of a replicated configuration (when any)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.sweep.results import SweepData, best_config_yaml, load_sweep, missing, num, plain


def write_exports(sweep_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Trials as CSV and Parquet, and the best trial's config as YAML (when there is one).

    Returns {"csv": ..., "parquet": ..., "best_config": ..., "replicates": ...}; no
    best_config key when no trial has completed, no replicates key without replicates.
    """
    data = load_sweep(Path(sweep_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = arrow_safe(data.trials)
    paths = {"csv": out_dir / f"{data.name}_trials.csv",
             "parquet": out_dir / f"{data.name}_trials.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    if data.best is not None:
        paths["best_config"] = out_dir / f"{data.name}_best_config.yaml"
        paths["best_config"].write_text(best_config_yaml(data, data.best))
    if data.replicates:
        paths["replicates"] = out_dir / f"{data.name}_replicates.csv"
        arrow_safe(replicates_frame(data)).to_csv(paths["replicates"], index=False)
    return paths


def replicates_frame(data: SweepData) -> pd.DataFrame:
    """One row per run of a replicated configuration (the trial and its replicates)."""
    rows = []
    for group in data.groups.values():
        source = [group.trial] if group.trial is not None else []
        for record in source + sorted(group.replicates, key=lambda r: r.seed):
            row = {"number": group.number, "seed": record.seed, "status": record.status,
                   "replicate": record is not group.trial, "method": record.method}
            row.update({f"param:{k}": plain(v) for k, v in group.params.items()})
            row.update({f"metric:{m}": num(record.metrics.get(m)) for m in data.metric_names})
            rows.append(row)
    return pd.DataFrame(rows)


def arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns that mix value types become text (Parquet needs one type a column)."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(v) for v in frame[column] if not missing(v)}
        if len(kinds) > 1:
            frame[column] = [None if missing(v) else str(v) for v in frame[column]]
    return frame
