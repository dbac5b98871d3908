"""The battery's cost decisions (harness.config.battery) and the identical-numbers guarantees of
its fast paths: preference metrics only when the sweep asks for them, perplexity batched per
device with the reference's value, batched greedy MT-Bench answers equal to one at a time."""

from __future__ import annotations

import pytest
import torch

from harness.config.battery import (
    perplexity_batching,
    preference_wanted,
    trial_wants_preference,
)
from harness.config.compose import compose_config, resolve_paths
from harness.config.validate import Problems, validate_trial_config
from harness.errors import ConfigError
from harness.eval.metrics import perplexity, perplexity_reference
from tests.test_evaluate import TEXTS, _build_tokenizer


def test_preference_metrics_only_when_asked():
    assert not preference_wanted("auto", "sft", [{"metric": "perplexity"}])
    for kind in ("dpo", "kto", "orpo", "ppo", "grpo", "rloo"):
        assert preference_wanted("auto", kind, [{"metric": "perplexity"}])
    assert preference_wanted("auto", "sft", [{"metric": "reward_mean"}])
    assert preference_wanted("auto", "sft", [], ["win_rate_vs_sft"])
    assert preference_wanted(True, "sft") and not preference_wanted(False, "dpo")
    with pytest.raises(ConfigError, match="data.preference.metrics.enabled"):
        preference_wanted("sometimes", "sft")


@pytest.mark.parametrize(("overrides", "wanted"), [
    ([], False),                                        # default sweep: SFT on perplexity
    (["method=dpo"], True),                             # trained on preference pairs
    (["sweep=method_compare", "method=lora"], True),    # objective reward_mean
    (["sweep=dpo_beta"], True),                         # objective pref_accuracy
    (["report.metrics=[pref_accuracy]"], True),
    (["data.preference.metrics.enabled=true"], True),
    (["method=dpo", "data.preference.metrics.enabled=false"], False),
])
def test_composed_sweeps_ask_for_what_they_use(overrides, wanted):
    assert trial_wants_preference(compose_config(overrides)) is wanted


def test_bad_battery_settings_are_one_line_each():
    def problems(overrides: list[str]) -> list[str]:
        found = Problems()
        validate_trial_config(resolve_paths(compose_config(overrides)), found)
        return found.lines

    lines = problems(["data.preference.metrics.enabled=maybe", "eval.perplexity.batch_size=0"])
    assert any("data.preference.metrics.enabled" in line for line in lines)
    assert any("eval.perplexity.batch_size" in line for line in lines)
    assert problems(["eval.perplexity.batch_size=3"]) == problems([]) == []   # int or auto
    scorer = problems(["+data.preference.metrics.scorer.train.max_stepz=3",
                       "+data.preference.metrics.scorer.pef=lora"])
    assert [line.split(" is not a key")[0] for line in scorer] == [
        "data.preference.metrics.scorer.train.max_stepz", "data.preference.metrics.scorer.pef"]
    assert "max_steps" in scorer[0] and "peft" in scorer[1]    # the keys it could have meant
    assert problems(["+data.preference.metrics.scorer.train.max_steps=3"]) == []


def test_perplexity_batching_per_device():
    assert perplexity_batching(3, "cuda") == (3, None)              # a number is kept, no cap
    assert perplexity_batching("auto", "cpu") == (512, 512)         # as measured on 2 cores
    assert perplexity_batching("auto", "cuda", 1000) == (32768, 32768)
    assert perplexity_batching("auto", "cuda", 128256) == (8371, 8371)   # 4 GiB of logits
    assert perplexity_batching("auto", "mps", 10**10) == (1, 1)     # one window at least


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, vocab_size=len(tokenizer), bos_token_id=1,
                         eos_token_id=2, initializer_range=0.2)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_token_batched_perplexity_equals_one_window_at_a_time(tiny):
    """Token-budget batches (padded windows of mixed lengths) give the reference loop's value
    to 1e-6 relative: padding that leaked into the loss or a lost window would not."""
    model, tokenizer = tiny
    torch.set_num_threads(1)
    texts = TEXTS * 3
    kw = {"max_length": 16, "stride": 8}
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:   # a budget of 40 tokens: 2 windows of 16, more of the shorter ones
        batched = perplexity(model, tokenizer, texts, batch_size=64, max_batch_tokens=40, **kw)
    finally:
        hook.remove()
    assert all(b * width <= 40 for b, width in shapes) and max(b for b, _ in shapes) > 2
    reference = perplexity_reference(model, tokenizer, texts, **kw)
    assert batched["tokens"] == reference["tokens"]
    assert abs(batched["perplexity"] - reference["perplexity"]) <= 1e-6 * reference["perplexity"]


