"""lm-eval on an in-memory model: local tasks with resolved data paths, flat metrics, the
unapplied-adapter guard, merged vs unmerged adapters, and the cost cascade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.eval.cascade as cascade
import harness.eval.lm_eval_runner as lm_eval_runner
import harness.sweep.cascade as sweep_cascade
from harness.config.validate import check_eval_config
from harness.embedded.evals import write_eval_files


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory):
    from harness.embedded.judge import toy_models as build

    return build(tmp_path_factory.getbasetemp() / "toy_models")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embedded")
    write_eval_files(root / "evals", root)
    return root / "evals" / "lm_eval"


def _lm_cfg(include_path, **kw):
    return OmegaConf.create({"tasks": ["embedded_facts_mc", "embedded_lists_gen"],
                             "include_path": str(include_path), "include_defaults": False,
                             "num_fewshot": 0, "limit": 4, "batch_size": 4,
                             "apply_chat_template": True, "bootstrap_iters": 100,
                             "log_samples": True, **kw})


def test_relative_data_files_resolved_against_yaml_folder(tmp_path):
    src = tmp_path / "tasks" / "sub"
    src.mkdir(parents=True)
    (src / "data.jsonl").write_text('{"x": 1}\n')
    (src / "t.yaml").write_text(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\n"
        "process_docs: !function utils.process\ndoc_to_text: '{{x}}'\n")
    out = lm_eval_runner.prepare_include_path(tmp_path / "tasks", tmp_path / "copy")
    text = (out / "sub" / "t.yaml").read_text()
    assert f"test: {src / 'data.jsonl'}" in text
    assert "!function 'utils.process'" in text or "!function utils.process" in text


def test_flatten_names_metrics_filters_and_stderr():
    results = {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5,
                         "exact_match_stderr,strict-match": 0.1, "acc,none": 0.25,
                         "acc_stderr,none": "N/A"},
               "other": {"acc,none": 1.0}}
    flat = lm_eval_runner.flatten(results, ["gsm8k"])
    assert flat == {"lm_eval/gsm8k/exact_match@strict-match": 0.5,
                    "lm_eval/gsm8k/exact_match_stderr@strict-match": 0.1,
                    "lm_eval/gsm8k/acc": 0.25}


def test_identical_to_base_flag_from_fingerprints():
    same, warnings = lm_eval_runner.compare_to_base({}, None, {"t": "a"}, {"t": "a"})
    assert same == {"lm_eval/identical_to_base": 1.0} and "outputs on all 1 tasks" in warnings[0]
    diff, _ = lm_eval_runner.compare_to_base({}, None, {"t": "a", "u": "b"}, {"t": "a", "u": "c"})
    assert diff == {"lm_eval/identical_to_base": 0.0}


def test_identical_to_base_flag():
    base = {"lm_eval/t/acc": 0.5, "lm_eval/t/acc_stderr": 0.1, "perplexity": 3.0}
    same, warnings = lm_eval_runner.compare_to_base({"lm_eval/t/acc": 0.5}, base)
    assert same == {"lm_eval/identical_to_base": 1.0} and "adapter applied" in warnings[0]
    diff, warnings = lm_eval_runner.compare_to_base({"lm_eval/t/acc": 0.75}, base)
    assert diff == {"lm_eval/identical_to_base": 0.0} and not warnings
    assert lm_eval_runner.compare_to_base({"lm_eval/t/acc": 0.5}, None) == ({}, [])


def _peft(model_dir, init_zero: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    if not init_zero:
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.5)
    return model.eval()


def test_lm_eval_on_peft_model_in_memory(toy_models, tasks_dir, tmp_path):
    """Unmerged and merged adapters score alike; an adapter that changes nothing scores
    exactly like the base (flagged); results and samples are written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = toy_models[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = _lm_cfg(tasks_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base_res = lm_eval_runner.run_lm_eval(base, tokenizer, lm, tmp_path / "base")
    for key in ("lm_eval/embedded_facts_mc/acc", "lm_eval/embedded_facts_mc/acc_stderr",
                "lm_eval/embedded_facts_mc/acc_norm", "lm_eval/embedded_lists_gen/exact_match"):
        assert key in base_res.metrics, base_res.metrics
    assert (tmp_path / "base" / "results.json").is_file()
    assert (tmp_path / "base" / "samples_embedded_facts_mc.jsonl").is_file()

    noop = _peft(model_dir, init_zero=True)  # LoRA B = 0: the adapter changes nothing
    noop_res = lm_eval_runner.run_lm_eval(noop, tokenizer, lm, tmp_path / "noop")
    flag, _ = lm_eval_runner.compare_to_base(noop_res.metrics, base_res.metrics,
                                             noop_res.extra["fingerprints"],
                                             base_res.extra["fingerprints"])
    assert flag["lm_eval/identical_to_base"] == 1.0
    assert noop_res.extra["adapter"] == "unmerged"

    tuned = _peft(model_dir, init_zero=False)
    before = [p.detach().clone() for p in tuned.parameters()]
    unmerged = lm_eval_runner.run_lm_eval(tuned, tokenizer, lm, tmp_path / "unmerged")
    merged = lm_eval_runner.run_lm_eval(tuned, tokenizer, _lm_cfg(tasks_dir, merge_adapter=True),
                                        tmp_path / "merged")
    assert merged.extra["adapter"] == "merged"
    mc = "lm_eval/embedded_facts_mc/acc"
    assert merged.metrics[mc] == pytest.approx(unmerged.metrics[mc])
    flag, _ = lm_eval_runner.compare_to_base(unmerged.metrics, base_res.metrics,
                                             unmerged.extra["fingerprints"],
                                             base_res.extra["fingerprints"])
    assert flag["lm_eval/identical_to_base"] == 0.0, (unmerged.metrics, base_res.metrics)
    after = list(tuned.parameters())
    assert all(a.allclose(b, atol=1e-4) for a, b in zip(after, before, strict=True))


# ------------------------------------------------------------------------------- cascade


def _cascade_cfg(**casc):
    return OmegaConf.create({
        "trial": {"number": 3},
        "eval": {"lm_eval": {"enabled": True}, "mt_bench": {"enabled": False},
                 "cascade": {"enabled": True, "metric": "perplexity",
                             "direction": "minimize", "threshold": None, "top_k": None,
                             **casc}}})


def test_cascade_decisions():
    cfg = _cascade_cfg(threshold=5.0, top_k=2)
    assert cascade.decide(cfg, {"perplexity": 4.0}).judged
    late = cascade.decide(cfg, {"perplexity": 9.0})
    assert not late.judged and late.deferred and "top-2 pass" in late.reason
    no_k = cascade.decide(_cascade_cfg(threshold=5.0), {"perplexity": 9.0})
    assert not no_k.judged and "fails threshold <= 5.0" in no_k.reason
    assert "not computed" in cascade.decide(cfg, {}).reason
    base = _cascade_cfg(threshold=1.0)
    base.trial = {"baseline": True}
    assert cascade.decide(base, {"perplexity": 99.0}).judged
    assert cascade.decide(_cascade_cfg(enabled=False), {}).judged


def test_cascade_skips_expensive_stages_and_says_why():
    result = cascade.run_expensive(None, None, _cascade_cfg(threshold=2.0), {"perplexity": 3.0})
    assert result.metrics == {"cascade/judged": 0.0}
    assert result.cascade["judged"] is False and "perplexity=3" in result.cascade["reason"]


def test_top_k_pass_scores_best_unjudged_and_notes_the_rest(tmp_path, monkeypatch):
    from harness.records import TrialRecord, read_record, write_record

    for number, ppl in enumerate([5.0, 2.0, 9.0, 3.0]):
        folder = tmp_path / "trials" / f"{number:04d}"
        folder.mkdir(parents=True)
        decision = {"judged": number == 1, "reason": "r", "deferred": number != 1}
        write_record(TrialRecord(number=number, status="COMPLETE", method="lora",
                                 metrics={"perplexity": ppl}, cascade=decision), folder)
    scored_dirs = []
    judge = object()  # the sweep's live judge server, passed down to every re-scoring
    launcher = object()   # the driver's: every re-scoring is one of its jobs

    def jobs(requests, through, served, stages=None, poll_s=1.0):
        assert through is launcher
        scored_dirs.extend((d.name, reason, served) for d, reason in requests)
        return {d: {"status": "done"} for d, _ in requests}

    monkeypatch.setattr(sweep_cascade, "rescore_jobs", jobs)
    scored = sweep_cascade.top_k_pass(tmp_path, _cascade_cfg(top_k=2), judge, launcher)
    assert scored == [3] and scored_dirs[0][0] == "0003" and "rank 2 of 4" in scored_dirs[0][1]
    assert scored_dirs[0][2] is judge
    for name, rank in (("0000", 3), ("0002", 4)):
        reason = read_record(tmp_path / "trials" / name).cascade["reason"]
        assert f"rank {rank} of 4" in reason and "not in the top 2" in reason
    assert json.loads((tmp_path / "trials/0001/result.json").read_text())["cascade"]["judged"]


def test_eval_config_checks_reject_a_key_in_api_key_env():
    from harness.errors import ConfigError

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/eval/default.yaml")
    full = OmegaConf.create({"eval": cfg, "paths": {"embedded": "/x", "sweeps": "/s"}})
    check_eval_config(full)
    full.eval.judge.api_key_env = "sk-abc123secret"
    with pytest.raises(ConfigError, match="NAME of an environment variable") as info:
        check_eval_config(full)
    assert "abc123" not in str(info.value)
    full.eval.judge.api_key_env = None
    full.eval.cascade.enabled = True
    with pytest.raises(ConfigError, match="threshold or a top_k"):
        check_eval_config(full)
