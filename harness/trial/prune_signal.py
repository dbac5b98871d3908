"""What an SFT trial's mid-training eval loss is computed on (`sweep.pruner.signal`): the value
logged every `method.train.eval_steps` steps and reported to the pruner.

eval_loss        data.eval_loss, held-out SFT pairs, loss on the answer tokens (the default)
perplexity_text  the objective's held-out texts (data.perplexity, the first
                 eval.perplexity.max_texts), loss on every token: the same texts and tokens
                 the final perplexity scores, so the pruner ranks trials as the objective does.
                 benchmarks/search_efficiency.py found the answer-token loss ranking the best
                 configurations in reverse order of their perplexity (higher LoRA alpha fits
                 answers faster and models the rest of the text worse).
"""

from __future__ import annotations

from omegaconf import DictConfig

from harness.data.sft import perplexity_texts, sft_rows
from harness.registry import PRUNE_SIGNALS


def eval_rows(cfg: DictConfig) -> list[dict] | None:
    """The SFT trainer's eval rows for `cfg` (None: no mid-training evaluation)."""
    return PRUNE_SIGNALS.load(cfg.sweep.pruner.get("signal", "eval_loss"))(cfg)


def sft_eval_rows(cfg: DictConfig) -> list[dict] | None:
    spec = cfg.data.get("eval_loss")
    return sft_rows(spec) if spec and spec.get("path") else None


def perplexity_rows(cfg: DictConfig) -> list[dict]:
    texts = perplexity_texts(cfg.data.perplexity, cfg.eval.perplexity.get("max_texts"))
    return [{"text": text} for text in texts]   # trl: a language-modelling set
