"""Command line: `python -m harness [hydra overrides...]`.

    python -m harness                              the default sweep on the embedded model
    python -m harness sweep=qlora_rank             another sweep from conf/sweep/
    python -m harness sweep=lora_lr sweep.n_trials=20 method.lora.rank=32
    python -m harness action=report sweep=qlora_rank   rebuild the report, no training
    python -m harness --cfg [overrides...]         print the composed config and exit

Bad input exits with status 2 and one line naming the field, file or line; nothing is
written before the input is known to be good.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from harness.config import ConfigError, compose_config, to_yaml

USAGE = __doc__


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

    prepared = sweeps.prepare(overrides)
    action = prepared.cfg.get("action", "sweep")
    if action == "report":
        return _report(prepared)
    if action != "sweep":
        raise ConfigError(f"action must be sweep or report, got {action!r}")
    sweeps.check_inputs(prepared)
    study = sweeps.run(prepared)
    _print_summary(prepared, study)
    return _report(prepared)


def _report(prepared) -> int:
    from harness.report import write_exports, write_report

    if not (prepared.dir / "sweep.yaml").exists():
        raise ConfigError(f"sweep.name: no sweep at {prepared.dir} to report on")
    reports = Path(prepared.cfg.paths.reports)
    path = write_report(prepared.dir, reports / f"{prepared.name}.html")
    exports = write_exports(prepared.dir, reports / prepared.name)
    print(f"report: {path}")
    print("exports: " + ", ".join(str(p) for p in exports.values()))
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
