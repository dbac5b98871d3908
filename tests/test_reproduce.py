"""Every recorded number comes back from what a trial saved; a dead or missing adapter never
passes as a result; a sweep folder copied elsewhere still re-reports, re-scores and merges.

One small end-to-end sweep (LoRA, QLoRA, full, DPO, PPO on the embedded model, a few steps
each) is shared by every test here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.records import read_record
from harness.sweep.results import load_sweep
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

NAME = "reproduce"
METHODS = ["lora", "qlora", "full", "dpo", "ppo"]
ARGS = [
    "sweep=method_compare", f"sweep.name={NAME}", f"sweep.n_trials={len(METHODS)}",
    f"sweep.params.method.choices=[{','.join(METHODS)}]",
    "sweep.enqueue=[" + ",".join(f"{{method:{m}}}" for m in METHODS) + "]",
    "sweep.objectives=[{metric:perplexity,direction:minimize}]",
    # a few steps per stage: the point is the bookkeeping, not the quality
    "+sweep.params.steps={type:categorical,choices:[4],key:method.train.max_steps,"
    "when:{method:[lora,qlora,full,dpo]}}",
    "+sweep.params.sft_steps={type:categorical,choices:[4],key:method.sft.train.max_steps,"
    "when:{method:[dpo,ppo]}}",
    "+sweep.params.rw_steps={type:categorical,choices:[4],key:method.reward.train.max_steps,"
    "when:{method:ppo}}",
    "+sweep.params.episodes={type:categorical,choices:[16],key:method.ppo.total_episodes,"
    "when:{method:ppo}}",
    "eval.rouge.max_samples=2", "eval.rouge.max_new_tokens=8", "eval.perplexity.max_texts=8",
    "eval.lm_eval.enabled=true", "eval.lm_eval.tasks=[embedded_facts_mc]", "eval.lm_eval.limit=4",
    "eval.mt_bench.enabled=false", "data.preference.metrics.enabled=false", "launcher.parallel=2",
]
QUANT = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reproduce")
    result = run_cli(ARGS, cwd=root, timeout=1800)   # ~2 min on an idle 2-core machine
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweeps" / NAME


def _records(sweep: Path) -> dict[str, object]:
    records = [read_record(t) for t in sorted((sweep / "trials").iterdir())]
    return {r.method: r for r in records}


@pytest.fixture(scope="module")
def independent(sweep, tmp_path_factory) -> dict[str, tuple[float, float]]:
    """{method: (recorded perplexity, perplexity of the saved model reloaded with plain
    transformers/peft in a fresh process)}."""
    cfg = OmegaConf.to_container(OmegaConf.load(sweep / "sweep.yaml"), resolve=True)
    ppl = cfg["eval"]["perplexity"]
    rows = [json.loads(line) for line in Path(cfg["data"]["perplexity"]["path"]).read_text()
            .splitlines() if line.strip()]
    field = cfg["data"]["perplexity"].get("text_field", "text")
    texts = [str(r[field]) for r in rows if str(r.get(field, "")).strip()][: ppl["max_texts"]]
    records = _records(sweep)
    models = [{"dir": str(sweep / "trials" / f"{records[m].number:04d}" / "model"),
               "quant": QUANT if m == "qlora" else None} for m in METHODS]
    job = tmp_path_factory.mktemp("job") / "job.json"
    job.write_text(json.dumps({"texts": texts, "max_length": ppl["max_length"],
                               "stride": ppl["stride"], "models": models}))
    out = subprocess.run([sys.executable, str(REPO / "tests" / "independent_reload.py"),
                          str(job)], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    values = json.loads(out.stdout.strip().splitlines()[-1])
    return {m: (records[m].metrics["perplexity"], v) for m, v in zip(METHODS, values,
                                                                      strict=True)}


@pytest.mark.parametrize("method", METHODS)
def test_recorded_perplexity_is_the_saved_models(independent, method) -> None:
    recorded, reloaded = independent[method]
    assert abs(recorded - reloaded) / reloaded <= 1e-6, (method, recorded, reloaded)


def test_record_says_what_was_evaluated_and_that_it_trained(sweep) -> None:
    records = _records(sweep)
    assert all(r.status == "COMPLETE" for r in records.values())
    for record in records.values():
        assert record.artifact["evaluated"] == "model/ reloaded from disk"
        assert record.adapter_effect["dead"] is False
        assert record.adapter_effect["max_logit_diff"] > 0
    qlora = records["qlora"].artifact
    assert qlora["lora_dtype_trained"] == ["bfloat16"]   # trl's cast, said in the record
    assert "bfloat16" in qlora["note"] and qlora["compute_dtype"] == "float32"
    assert records["lora"].adapter_effect["nonzero_lora_layers"] \
        == records["lora"].adapter_effect["lora_layers"] > 0


def _zero_adapter(model_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = model_dir / "adapter_model.safetensors"
    tensors = {k: v.zero_() if "lora_B" in k else v for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))


def test_dead_and_missing_adapters_are_flagged_and_reeval_goes_on(sweep, tmp_path) -> None:
    copy = tmp_path / "sweeps" / NAME
    shutil.copytree(sweep, copy)
    records = _records(copy)
    trials = {m: copy / "trials" / f"{records[m].number:04d}" for m in METHODS}
    _zero_adapter(trials["lora"] / "model")
    _zero_adapter(trials["qlora"] / "model")
    (trials["dpo"] / "model" / "adapter_model.safetensors").unlink()
    out = subprocess.run([sys.executable, "-m", "harness.cascade", "reeval", str(copy)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "HARNESS_CACHE": str(REPO / ".cache" / "harness")})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    missing = f"trial {records['dpo'].number:04d}: adapter_model.safetensors missing in"
    assert sum(line.startswith(missing) for line in lines) == 1
    assert any(line.startswith(str(trials["ppo"])) for line in lines)   # went on past it
    after = _records(copy)
    for method in ("lora", "qlora", "dpo"):
        assert after[method].status == "FAILED"
        assert after[method].error.type == "SavedModelError"
    for method in ("lora", "qlora"):
        assert after[method].adapter_effect["dead"] is True
        assert "dead adapter" in after[method].error.message
    data = load_sweep(copy)
    assert {r.method for r in data.ranked} == {"full", "ppo"}
    assert any("dead adapter" in n for n in data.notes)
    report = run_cli(["action=report", "sweep=method_compare", f"sweep.name={NAME}"],
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "reports" / f"{NAME}.html").read_text()
    summary = html[html.index('id="summary"'):][:20_000]
    assert "dead adapter" in summary


def test_moved_sweep_reports_reevaluates_and_merges(sweep, tmp_path) -> None:
    copy = tmp_path / "elsewhere" / "sweeps" / NAME
    shutil.copytree(sweep, copy)
    hidden = sweep.with_name(NAME + "-away")
    sweep.rename(hidden)   # nothing may read the original folder
    try:
        cwd = tmp_path / "elsewhere"
        report = run_cli(["action=report", f"sweep.name={NAME}", "sweep=method_compare"],
                         cwd=cwd)
        assert report.returncode == 0, report.stderr[-3000:]
        assert len(load_sweep(copy).ranked) == len(METHODS)
        out = subprocess.run([sys.executable, "-m", "harness.cascade", "reeval", str(copy),
                              "--stages", "lm_eval"], cwd=cwd, capture_output=True, text=True,
                             timeout=1200, env={**os.environ,
                                               "HARNESS_CACHE": str(REPO / ".cache" / "harness")})
        assert out.returncode == 0, out.stderr[-3000:]
        assert sum(line.startswith(str(copy)) for line in out.stdout.splitlines()) \
            == len(METHODS) + 1   # the base model and every trial
        merged = run_cli(["action=merge", f"sweep.name={NAME}", "sweep=method_compare",
                          f"merge.trial={_records(copy)['lora'].number}"], cwd=cwd)
        assert merged.returncode == 0, merged.stderr[-3000:]
        assert (copy / "merged").is_dir()
        for record in _records(copy).values():
            assert record.status == "COMPLETE"
            assert record.output_dir.startswith(str(copy))
    finally:
        hidden.rename(sweep)
