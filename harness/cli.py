"""Command line: `python -m harness [hydra overrides...]`.

    python -m harness                              the default sweep on the embedded model
    python -m harness sweep=qlora_rank             another sweep from conf/sweep/
    python -m harness sweep=lora_lr sweep.n_trials=20 method.lora.rank=32
    python -m harness action=report sweep=qlora_rank   rebuild the report, no training
    python -m harness action=replicate sweep=default replicate.top_k=2 replicate.seeds=[1,2,3]
                                                   rerun the top configurations with other seeds
    python -m harness action=compare compare.sweeps=[qlora_rank,lora_lr]
                                                   one report joining several sweeps
    python -m harness action=merge sweep=default   merge the best adapter into its base model
    python -m harness --cfg [overrides...]         print the composed config and exit

Bad input exits with status 2 and one line naming the field, file or line; nothing is
written before the input is known to be good.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from harness.config import ConfigError, compose_config, resolve_paths, to_yaml

USAGE = __doc__
ACTIONS = ("sweep", "report", "replicate", "compare", "merge")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    logging.basicConfig(level=os.environ.get("HARNESS_LOG", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from harness.data import DataError

    try:
        if "--cfg" in args:
            print(to_yaml(compose_config([a for a in args if a != "--cfg"])))
            return 0
        return _run(args)
    except (ConfigError, DataError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2


def _run(overrides: list[str]) -> int:
    from harness import sweep as sweeps

    action = compose_config(overrides).get("action", "sweep")
    if action not in ACTIONS:
        raise ConfigError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if action == "compare":
        return _compare(resolve_paths(compose_config(overrides)))
    prepared = sweeps.prepare(overrides)
    if action == "report":
        return _report(prepared)
    if action == "merge":
        return _merge(prepared)
    sweeps.check_inputs(prepared)
    if action == "replicate":
        return _replicate(prepared)
    study = sweeps.run(prepared)
    _print_summary(prepared, study)
    if prepared.cfg.replicate.get("after_sweep"):
        return _replicate(prepared)
    return _report(prepared)


def _ci(cfg):
    """The report's interval settings from `replicate.ci`, as a ConfigError when bad."""
    from harness.uncertainty import CISettings

    try:
        return CISettings.from_config(cfg.replicate.get("ci"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _report(prepared) -> int:
    from harness.report import write_exports, write_report

    if not (prepared.dir / "sweep.yaml").exists():
        raise ConfigError(f"sweep.name: no sweep at {prepared.dir} to report on")
    reports = Path(prepared.cfg.paths.reports)
    path = write_report(prepared.dir, reports / f"{prepared.name}.html", _ci(prepared.cfg))
    exports = write_exports(prepared.dir, reports / prepared.name)
    print(f"report: {path}")
    print("exports: " + ", ".join(str(p) for p in exports.values()))
    return 0


def _replicate(prepared) -> int:
    """Rerun the chosen configurations with the other seeds, then rebuild the report."""
    from harness.replicate import run_replicates

    _ci(prepared.cfg)  # bad interval settings fail before any run
    records = run_replicates(prepared)
    failed = [r for r in records if r.status != "COMPLETE"]
    print(f"replicates: {len(records) - len(failed)} complete, {len(failed)} not")
    return _report(prepared)


def _compare(cfg) -> int:
    """Write the report joining `compare.sweeps`."""
    from harness.compare import compare_file_name, write_compare

    names = [str(n) for n in cfg.compare.get("sweeps") or []]
    if len(names) < 2:
        raise ConfigError(f"compare.sweeps needs at least two sweep names, got {names}")
    dirs = [Path(cfg.paths.sweeps) / n for n in names]
    missing = [str(d) for d in dirs if not (d / "sweep.yaml").is_file()]
    if missing:
        raise ConfigError(f"compare.sweeps: no sweep at {', '.join(missing)}")
    out = cfg.compare.get("out") or Path(cfg.paths.reports) / compare_file_name(names)
    path = write_compare(dirs, Path(str(out)).expanduser().resolve(), _ci(cfg))
    print(f"compare report: {path}")
    return 0


def _merge(prepared) -> int:
    """Merge the best (or `merge.trial`) adapter into its base model and save it."""
    from harness.merge import merge_best

    if not (prepared.dir / "sweep.yaml").exists():
        raise ConfigError(f"sweep.name: no sweep at {prepared.dir} to merge from")
    print(f"merged model: {merge_best(prepared.dir, prepared.cfg.merge)}")
    return 0


def _print_summary(prepared, study) -> None:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {s.name: states.count(s) for s in TrialState if states.count(s)}
    print(f"sweep {prepared.name}: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items()))
    if TrialState.COMPLETE in states:
        best = study.best_trials[0]
        print(f"best trial #{best.number}: {best.params} -> " + ", ".join(
            f"{o.metric}={v:.4g}" for o, v in zip(prepared.cfg.sweep.objectives, best.values,
                                                  strict=True)))
