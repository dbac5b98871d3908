"""The sweep driver: an Optuna study driven with ask/tell, one launcher job per trial.

    prepare()  validate everything (configs, search space, data), before any job runs
    run()      evaluate the base model once, then ask -> submit -> poll -> tell until the study
               has `sweep.n_trials` finished trials (or the next would overrun
               `sweep.max_train_steps`, harness.sweep.budget); re-running resumes the study

Folders: sweeps/<name>/sweep.yaml (driver config), study.db (or journal), baseline/<hash>/,
trials/<number>/ (config.yaml, trial.log, result.json, model/).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from tqdm import tqdm

from harness import layout
from harness.config.battery import trial_wants_preference
from harness.config.compose import compose_config, resolve_paths, to_yaml
from harness.config.validate import Problems, validate_sweep, validate_trial_config
from harness.data.card import DataCard, write_card
from harness.data.check import check_data, check_model_files
from harness.data.early import check_user_data
from harness.data.prepare import prepare_data
from harness.embedded.build import build_embedded
from harness.embedded.evals import ensure_for_config
from harness.errors import ConfigError
from harness.eval.judge_server import ServedModel
from harness.launch.base import Job, Launcher, make_launcher, trial_threads, wait_for_jobs
from harness.layout import LOG_FILE, SWEEP_FILE, baseline_digest, baseline_dir
from harness.progress import running_text
from harness.records import (
    COMPLETE,
    FAILED,
    PRUNED,
    TrialError,
    TrialRecord,
    TrialSpec,
    deltas,
    git_commit,
    read_record,
    read_trial_config,
    write_record,
    write_trial_config,
)
from harness.registry import LAUNCH_MODES
from harness.study import make_pruner, make_storage
from harness.sweep.budget import StepBudget
from harness.sweep.cascade import top_k_pass
from harness.sweep.judge_service import judge_service
from harness.sweep.preflight import ATTR as PREFLIGHT_ATTR
from harness.sweep.preflight import Preflight, check_trial, refused_record
from harness.sweep.results_records import STALE_ATTR
from harness.sweep.samplers import make_sampler
from harness.sweep.space import (
    Param,
    drop_fixed,
    grid,
    grid_size,
    is_active,
    parse_space,
    study_params,
    suggest,
    to_overrides,
)

log = logging.getLogger(__name__)



@dataclass
class Sweep:
    """A validated sweep, ready to run."""

    cfg: DictConfig
    cli_overrides: list[str]
    space: list[Param]
    fixed: list[str] = field(default_factory=list)
    data_card: DataCard | None = None   # written into the sweep folder by run(), not before
    scores_preferences: bool = False   # some trial computes preference metrics (prepare)

    @property
    def name(self) -> str:
        return str(self.cfg.sweep.name)

    @property
    def dir(self) -> Path:
        return layout.sweep_dir(self.cfg)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [(str(o.metric), str(o.direction)) for o in self.cfg.sweep.objectives]


def prepare(cli_overrides: list[str]) -> Sweep:
    """Compose and validate the sweep and every kind of trial it can make; raise one
    ConfigError naming every problem found."""
    cfg = resolve_paths(compose_config(cli_overrides))
    problems = Problems()
    try:
        space, fixed = drop_fixed(parse_space(cfg.sweep.params), cli_overrides)
    except ConfigError as exc:
        for line in exc.problems:
            problems.add(line)
        space, fixed = [], []
    sweep = Sweep(cfg=cfg, cli_overrides=list(cli_overrides), space=space, fixed=fixed)
    validate_sweep(cfg, len(sweep.objectives), problems)
    if cfg.sweep.sampler.get("name") == "grid":
        problems.check(grid, space)   # a grid needs finite, unconditional parameters
    for values in probe_points(space):
        try:
            probe = trial_config(sweep, values)
            validate_trial_config(probe, problems)
            check_trial(probe, problems.add)   # estimator settings; a limit needs an estimate
            sweep.scores_preferences |= trial_wants_preference(probe)
        except ConfigError as exc:   # a suggested value Hydra cannot even compose
            for line in exc.problems:
                problems.add(line)
    problems.raise_if_any()
    return sweep


def probe_points(space: list[Param]) -> list[dict]:
    """Parameter values that exercise every choice and both ends of every range."""
    def extremes(param: Param) -> list:
        return list(param.choices) if param.type == "categorical" else [param.low, param.high]

    base: dict = {}
    for param in space:
        if is_active(param, base):
            base[param.name] = extremes(param)[0]
    points = [base]
    for param in space:
        for value in extremes(param):
            point = {**base, param.name: value}
            points.append({p.name: point[p.name] for p in space
                           if p.name in point and is_active(p, point)})
    return points


def trial_config(sweep: Sweep, values: dict) -> DictConfig:
    """The trial's config: the command line plus the suggested values as Hydra overrides."""
    overrides = sweep.cli_overrides + to_overrides(sweep.space, values)
    return resolve_paths(compose_config(overrides))


