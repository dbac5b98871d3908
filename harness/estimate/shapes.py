"""The model's architecture from its config.json (read as JSON: no transformers, no torch).

Parameter counts follow the Llama/Qwen2/Mistral decoder (transformers' modeling_llama.py,
modeling_qwen2.py): per layer q/k/v/o attention projections (Qwen2: bias on q, k, v), a SwiGLU
MLP (gate, up, down) and two RMSNorms; token embeddings, a final norm and an lm_head (shared
with the embeddings when tie_word_embeddings). tests/test_estimate.py checks the total against
accelerate's meta-device count (init_empty_weights) of the real transformers class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

# config.json fields the estimator cannot do without (one error line names the first missing).
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size")
# model_type values whose attention projections q/k/v carry a bias when config.json does not say
# (Qwen2Config has no attention_bias field; modeling_qwen2 uses bias=True on q, k, v).
QKV_BIAS_TYPES = ("qwen2",)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that memory and FLOPs depend on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    source: str = ""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module of one decoder layer."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_weights(self) -> int:
        """Weights of one layer's linear modules (what 4/8-bit quantization packs)."""
        return sum(a * b for a, b in self.linears().values())

    def layer_bias_params(self) -> int:
        """Biases of one layer (Qwen2's q/k/v; bitsandbytes leaves them unquantized)."""
        return self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0

    def layer_linear_params(self) -> int:
        return self.layer_linear_weights() + self.layer_bias_params()

    def embedding_params(self) -> int:
        """Input embeddings plus a separate lm_head when not tied (never quantized)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden

    def total_params(self) -> int:
        """Every parameter (tied embeddings counted once)."""
        return (self.layers * self.layer_linear_params() + self.embedding_params()
                + self.norm_params())

    def matmul_params(self) -> int:
        """Parameters a token's forward multiplies with (layers + lm_head; no embeddings)."""
        return self.layers * self.layer_linear_params() + self.vocab * self.hidden


def shape_from_config(config: dict, where: str) -> ModelShape:
    """A ModelShape from config.json's fields; ConfigError naming the first missing field."""
    config = dict(config.get("text_config") or config)   # multimodal wrappers nest the LM
    for key in REQUIRED:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where}: config field {key} is missing or not a positive "
                              f"integer (got {value!r}); the memory estimate needs it")
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    bias = config.get("attention_bias")
    return ModelShape(
        hidden=int(config["hidden_size"]), layers=int(config["num_hidden_layers"]),
        heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
        # LlamaConfig / Qwen2Config / MistralConfig default: untied
        tied=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(bias) if bias is not None else config.get("model_type") in QKV_BIAS_TYPES,
        source=where)


def read_model_config(model) -> tuple[dict, str]:
    """(config.json contents, where it came from) for a `model:` config block.

    Order: `model.arch` (config.json fields written into the model's conf file, for hub models
    when the hub is out of reach) -> config.json in `model.path` (embedded, local) -> the
    Hugging Face cache or hub (config.json only, never weights)."""
    arch = model.get("arch")
    if arch:
        return dict(arch), "model.arch"
    path = Path(str(model.path))
    if model.get("source") in ("embedded", "local") or path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ConfigError(f"model.path: no config.json at {file} for the memory estimate")
        return _read_json(file), str(file)
    return _hub_config(str(model.path), model.get("revision")), f"hub {model.path} config.json"


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.path: cannot read {file}: {exc}") from None


def _hub_config(repo: str, revision: str | None) -> dict:
    """config.json of a hub model from the local cache, else downloaded (that file only)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        return _read_json(Path(cached))
    try:
        return _read_json(Path(hf_hub_download(repo, "config.json", revision=revision)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(f"model.arch: no config.json for {repo} (not cached, hub: "
                          f"{type(exc).__name__}); set model.arch to its fields") from None
