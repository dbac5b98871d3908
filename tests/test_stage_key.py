"""The stage cache is keyed by the content of its input files and the harness code, not only
by the config: one changed row of the SFT file makes the next DPO trial rebuild its SFT stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config.compose import compose_config, resolve_paths
from harness.trial import stages
from harness.trial.stages import sft_stage
from tests.conftest import REPO

CACHE = REPO / ".cache" / "harness"
pytestmark = pytest.mark.slow


@pytest.fixture
def dpo_cfg(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HARNESS_CACHE", str(CACHE))
    rows = [{"messages": [{"role": "user", "content": f"say {w}"},
                          {"role": "assistant", "content": f"{w} {w}"}]}
            for w in ("cat", "dog", "fox", "mat", "red", "blue", "sat", "ran")]
    train = tmp_path / "sft.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = resolve_paths(compose_config([
        "method=dpo", "model=local", f"model.path={tiny_model_dir}",
        f"data.train.path={train}", "data.eval_loss.path=null",
        "method.sft.train.max_steps=1", "method.sft.train.per_device_train_batch_size=4",
        "method.sft.train.logging_steps=1"]))
    return cfg, train


def test_changed_sft_row_rebuilds_the_sft_stage(dpo_cfg, tmp_path) -> None:
    cfg, train = dpo_cfg
    root = tmp_path / "stages"
    first = sft_stage(cfg, root)
    again = sft_stage(cfg, root)
    assert not first.reused and again.reused and again.dir == first.dir
    assert first.key["files"][str(train)] and first.key["code"] and "harness" in first.key
    lines = train.read_text().splitlines()
    lines[3] = lines[3].replace("mat mat", "mat hat")   # one row changed, same config
    train.write_text("\n".join(lines) + "\n")
    changed = sft_stage(cfg, root)
    assert not changed.reused and changed.dir != first.dir
    assert changed.key["files"][str(train)] != first.key["files"][str(train)]
    assert json.loads((Path(changed.dir) / stages.STAGE_FILE).read_text())["key"] \
        == changed.key   # the key is recorded beside the stage (and in the trial's record)


def test_code_change_changes_the_key(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "harness"
    for sub in ("train", "data", "trial"):
        shutil.copytree(REPO / "harness" / sub, fake / sub)
    monkeypatch.setattr(stages, "__file__", str(fake / "trial" / "stages.py"))
    before = stages.code_digest()
    (fake / "train" / "sft.py").write_text((fake / "train" / "sft.py").read_text() + "\n# x\n")
    assert stages.code_digest()["code"] != before["code"]
