"""A driver killed right after making a trial folder leaves it empty: the resumed driver
cleans it, and the report does not list it."""

from __future__ import annotations

import pytest

from harness import layout
from harness.config.compose import to_yaml
from harness.sweep import driver
from harness.sweep.results import load_sweep
from tests.conftest import REPO


class NoLiveJobs:
    """A launcher whose earlier jobs are all gone (the driver that ran them was killed)."""

    parallel = 1

    def reattach(self, trial_dir):
        return None


@pytest.fixture
def killed(tmp_path, monkeypatch):
    """A sweep whose driver died between asking trial 0 and writing anything into its folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
    sweep = driver.prepare(["sweep.name=killed"])
    sweep.dir.mkdir(parents=True)
    (sweep.dir / layout.SWEEP_FILE).write_text(to_yaml(sweep.cfg))
    study = driver.open_study(sweep)
    folder = layout.trial_dir(sweep.dir, study.ask().number)
    folder.mkdir(parents=True)
    return sweep, study, folder


def test_report_does_not_list_an_empty_trial_folder(killed) -> None:
    sweep, _, folder = killed
    assert folder.is_dir()
    assert load_sweep(sweep.dir).records == []


def test_resumed_driver_cleans_it(killed) -> None:
    sweep, study, folder = killed
    driver.Driver(sweep, study, NoLiveJobs()).recover()
    assert not folder.exists()
    first = study.get_trials()[0]
    assert first.state.name == "FAIL" and first.params in [t.params for t in study.get_trials()
                                                          if t.state.name == "WAITING"]