def check_inputs(sweep: Sweep) -> None:
    """Open every local data file (fails fast), building the embedded model/data if used,
    then prepare the training data (harness.data.prepare) that the trials will read."""
    cfg = sweep.cfg
    check_user_data(cfg)    # the user's own files first: before the embedded build
    embedded = "embedded" in (cfg.model.source, cfg.data.source)
    if cfg.data.source != "embedded":
        check_data(cfg.data)
    if embedded:
        build_embedded(cfg.paths.embedded)
    if cfg.data.source == "embedded":
        check_data(cfg.data)
    ensure_for_config(cfg)  # the embedded lm-eval tasks, MT-Bench questions and judge
    if cfg.model.source in ("embedded", "local") and not Path(str(cfg.model.path)).is_dir():
        raise ConfigError(f"model.path: no model directory at {cfg.model.path}")
    check_model_files(cfg.model)   # config.json present, tokenizer loads
    prepare_sweep_data(sweep)


PREFERENCE_KINDS = ("dpo", "ppo", "grpo")


def prepare_sweep_data(sweep: Sweep) -> None:
    """Prepare the training sets once per content hash; the trials read the prepared rows
    (the sweep's overrides point data.train / data.preference at them)."""
    methods = {str(c) for p in sweep.space if p.key == "method" for c in p.choices}
    kinds = {str(sweep.cfg.method.kind)} | {str(compose_config(
        [*sweep.cli_overrides, f"method={m}"]).method.kind) for m in methods}
    prepared = prepare_data(sweep.cfg, None,
                            preference=bool(kinds & set(PREFERENCE_KINDS)))
    sweep.data_card = prepared.card
    sweep.cli_overrides = [*sweep.cli_overrides, *prepared.overrides]
    sweep.cfg = resolve_paths(compose_config(sweep.cli_overrides))


def open_study(sweep: Sweep) -> optuna.Study:
    """Create the study, or load it when the same sweep ran before (resume)."""
    cfg = sweep.cfg
    study = optuna.create_study(
        study_name=sweep.name,
        storage=make_storage(cfg.storage),
        sampler=make_sampler(cfg.sweep.sampler, sweep.space, len(sweep.objectives)),
        pruner=make_pruner(cfg.sweep.pruner),
        directions=[d for _, d in sweep.objectives],
        load_if_exists=True,
    )
    if not study.user_attrs.get("enqueued"):
        for params in cfg.sweep.get("enqueue") or []:
            study.enqueue_trial(study_params(sweep.space, OmegaConf.to_container(params)),
                                skip_if_exists=True)
        study.set_user_attr("enqueued", True)
        study.set_metric_names([m for m, _ in sweep.objectives])
    resumed = len(study.get_trials(deepcopy=False))
    seed = cfg.sweep.sampler.get("seed")
    if resumed and seed is not None:   # the first run's seed would repeat its first asks
        sampler_cfg = OmegaConf.merge(cfg.sweep.sampler, {"seed": int(seed) + resumed})
        study.sampler = make_sampler(sampler_cfg, sweep.space, len(sweep.objectives))
    return study


