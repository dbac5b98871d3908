"""Long work says how far it is: step lines (rate, loss, ETA) in a trial's log, progress.json in
its folder while it runs, and the driver's bar text built from those files (harness.progress).

One tiny trial (the embedded model, a few LoRA steps) runs as the local launcher runs it (the
session fixture `tiny_trial`); tests/test_cascade_jobs.py re-scores the same saved trial.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import progress
from harness.config.compose import compose_config, resolve_paths
from harness.embedded.build import build_embedded
from harness.embedded.evals import ensure_for_config
from harness.launch.local import LocalLauncher
from harness.records import TrialSpec, read_record, write_trial_config
from tests.conftest import REPO

STEPS = 8
TRIAL_ARGS = [
    "model=tiny", "method=lora", f"method.train.max_steps={STEPS}",
    "launcher.progress_interval_s=0",   # every step: the test sees steps move however fast
    "method.train.logging_steps=2", "method.train.eval_steps=0", "launcher.parallel=1",
    "eval.perplexity.max_texts=4", "eval.rouge.max_samples=2", "eval.rouge.max_new_tokens=4",
    "eval.lm_eval.enabled=false", "eval.lm_eval.limit=2", "eval.lm_eval.tasks=[embedded_facts_mc]",
    "eval.mt_bench.enabled=false", "data.preference.metrics.enabled=false",
]


def make_trial(root: Path, number: int = 3) -> tuple[Path, object]:
    """A trial folder as the driver writes it (config.yaml with its `trial:` spec)."""
    cfg = resolve_paths(compose_config([*TRIAL_ARGS, f"paths.sweeps={root / 'sweeps'}",
                                        f"paths.cache={REPO / '.cache' / 'harness'}"]))
    build_embedded(cfg.paths.embedded)   # cached: a no-op once built
    ensure_for_config(cfg)
    trial_dir = root / "sweeps" / str(cfg.sweep.name) / "trials" / f"{number:04d}"
    trial_dir.mkdir(parents=True)
    write_trial_config(trial_dir, cfg, TrialSpec(number=number, seed=0, dir=str(trial_dir),
                                                 threads=2))
    return trial_dir, cfg


def run_tiny_trial(root: Path) -> dict:
    """Run one trial through the local launcher, reading its progress.json every 0.05 s.
    Returns the folder, the config and the distinct snapshots seen while it ran (the
    session fixture `tiny_trial` in conftest.py)."""
    trial_dir, cfg = make_trial(root)
    job = LocalLauncher(cfg).submit(trial_dir)
    seen: list[tuple] = []
    deadline = time.time() + 900
    while True:
        ended = job.done()   # read once more after the end: a forked (warm) trial exits
        snap = progress.read(trial_dir)   # right after writing its last snapshot
        if snap is not None and (not seen or seen[-1] != (snap.stage, snap.part, snap.step)):
            seen.append((snap.stage, snap.part, snap.step))
        if ended:
            break
        assert time.time() < deadline, "trial did not finish in 15 min"
        time.sleep(0.05)
    record = read_record(trial_dir)
    assert record is not None and record.status == "COMPLETE", \
        (trial_dir / "trial.log").read_text()[-3000:]
    # read now: a later re-scoring of this same folder (tests/test_cascade_jobs.py) rewrites it
    return {"dir": trial_dir, "cfg": cfg, "seen": seen, "final": progress.read(trial_dir)}


@pytest.mark.slow
def test_progress_file_moves_through_stages_and_steps(tiny_trial) -> None:
    seen = tiny_trial["seen"]
    stages = [stage for stage, _, _ in seen]
    assert stages[0] == "setup" and stages[-1] == "done", seen
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert order[:3] == ["setup", "train", "save"] and "eval" in order, seen
    steps = [step for stage, part, step in seen if stage == "train" and part == "sft"]
    assert len(set(steps)) >= 2 and steps == sorted(steps) and steps[-1] <= STEPS, seen
    parts = {part for stage, part, _ in seen if stage == "eval"}
    assert parts & {"perplexity", "rouge generations"}, seen
    final = tiny_trial["final"]
    assert (final.stage, final.part) == ("done", "COMPLETE")


@pytest.mark.slow
def test_log_has_step_lines_with_rate_loss_and_eta_and_no_redraws(tiny_trial) -> None:
    text = (tiny_trial["dir"] / "trial.log").read_text()
    line = re.compile(rf"train sft step (\d+)/{STEPS} \(\d+%\) [\d.?]+ step/s elapsed \S+ "
                      rf"ETA \S+, loss [\d.]+")
    steps = [int(m.group(1)) for m in line.finditer(text)]
    assert steps == list(range(2, STEPS + 1, 2)), text[-3000:]   # one per logging step
    assert re.search(r"perplexity \d+/\d+ \(100%\)", text)
    assert re.search(r"rouge generations \d+/\d+ \(100%\)", text)
    assert "\r" not in text   # whole lines only: no bar redraws in a log file


def test_bar_text_renders_each_running_trial_from_its_progress_file(tmp_path) -> None:
    three, four, five = (tmp_path / n for n in ("0003", "0004", "0005"))
    for folder in (three, four, five):
        folder.mkdir()
    progress.ProgressWriter(three).update("train", "", 120, 400, rate=2.1, loss=1.83)
    progress.ProgressWriter(four).update("eval", "rouge", 3, 8)
    assert progress.running_text({3: three}) == "#3 train 120/400"
    assert progress.running_text({5: five, 4: four, 3: three}) \
        == "#3 train 120/400 | #4 eval rouge 3/8 | #5 queued"


def test_writer_is_throttled_but_never_misses_a_change_or_the_last_step(tmp_path) -> None:
    writer = progress.ProgressWriter(tmp_path, min_interval_s=60)
    assert writer.update("train", "sft", 1, 10)
    assert not writer.update("train", "sft", 2, 10)        # within the interval: skipped
    assert progress.read(tmp_path).step == 1
    assert writer.update("train", "sft", 10, 10)           # the last step: written
    assert writer.update("eval", "perplexity", 0, 4)       # a new part: written
    assert progress.read(tmp_path).text() == "eval perplexity 0/4"
    assert [p.name for p in tmp_path.iterdir()] == [progress.PROGRESS_FILE]   # no temp left


def test_log_tqdm_logs_whole_lines_and_updates_the_progress_file(tmp_path, caplog) -> None:
    progress.start(tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="harness.progress"):
            for _ in progress.LogTqdm(range(5), desc="mt_bench answers", unit="question"):
                pass
    finally:
        progress.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.progress"]
    assert lines[0].startswith("mt_bench answers 0/5 (0%)")
    assert lines[-1].startswith("mt_bench answers 5/5 (100%)") and "question/s" in lines[-1]
    assert not any("\r" in line for line in lines)
    assert progress.read(tmp_path).text() == "eval mt_bench answers 5/5"


def test_driver_bar_shows_the_best_and_the_running_trials(tmp_path) -> None:
    from harness.sweep.driver import Driver

    progress.ProgressWriter(tmp_path).update("train", "sft", 120, 400)
    driver = Driver.__new__(Driver)   # the bar text needs only these two fields
    driver.best, driver.running = "best #1: perplexity=3", {3: SimpleNamespace(trial_dir=tmp_path)}
    assert driver.bar_text() == "best #1: perplexity=3 | #3 train sft 120/400"


def test_step_log_names_the_trainer_and_logs_ppo_policy_loss(tmp_path, caplog) -> None:
    from harness.train.progress_log import StepLog

    class PPOConfig:   # the trainer's config class names the part
        pass

    state = SimpleNamespace(global_step=0, max_steps=4, is_world_process_zero=True)
    callback = StepLog()
    progress.start(tmp_path, min_interval_s=0)
    try:
        with caplog.at_level(logging.INFO, logger="harness.train.progress_log"):
            callback.on_train_begin(PPOConfig(), state, None)
            for step in (1, 2):
                state.global_step = step
                callback.on_step_end(PPOConfig(), state, None)
            callback.on_log(PPOConfig(), state, None, logs={"loss/policy_avg": 0.25})
            callback.on_log(PPOConfig(), state, None, logs={"eval_loss": 1.0})   # no line
    finally:
        progress.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.train.progress_log"]
    assert lines[0] == "train ppo: 4 steps"
    assert re.fullmatch(r"train ppo step 2/4 \(50%\) [\d.]+ step/s elapsed \S+ ETA \S+, "
                        r"loss 0\.25", lines[1]) and len(lines) == 2
    snap = progress.read(tmp_path)
    assert snap.text() == "train ppo 2/4" and snap.unit == "step" and snap.rate > 0
