"""Tests for harness.eval.metrics on a tiny random Llama and a locally trained BPE tokenizer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.eval.metrics import generate, perplexity, perplexity_reference, rouge

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "to be or not to be that is the question",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "knowledge is power and time is money",
    "running runners run quickly through the park",
]
# One long text (several windows), the sentences, a 2-token text ("a" + bos) and one that is
# only bos (< 2 tokens, skipped).
TEXTS = [" ".join(SENTENCES)] + SENTENCES + ["a", ""]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>:{% endif %}"
)
PROMPTS = ["hello fox", "the quick brown fox jumps over the lazy", "be", "gold is not power"]
REL = 1e-4


def _build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast  # no pad token on purpose: padding must fall back to eos


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are dominated by thread overhead; oversubscribed CPUs make it 10-100x worse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return _build_tokenizer()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=len(_build_tokenizer()),
        bos_token_id=1,
        eos_token_id=2,
        # Larger than the default 0.02 so that predictions depend clearly on the context: with
        # near-uniform logits, wrong windows/labels would go unnoticed.
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config).eval()


def _n_scorable(tokenizer, texts) -> int:
    ids = [tokenizer(t)["input_ids"] for t in texts]
    return sum(len(x) - 1 for x in ids if len(x) >= 2)


def _assert_close(a: dict, b: dict) -> None:
    assert a["tokens"] == b["tokens"]
    assert a["nll"] == pytest.approx(b["nll"], rel=REL)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=REL)


# ----------------------------------------------------------------------------- perplexity

COMBOS = [  # (max_length, stride, batch_size)
    (8, 8, 3),  # stride == max_length
    (8, 3, 4),  # overlapping windows
    (16, 5, 64),  # everything in one batch
    (6, 1, 5),  # maximal overlap
    (256, 256, 2),  # longer than every text: one window per text
]


@pytest.mark.parametrize(("max_length", "stride", "batch_size"), COMBOS)
def test_batched_matches_reference_and_scores_each_token_once(
    model, tokenizer, max_length, stride, batch_size
):
    kw = {"max_length": max_length, "stride": stride}
    batched = perplexity(model, tokenizer, TEXTS, batch_size=batch_size, **kw)
    reference = perplexity_reference(model, tokenizer, TEXTS, **kw)
    _assert_close(batched, reference)
    assert batched["perplexity"] == pytest.approx(math.exp(batched["nll"]))
    # every token of every text but its first, once; the bos-only text is skipped
    assert batched["tokens"] == reference["tokens"] == _n_scorable(tokenizer, TEXTS)


def test_windows_respect_max_length_and_batch_size(model, tokenizer):
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        perplexity(model, tokenizer, TEXTS, max_length=8, stride=8, batch_size=3)
    finally:
        hook.remove()
    assert shapes and all(b <= 3 and width <= 8 for b, width in shapes)
    assert sum(b for b, _ in shapes) > len(TEXTS)  # the long text really was split


def test_full_context_equals_exact_nll(model, tokenizer):
    """With windows longer than every text, the result is the plain full-sequence NLL."""
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            if ids.shape[1] < 2:
                continue
            nll_sum += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    result = perplexity(model, tokenizer, TEXTS, max_length=512, stride=256, batch_size=4)
    assert result["tokens"] == count
    assert result["nll"] == pytest.approx(nll_sum / count, rel=REL)


def test_context_matters(model, tokenizer):
    """Guard for the tests above: the model must be context-sensitive for them to mean anything."""
    short = perplexity(model, tokenizer, TEXTS, max_length=4, stride=4, batch_size=8)
    long = perplexity(model, tokenizer, TEXTS, max_length=64, stride=32, batch_size=8)
    assert abs(short["nll"] - long["nll"]) / long["nll"] > 1e-2


@pytest.mark.parametrize("pad_token", [None, "<pad>", "fox"])
def test_padding_does_not_change_result(model, tokenizer, pad_token):
    """One padded batch == one window per forward, whatever the pad token (even a real word)."""
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    kw = {"max_length": 8, "stride": 4}
    unbatched = perplexity(model, tokenizer, TEXTS, batch_size=1, **kw)
    one_batch = perplexity(model, tokenizer, TEXTS, batch_size=1000, **kw)
    _assert_close(one_batch, unbatched)


def test_short_texts_are_skipped(model, tokenizer):
    kw = {"max_length": 8, "stride": 4, "batch_size": 4}
    with_short = perplexity(model, tokenizer, SENTENCES + ["", ""], **kw)
    _assert_close(with_short, perplexity(model, tokenizer, SENTENCES, **kw))
    with pytest.raises(ValueError):
        perplexity(model, tokenizer, ["", ""], **kw)


@pytest.mark.parametrize(("max_length", "stride"), [(8, 9), (8, 0), (1, 1)])
def test_invalid_window_arguments(model, tokenizer, max_length, stride):
    with pytest.raises(ValueError):
        perplexity(model, tokenizer, TEXTS, max_length=max_length, stride=stride, batch_size=2)
    with pytest.raises(ValueError):
        perplexity_reference(model, tokenizer, TEXTS, max_length=max_length, stride=stride)


def test_perplexity_with_peft_model(model, tokenizer):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj"]))
    kw = {"max_length": 8, "stride": 4}
    # LoRA B starts at zero: the adapter does not change the model's outputs.
    _assert_close(
        perplexity(peft_model, tokenizer, TEXTS, batch_size=4, **kw),
        perplexity(model, tokenizer, TEXTS, batch_size=4, **kw),
    )
    assert generate(peft_model, tokenizer, PROMPTS, max_new_tokens=4, batch_size=2) == generate(
        model, tokenizer, PROMPTS, max_new_tokens=4, batch_size=2
    )


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("side", ["right", "left"])
def test_generate_batched_equals_unbatched(model, tokenizer, side):
    tokenizer.padding_side = side
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=len(PROMPTS))
    single = [generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in PROMPTS]
    assert len(batched) == len(PROMPTS) and all(isinstance(s, str) for s in batched)
    assert batched == single
    assert any(batched)  # not trivially equal
    assert all(s == s.strip() for s in batched)
    assert tokenizer.padding_side == side
    assert tokenizer.pad_token is None


def _spy_generate(monkeypatch, model) -> list[torch.Tensor]:
    calls = []
    real = model.generate

    def spy(*args, **kwargs):
        assert not model.training
        assert not torch.is_grad_enabled()
        calls.append((kwargs["input_ids"], kwargs["attention_mask"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_generate_chat_template_single_bos(model, tokenizer, monkeypatch):
    calls = _spy_generate(monkeypatch, model)
    model.train()
    try:
        generate(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=len(PROMPTS))
        assert model.training  # previous mode restored
    finally:
        model.eval()
    ((input_ids, mask),) = calls
    bos = tokenizer.bos_token_id
    for row, row_mask in zip(input_ids.tolist(), mask.tolist(), strict=True):
        start = row_mask.index(1)
        assert row_mask[:start] == [0] * start and all(row_mask[start:])  # left padded
        real = row[start:]
        assert real[0] == bos and real[1] != bos  # exactly one bos
        assert tokenizer.decode(real).startswith("<s><user>: ")
        assert tokenizer.decode(real).endswith("<assistant>:")


def test_generate_without_chat_template_uses_plain_text(model, tokenizer, monkeypatch):
    tokenizer.chat_template = None
    calls = _spy_generate(monkeypatch, model)
    out = generate(model, tokenizer, ["hello fox"], max_new_tokens=3, batch_size=1)
    assert len(out) == 1
    ((input_ids, _),) = calls
    assert input_ids[0].tolist() == tokenizer("hello fox")["input_ids"]


def test_generate_keeps_prompt_order_across_batches(model, tokenizer):
    many = PROMPTS * 2 + ["x"]
    out = generate(model, tokenizer, many, max_new_tokens=4, batch_size=3, progress=True)
    assert len(out) == len(many)
    assert out[: len(PROMPTS)] == out[len(PROMPTS) : 2 * len(PROMPTS)]
    assert out[: len(PROMPTS)] == generate(
        model, tokenizer, PROMPTS, max_new_tokens=4, batch_size=1
    )


# ----------------------------------------------------------------------------- ROUGE


def test_rouge_identical_and_disjoint():
    same = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    disjoint = rouge(["alpha beta gamma"], ["delta epsilon zeta"])
    assert disjoint == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})


def test_rouge_is_mean_over_pairs_and_stems():
    assert rouge(["a b c", "x y"], ["a b c", "p q"])["rouge1"] == pytest.approx(0.5)
    assert rouge(["running"], ["run"])["rouge1"] == pytest.approx(1.0)
    assert rouge(["the dogs are running"], ["the dog is run"])["rouge1"] > 0.5


def test_rouge_length_mismatch():
    with pytest.raises(ValueError):
        rouge(["a"], ["a", "b"])


def test_generate_batched_with_early_eos_and_word_pad_token(model, tokenizer):
    """A row that hits eos early is padded in the batch: that padding must not leak into the text,
    even when the pad token is an ordinary word."""
    tokenizer.pad_token = "fox"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first_token = int(model(input_ids=ids).logits[0, -1].argmax())
    stopper = copy.deepcopy(model)
    stopper.generation_config.eos_token_id = first_token  # PROMPTS[0] now stops at once
    batched = generate(stopper, tokenizer, PROMPTS, max_new_tokens=6, batch_size=len(PROMPTS))
    single = [generate(stopper, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    assert batched[0] == "" and any(batched[1:])
    assert batched == single
