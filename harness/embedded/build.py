"""The embedded default: a tiny offline Llama model, its tokenizer and small data sets.

`build_embedded(root)` creates, once and deterministically for a seed, everything the harness
needs to run end to end without a model hub or internet:

- `model/`: a byte-level BPE tokenizer (with a chat template whose assistant turns sit in
  `{% generation %}` blocks) and a ~1.3M-parameter `LlamaForCausalLM`, briefly pre-trained on a
  generic synthetic corpus (reports, facts about invented countries, short stories, lists);
- `data/`: chat SFT data (report summarization, fact lookup, list reversal and sorting), held-out
  evaluation sets (perplexity texts, summarization pairs with ROUGE references) and
  preference pairs (chosen = correct and complete, rejected = wrong or truncated);
- `BUILD_INFO.json`: written last; its presence marks a complete build.

Texts and data sets come from harness.embedded.corpus (generators in harness.embedded.text);
nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.embedded.corpus import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    make_corpus,
)

EMBEDDED_VERSION = "2"

BUILD_INFO = "BUILD_INFO.json"
MODEL_DIR = "model"
DATA_DIR = "data"

# Tokenizer and model shape.
VOCAB_SIZE = 3072
MODEL_SHAPE: dict[str, int] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 384,
    "max_position_embeddings": 512,
}

# Pre-training recipe (plain torch loop, 2 threads).
PRETRAIN_STEPS = 150
PRETRAIN_BATCH = 16
PRETRAIN_SEQ_LEN = 256
PRETRAIN_LR = 3e-3
PRETRAIN_WARMUP = 15
TORCH_THREADS = 2

# ---------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str]) -> Any:
    """Train a byte-level BPE tokenizer and wrap it as a chat-ready `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(tokenizer: Any, seed: int) -> Any:
    """A freshly initialised tiny `LlamaForCausalLM` sized to the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def pack_tokens(tokenizer: Any, texts: list[str], seq_len: int) -> Any:
    """Tokenize `<bos> text <eos>` documents, concatenate and cut into `seq_len` blocks."""
    import torch

    ids: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids += [tokenizer.bos_token_id, *enc.ids, tokenizer.eos_token_id]
    n_blocks = len(ids) // seq_len
    return torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)


def pretrain(model: Any, blocks: Any, *, seed: int, progress: bool) -> float:
    """Causal-LM pre-training with AdamW and warmup+cosine; returns the final smoothed loss."""
    import torch
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=PRETRAIN_LR, weight_decay=0.01, betas=(0.9, 0.95)
    )

    def lr_at(step: int) -> float:
        if step < PRETRAIN_WARMUP:
            return (step + 1) / PRETRAIN_WARMUP
        frac = (step - PRETRAIN_WARMUP) / max(1, PRETRAIN_STEPS - PRETRAIN_WARMUP)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order = _batch_order(len(blocks), PRETRAIN_STEPS * PRETRAIN_BATCH, gen)
    model.train()
    smooth = float("nan")
    bar = tqdm(range(PRETRAIN_STEPS), desc="pretrain embedded model", disable=not progress)
    for step in bar:
        batch = blocks[order[step * PRETRAIN_BATCH : (step + 1) * PRETRAIN_BATCH]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
        bar.set_postfix(loss=f"{smooth:.3f}")
    model.eval()
    return smooth


def _batch_order(n_blocks: int, n_needed: int, gen: Any) -> Any:
    """Concatenated random permutations of block indices, at least `n_needed` long."""
    import torch

    perms = [torch.randperm(n_blocks, generator=gen) for _ in range(math.ceil(n_needed / n_blocks))]
    return torch.cat(perms)


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def weights_hash(model_dir: str | Path) -> str:
    """SHA-256 of the saved model weights (to compare builds)."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_complete(root: str | Path, seed: int | None = None) -> bool:
    """True if `root` holds a finished build of this version (and of `seed`, if given)."""
    marker = Path(root) / BUILD_INFO
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == EMBEDDED_VERSION and (seed is None or info.get("seed") == seed)


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Fix thread count, RNG state and deterministic mode for the build; restore them after."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _build_into(out: Path, seed: int, progress: bool) -> None:
    """Generate data, train tokenizer and model, and write everything (marker last) into `out`."""
    start = time.time()
    corpus = make_corpus(seed)
    data_dir = out / DATA_DIR
    data_dir.mkdir(parents=True)
    for name, rows in corpus.files.items():
        _write_jsonl(data_dir / f"{name}.jsonl", rows)

    sft_texts = [m["content"] for r in corpus.files["sft_train"] for m in r["messages"]]
    tokenizer = train_tokenizer(corpus.pretrain + sft_texts)
    with _torch_settings(TORCH_THREADS):
        model = make_model(tokenizer, seed)
        blocks = pack_tokens(tokenizer, corpus.pretrain, PRETRAIN_SEQ_LEN)
        final_loss = pretrain(model, blocks, seed=seed, progress=progress)
    model.save_pretrained(out / MODEL_DIR)
    tokenizer.save_pretrained(out / MODEL_DIR)

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    info = {
        "version": EMBEDDED_VERSION,
        "seed": seed,
        "seconds": round(time.time() - start, 2),
        "pretrain_final_loss": round(final_loss, 4),
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_tokens": PRETRAIN_STEPS * PRETRAIN_BATCH * PRETRAIN_SEQ_LEN,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "weights_sha256": weights_hash(out / MODEL_DIR),
        "files": files,
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def build_embedded(root: str | Path, *, seed: int = 0, progress: bool = True) -> Path:
    """Build the embedded model+data under `root` if not already complete; return root.

    Idempotent: a complete build (marked by `BUILD_INFO.json`, written last) is reused. Safe
    when several processes call it at once: a file lock beside `root` serialises builders, and
    each build is written to a temporary sibling folder that is renamed to `root` at the end,
    so readers never see a half-written build. A build of another seed or version at `root` is
    replaced. Deterministic for a seed.
    """
    from filelock import FileLock

    root = Path(root).absolute()
    if is_complete(root, seed):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_complete(root, seed):
            return root
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build_into(tmp, seed, progress)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
