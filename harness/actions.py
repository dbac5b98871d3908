"""What `python -m harness action=<name>` does, one function per action (see harness.cli).

Each action takes the command line's Hydra overrides and returns the exit code. Every input is
validated (harness.sweep.driver.prepare) before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from optuna.trial import TrialState

from harness.config.compose import compose_config, resolve_paths
from harness.errors import ConfigError
from harness.layout import SWEEP_FILE
from harness.records import COMPLETE
from harness.report.compare import compare_file_name, write_compare
from harness.report.exports import write_exports
from harness.report.page import write_report
from harness.stats import CISettings
from harness.sweep import driver
from harness.sweep.merge import merge_best
from harness.sweep.replicate import run_replicates


def sweep(overrides: list[str]) -> int:
    """Run (or resume) the sweep, then replicate (`replicate.after_sweep`) and report."""
    prepared = driver.prepare(overrides)
    driver.check_inputs(prepared)
    study = driver.run(prepared)
    _print_summary(prepared, study)
    if prepared.cfg.replicate.get("after_sweep"):
        return _replicate(prepared)
    return _report(prepared)


def report(overrides: list[str]) -> int:
    """Rebuild reports/<sweep>.html and its exports from the sweep folder, no training."""
    return _report(driver.prepare(overrides))


def replicate(overrides: list[str]) -> int:
    """Rerun the chosen configurations with other seeds, then rebuild the report."""
    prepared = driver.prepare(overrides)
    driver.check_inputs(prepared)
    return _replicate(prepared)


def merge(overrides: list[str]) -> int:
    """Merge the best (or `merge.trial`) adapter into its base model and save it."""
    prepared = driver.prepare(overrides)
    if not (prepared.dir / SWEEP_FILE).exists():
        raise ConfigError(f"sweep.name: no sweep at {prepared.dir} to merge from")
    print(f"merged model: {merge_best(prepared.dir, prepared.cfg.merge)}")
    return 0


def compare(overrides: list[str]) -> int:
    """Write the report joining `compare.sweeps`."""
    cfg = resolve_paths(compose_config(overrides))
    names = [str(n) for n in cfg.compare.get("sweeps") or []]
    if len(names) < 2:
        raise ConfigError(f"compare.sweeps needs at least two sweep names, got {names}")
    dirs = [Path(cfg.paths.sweeps) / n for n in names]
    missing = [str(d) for d in dirs if not (d / SWEEP_FILE).is_file()]
    if missing:
        raise ConfigError(f"compare.sweeps: no sweep at {', '.join(missing)}")
    out = cfg.compare.get("out") or Path(cfg.paths.reports) / compare_file_name(names)
    path = write_compare(dirs, Path(str(out)).expanduser().resolve(), _ci(cfg))
    print(f"compare report: {path}")
    return 0


def _ci(cfg: DictConfig) -> CISettings:
    """The report's interval settings from `replicate.ci`, as a ConfigError when bad."""
    try:
        return CISettings.from_config(cfg.replicate.get("ci"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _report(prepared: driver.Sweep) -> int:
    if not (prepared.dir / SWEEP_FILE).exists():
        raise ConfigError(f"sweep.name: no sweep at {prepared.dir} to report on")
    reports = Path(prepared.cfg.paths.reports)
    path = write_report(prepared.dir, reports / f"{prepared.name}.html", _ci(prepared.cfg),
                        prepared.cfg.get("report"))
    exports = write_exports(prepared.dir, reports / prepared.name)
    print(f"report: {path}")
    print("exports: " + ", ".join(str(p) for p in exports.values()))
    return 0


def _replicate(prepared: driver.Sweep) -> int:
    _ci(prepared.cfg)  # bad interval settings fail before any run
    records = run_replicates(prepared)
    failed = [r for r in records if r.status != COMPLETE]
    print(f"replicates: {len(records) - len(failed)} complete, {len(failed)} not")
    return _report(prepared)


def _print_summary(prepared: driver.Sweep, study) -> None:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {s.name: states.count(s) for s in TrialState if states.count(s)}
    print(f"sweep {prepared.name}: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items()))
    if TrialState.COMPLETE in states:
        best = study.best_trials[0]
        print(f"best trial #{best.number}: {best.params} -> " + ", ".join(
            f"{o.metric}={v:.4g}" for o, v in zip(prepared.cfg.sweep.objectives, best.values,
                                                  strict=True)))