class Driver:
    """Runs the ask/submit/poll/tell loop for one sweep."""

    def __init__(self, sweep: Sweep, study: optuna.Study, launcher: Launcher,
                 judge: ServedModel | None = None):
        self.sweep, self.study, self.launcher = sweep, study, launcher
        self.running: dict[int, Job] = {}
        self.best = ""   # the bar's best-trial text, refreshed when a trial ends
        self.baseline: TrialRecord | None = None
        self.base_dir = baseline_dir(sweep.dir, baseline_digest(sweep.cfg))
        self.shared = shared_spec(sweep, judge)
        self.preflight = Preflight(sweep.cfg)   # refuses trials predicted not to fit the GPU
        self.budget = StepBudget(sweep.cfg, sweep.dir)   # sweep.max_train_steps

    def spec(self, **fields) -> TrialSpec:
        """A trial's spec: what every trial of this sweep shares, plus `fields`."""
        return replace(self.shared, baseline_dir=str(self.base_dir), **fields)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Evaluate the base model, then run the trials as `launcher.mode` says
        (registry.LAUNCH_MODES: run_jobs below, or harness.sweep.pool's workers)."""
        self.baseline = self.evaluate_base()
        LAUNCH_MODES.load(str(self.sweep.cfg.launcher.get("mode", "job_per_trial")))(self)

    def run_jobs(self) -> None:
        """launcher.mode=job_per_trial: ask -> submit -> poll -> tell, one job per trial."""
        self.recover()
        target = self.target_trials()
        deadline = _deadline(self.sweep.cfg.sweep.get("timeout_min"))
        with tqdm(total=target, initial=self.finished_count(), desc=f"sweep {self.sweep.name}",
                  unit="trial") as bar:
            while True:
                bar.update(self.start_trials(self._slots(target, deadline)))
                if not self.running:
                    if self._slots(target, deadline):   # the pre-flight refused every ask
                        continue
                    break
                for number in self.wait_any(bar):
                    self.finish(number)
                    bar.update(1)
                    self.best = self._best_text()
                    bar.set_postfix_str(self.best)

    def _slots(self, target: int, deadline: float | None) -> int:
        """How many new trials may start now (parallel limit, target count, timeout, steps)."""
        if deadline is not None and time.time() > deadline:
            return 0
        free = self.launcher.parallel - len(self.running)
        count = max(0, min(free, target - self.finished_count() - len(self.running)))
        return self.budget.cap(count, [job.trial_dir for job in self.running.values()])

    def target_trials(self) -> int:
        target = int(self.sweep.cfg.sweep.n_trials)
        if self.sweep.cfg.sweep.sampler.get("name") == "grid":
            size = grid_size(self.sweep.space)
            if target > size:
                log.warning("sweep.n_trials=%d > grid size %d: running %d", target, size, size)
            return min(target, size)
        return target

    def finished_count(self) -> int:
        count = 0
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                count += 1
            elif trial.state == TrialState.FAIL and not trial.user_attrs.get(STALE_ATTR):
                count += 1
        return count

    # -- one trial --------------------------------------------------------------------------
    def start_trials(self, count: int) -> int:
        """Ask Optuna for `count` trials, write their folders, submit them together (a SLURM
        launcher sends them as one job array); returns how many the pre-flight refused."""
        if count <= 0:
            return 0
        asked = [self.prepare_trial() for _ in range(count)]
        launched = [item for item in asked if item is not None]
        jobs = self.launcher.submit_many([trial_dir for _, trial_dir in launched])
        for (number, _), job in zip(launched, jobs, strict=True):
            self.running[number] = job
        return len(asked) - len(launched)

    def prepare_trial(self) -> tuple[int, Path] | None:
        """Ask one trial and write its folder and fully resolved config (None: the pre-flight
        refused it, PRUNED with the predicted figure)."""
        trial = self.study.ask()
        values = suggest(trial, self.sweep.space)
        trial_dir = layout.trial_dir(self.sweep.dir, trial.number)
        trial_dir.mkdir(parents=True, exist_ok=False)
        trial.set_user_attr("dir", str(trial_dir))
        cfg = trial_config(self.sweep, values)
        spec = self.spec(number=trial.number, trial_id=trial._trial_id,
                         study_name=self.sweep.name, params=values, seed=int(cfg.seed),
                         dir=str(trial_dir), prediction=self.preflight.predict(cfg))
        write_trial_config(trial_dir, cfg, spec)
        log.info("trial %d: %s", trial.number, values)
        reason = self.preflight.refusal(spec.prediction)
        if reason:
            trial.set_user_attr(PREFLIGHT_ATTR, reason)
            self.tell(trial.number, refused_record(cfg, spec, reason), trial_dir)
            return None
        return trial.number, trial_dir

    def wait_any(self, bar: tqdm | None = None) -> list[int]:
        """Block until at least one running trial ends; return their numbers. `bar` shows
        meanwhile each running trial's stage and step (bar_text)."""
        poll = float(self.sweep.cfg.launcher.get("poll_seconds", 1.0))
        while True:
            ended = [n for n, job in self.running.items() if job.done()]
            if ended:
                return ended
            if bar is not None:
                bar.set_postfix_str(self.bar_text())
            wait_for_jobs(self.launcher, poll)   # local warm trials: wakes when one ends

    def bar_text(self) -> str:
        """The best trial so far, then each running trial's stage and step from its
        progress.json (harness.progress: `#3 train sft 120/400`; local and SLURM alike)."""
        running = running_text({n: job.trial_dir for n, job in self.running.items()})
        return " | ".join(text for text in (self.best, running) if text)

    def finish(self, number: int) -> None:
        """Read the ended trial's record (or write one for a job that died) and tell Optuna."""
        job = self.running.pop(number)
        record = read_record(job.trial_dir) or self._lost_record(number, job)
        record.job_seconds = time.time() - job.started
        self.tell(number, record, job.trial_dir)

    def _lost_record(self, number: int, job: Job) -> TrialRecord:
        cfg, spec = read_trial_config(job.trial_dir)
        log_path = str(job.trial_dir / LOG_FILE)
        return TrialRecord(number=number, status=FAILED, method=str(cfg.method.name),
                           params=spec.params, seed=spec.seed, log_path=log_path,
                           job=job.info() if hasattr(job, "info") else {},
                           error=TrialError("JobLost", job.failure_reason(), log_path))

    def tell(self, number: int, record: TrialRecord, trial_dir: Path) -> None:
        if record.status == COMPLETE:
            record.delta_vs_base = deltas(record.metrics, self.baseline)
            missing = [m for m, _ in self.sweep.objectives if m not in record.metrics]
            if missing:
                record.status = FAILED
                record.error = TrialError("MissingMetric", f"objective metric(s) {missing} "
                                          "not in the trial's metrics", record.log_path)
        write_record(record, trial_dir)
        if record.error is not None:
            self.set_trial_attr(number, "error", f"{record.error.type}: {record.error.message}")
        if record.status == COMPLETE:
            values = [float(record.metrics[m]) for m, _ in self.sweep.objectives]
            self.study.tell(number, values)
        else:
            state = TrialState.PRUNED if record.status == PRUNED else TrialState.FAIL
            self.study.tell(number, state=state)
        log.info("trial %d %s", number, record.status if record.status != FAILED
                 else f"FAILED: {record.error.type}: {record.error.message}")

    def set_trial_attr(self, number: int, key: str, value) -> None:
        """A user attribute on a trial that is not the one in hand (Optuna's storage API)."""
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number)
        self.study._storage.set_trial_user_attr(trial_id, key, value)

    # -- resume -----------------------------------------------------------------------------
    def recover(self) -> None:
        """Handle trials a killed driver left RUNNING: tell finished ones, re-attach live
        ones, and mark dead ones FAILED and ask for their parameters again."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_dir = Path(trial.user_attrs.get("dir", ""))
            record = read_record(trial_dir) if trial.user_attrs.get("dir") else None
            if record is not None:
                self.tell(trial.number, record, trial_dir)
                continue
            job = self.launcher.reattach(trial_dir) if trial.user_attrs.get("dir") else None
            if job is not None:
                log.info("trial %d still running: re-attached", trial.number)
                self.running[trial.number] = job
                continue
            log.warning("trial %d was left running by a dead driver: retrying its parameters",
                        trial.number)
            unstarted = layout.trial_dir(self.sweep.dir, trial.number)
            if layout.never_started(unstarted):   # no job ran in it: nothing to keep
                shutil.rmtree(unstarted)
            self.set_trial_attr(trial.number, STALE_ATTR, True)
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params)

    # -- base model -------------------------------------------------------------------------
    def evaluate_base(self) -> TrialRecord:
        """Evaluate the base model once per sweep (cached by model, data and eval config)."""
        cfg, base_dir = self.sweep.cfg, self.base_dir
        record = read_record(base_dir)
        if record is not None and record.status == COMPLETE:
            return record
        write_trial_config(base_dir, cfg, self.spec(  # + the sweep's scorer, before any trial
            number=-1, baseline=True, seed=int(cfg.seed), dir=str(base_dir),
            build_scorer=self.sweep.scores_preferences))
        print(f"evaluating the base model once for this sweep ({base_dir})", flush=True)
        job = self.launcher.submit(base_dir)
        while not job.done():
            wait_for_jobs(self.launcher, float(cfg.launcher.get("poll_seconds", 1.0)))
        record = read_record(base_dir)
        if record is None or record.status != COMPLETE:
            reason = record.error.message if record and record.error else job.failure_reason()
            raise RuntimeError(f"base model evaluation failed: {reason} "
                               f"(log: {base_dir / LOG_FILE})")
        return record

    def _best_text(self) -> str:
        try:
            best = self.study.best_trials[0]
        except (ValueError, IndexError):
            return ""
        return f"best #{best.number}: " + ", ".join(
            f"{m}={v:.4g}" for (m, _), v in zip(self.sweep.objectives, best.values, strict=True))


def _deadline(timeout_min) -> float | None:
    return None if timeout_min in (None, 0) else time.time() + float(timeout_min) * 60


def shared_spec(sweep: Sweep, judge: ServedModel | None = None) -> TrialSpec:
    """The spec fields every trial (and replicate) of a sweep shares."""
    return TrialSpec(study_name=sweep.name, threads=trial_threads(sweep.cfg.launcher),
                     git_commit=git_commit(), stages_dir=str(layout.stages_dir(sweep.dir)),
                     judge_url=judge.base_url if judge else None,
                     judge_model=judge.model if judge else None)


def run(sweep: Sweep) -> optuna.Study:
    """Run (or resume) the sweep to completion; returns the study."""
    launcher = make_launcher(sweep.cfg)   # refuses an impossible request before any write
    sweep.dir.mkdir(parents=True, exist_ok=True)
    (sweep.dir / SWEEP_FILE).write_text(to_yaml(sweep.cfg))
    if sweep.data_card is not None:
        write_card(sweep.data_card, layout.data_dir(sweep.dir))
    study = open_study(sweep)
    try:
        with judge_service(sweep.cfg, sweep.dir) as judge:  # one judge for all trials
            Driver(sweep, study, launcher, judge).run()
            top_k_pass(sweep.dir, sweep.cfg, judge, launcher)  # eval.cascade: top k, as jobs
    finally:
        launcher.close()
    return study