QUESTIONS = [  # greedy categories (batched) of different lengths, and two sampled ones
    {"question_id": 1, "category": "math", "turns": ["the quick brown fox", "be or not"]},
    {"question_id": 2, "category": "reasoning", "turns": ["gold"]},
    {"question_id": 3, "category": "coding", "turns": ["a journey of a thousand miles begins",
                                                       "to be or not to be that is the"]},
    {"question_id": 4, "category": "writing", "turns": ["the early bird", "catches"]},
    {"question_id": 5, "category": "extraction", "turns": ["knowledge is power and time",
                                                           "running runners"]},
    {"question_id": 6, "category": "stem", "turns": ["all that glitters", "is not gold"]},
]


def _answers(model, tokenizer, batch_size: int) -> list:
    from harness.eval.mt_bench import generate_answers

    rows = generate_answers(model, tokenizer, QUESTIONS, model_id="m", max_new_tokens=6,
                            seed=0, batch_size=batch_size)
    return [(r["question_id"], r["choices"][0]["turns"]) for r in rows]


@pytest.mark.parametrize("early_eos", [False, True])
def test_batched_greedy_answers_equal_one_at_a_time(tiny, early_eos):
    """MT-Bench answers with the greedy questions batched (length-sorted, left-padded) are the
    one-by-one answers, in question order; a row that ends early leaks no padding."""
    import copy

    model, tokenizer = tiny
    torch.set_num_threads(1)
    if early_eos:   # question 1's first greedy token ends it: its row finishes at once
        text = tokenizer.apply_chat_template([{"role": "user", "content": "the quick brown fox"}],
                                             tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            first = int(model(input_ids=ids).logits[0, -1].argmax())
        model = copy.deepcopy(model)
        model.generation_config.eos_token_id = first
    one_by_one = _answers(model, tokenizer, 1)
    batched = _answers(model, tokenizer, 4)
    assert batched == one_by_one
    assert [q for q, _ in batched] == [q["question_id"] for q in QUESTIONS]
    firsts = [turns[0] for _, turns in one_by_one]
    assert len(set(firsts)) > 2   # answers differ: a permuted batch would not pass
    if early_eos:
        assert one_by_one[0][1][0] == tokenizer.decode([first]).strip()   # the eos alone
        assert all(len(f) > len(firsts[0]) for f in firsts[1:])   # the others went on
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is None   # restored


def test_lean_lm_eval_scores_exactly_as_plain_lm_eval(tiny, tmp_path, monkeypatch):
    """Without lm-eval's environment probe and with its templates compiled once, every score
    and every example's output (fingerprints) is what plain lm-eval gives; lm-eval is
    restored after the call."""
    import contextlib

    import lm_eval.utils
    import torch.utils.collect_env as collect_env
    from omegaconf import OmegaConf

    import harness.eval.lm_eval_runner as runner
    from harness.embedded.evals import write_eval_files

    model, tokenizer = tiny
    write_eval_files(tmp_path / "evals", tmp_path)
    cfg = OmegaConf.create({"tasks": ["embedded_facts_mc", "embedded_lists_gen"],
                            "include_path": str(tmp_path / "evals" / "lm_eval"),
                            "include_defaults": False, "num_fewshot": 0, "limit": 6,
                            "batch_size": 4, "apply_chat_template": True,
                            "bootstrap_iters": 100})
    probes = []
    real_probe = collect_env.get_pretty_env_info
    monkeypatch.setattr(collect_env, "get_pretty_env_info",
                        lambda: probes.append(1) or real_probe())
    template = lm_eval.utils.apply_template
    lean = runner.run_lm_eval(model, tokenizer, cfg, tmp_path / "lean")
    assert probes == [] and lm_eval.utils.apply_template is template
    monkeypatch.setattr(runner, "lean_lm_eval", contextlib.nullcontext)
    plain = runner.run_lm_eval(model, tokenizer, cfg, tmp_path / "plain")
    assert probes == [1]   # plain lm-eval does run the probe
    assert lean.metrics == plain.metrics and lean.results == plain.results
    assert lean.extra["fingerprints"] == plain.extra["fingerprints"]
