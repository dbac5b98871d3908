"""Throughput of batched perplexity() against the one-window-at-a-time perplexity_reference().

    python benchmarks/perplexity_throughput.py [--texts N --max-length L --stride S --batch-size B]
    python benchmarks/perplexity_throughput.py --model PATH   # a local model dir instead
    python benchmarks/perplexity_throughput.py --embedded     # the embedded model and texts

Without --model a small random Llama and a BPE tokenizer trained on the (deterministic, synthetic)
text set are built in-process. `--batch-size auto` (the default) takes the battery's per-device
choice (harness.config.battery.perplexity_batch_size). Both functions run in the same process
after a warm-up, taking turns `--repeat` times (best of each); the script prints tokens/s of
each, the speed-up and both perplexities, and exits 1 if they differ by more than --rtol
(relative). Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch

from harness.config.battery import perplexity_batching
from harness.eval.metrics import perplexity, perplexity_reference

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dor", "fen", "gil"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--texts", type=int, default=32, help="number of texts")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--batch-size", default="auto", help="windows per forward, or auto")
    p.add_argument("--embedded", action="store_true",
                   help="the embedded model and its held-out perplexity texts")
    p.add_argument("--repeat", type=int, default=3, help="turns of each (best is printed)")
    p.add_argument("--model", default=None, help="local model dir (default: small random Llama)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=1e-6)
    return p.parse_args(argv)


def make_texts(n: int, seed: int) -> list[str]:
    """Deterministic pseudo-word texts of 20..600 words: some shorter than a window, most longer."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(400)]
    texts = []
    for _ in range(n):
        words = [rng.choice(vocab) for _ in range(rng.randint(20, 600))]
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def build_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_random_model(tokenizer, max_length: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        intermediate_size=688,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(2048, max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def load(args: argparse.Namespace, texts: list[str]):
    """(model, tokenizer, description) on the chosen device, in eval mode."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.embedded:
        args.model = str(embedded_root() / "model")
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
        name = args.model
    else:
        tokenizer = build_tokenizer(texts)
        model = build_random_model(tokenizer, args.max_length)
        name = f"random Llama (4 x 256, vocab {len(tokenizer)})"
    return model.to(device).eval(), tokenizer, f"{name} on {device}"


def embedded_root():
    """The embedded build (built first if missing), where the default sweep finds it."""
    from pathlib import Path

    from harness.config.compose import compose_config, resolve_paths
    from harness.embedded.build import build_embedded, is_complete

    root = Path(str(resolve_paths(compose_config([])).paths.embedded))
    return root if is_complete(root) else build_embedded(root)


def embedded_texts() -> list[str]:
    import json

    path = embedded_root() / "data" / "perplexity.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def timed(fn, *args, **kwargs) -> tuple[dict[str, float], float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = embedded_texts() if args.embedded else make_texts(args.texts, args.seed)
    model, tokenizer, desc = load(args, texts)
    window = {"max_length": args.max_length, "stride": args.stride}
    args.batch_size, tokens = perplexity_batching(
        args.batch_size, next(model.parameters()).device.type, model.config.vocab_size)
    print(f"model: {desc}; torch threads: {torch.get_num_threads()}")
    print(
        f"texts: {len(texts)}, max_length={args.max_length}, stride={args.stride}, "
        f"batch_size={args.batch_size}, max_batch_tokens={tokens}"
    )

    # warm-up (allocator, kernels, lazy imports) on a few texts
    perplexity(model, tokenizer, texts[:2], batch_size=args.batch_size, max_batch_tokens=tokens,
               **window)
    perplexity_reference(model, tokenizer, texts[:2], **window)

    t_batched = t_reference = float("inf")
    for _ in range(args.repeat):   # taking turns: a loaded machine slows both alike
        batched, seconds = timed(perplexity, model, tokenizer, texts, batch_size=args.batch_size,
                                 max_batch_tokens=tokens, **window)
        t_batched = min(t_batched, seconds)
        reference, seconds = timed(perplexity_reference, model, tokenizer, texts, **window)
        t_reference = min(t_reference, seconds)

    n_tokens = batched["tokens"]
    rel = abs(batched["perplexity"] - reference["perplexity"]) / reference["perplexity"]
    print(f"scored tokens: {n_tokens:.0f} (reference {reference['tokens']:.0f})")
    print(
        f"batched   : {t_batched:8.2f} s  {n_tokens / t_batched:10.1f} tokens/s  "
        f"ppl={batched['perplexity']:.6f}"
    )
    print(
        f"reference : {t_reference:8.2f} s  {n_tokens / t_reference:10.1f} tokens/s  "
        f"ppl={reference['perplexity']:.6f}"
    )
    print(f"speed-up  : {t_reference / t_batched:.2f}x")
    print(f"relative difference in perplexity: {rel:.3e} (tolerance {args.rtol:g})")
    if rel > args.rtol or batched["tokens"] != reference["tokens"]:
        print("FAIL: batched and reference perplexity disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
