"""Peak memory of one training step, as a sum of named parts (bytes; no torch).

Sources of the formulas (each function says which applies):
- Weights: bytes per dtype; bitsandbytes NF4/FP4 packs two 4-bit weights per byte with one
  absmax per 64-weight block, fp32 (4 bytes / 64 weights), or, with double quantization, 8-bit
  absmax plus one fp32 per 256 absmax blocks (QLoRA paper, Dettmers et al. 2023, sec. 3:
  32/64 = 0.5 vs 8/64 + 32/(64*256) = 0.127 bits per weight). LLM.int8 (Dettmers et al. 2022):
  int8 weights plus one fp32 scale per output row. bitsandbytes leaves embeddings, norms,
  biases and lm_head unquantized, and peft's prepare_model_for_kbit_training casts those to
  fp32.
- Trainable parameters: every weight (full), or LoRA's r x (in + out) per targeted linear
  (Hu et al. 2021; DoRA adds one magnitude per output). peft keeps adapters of a bf16/fp16
  base in fp32 (autocast_adapter_dtype); trl casts them to bf16 on a quantized base.
- Gradients: one per trainable parameter, in its dtype.
- Optimizer states (AdamW, Loshchilov & Hutter): two moments; torch keeps them in the
  parameter's dtype, bitsandbytes' 32-bit optimizers in fp32, its 8-bit ones in blockwise
  uint8 (Dettmers et al. 2021) with one fp32 absmax per 256 values; paged variants hold the
  same bytes in CUDA unified memory (they can spill to host RAM only under pressure).
- Activations: the tensors autograd saves in a Llama/Qwen2 block (transformers'
  modeling_llama: RMSNorm upcasts to fp32, RoPE'd q/k, v, SDPA output and logsumexp, SwiGLU's
  gate/up/silu, linear inputs saved for weight gradients, LoRA dropout masks and inputs), per
  token, in the manner of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", 34 s b h bytes per GPT layer); gradient checkpointing keeps each
  layer's input and recomputes one layer at a time.
- Logits: the lm_head output (vocab x tokens) stays alive with the model output; cross
  entropy's log-softmax and, in backward, two more fp32 vocab x tokens buffers.
- Peak: the larger of the start of backward (weights + optimizer + activations + logits) and
  the optimizer step (weights + optimizer + gradients + the optimizer's temporaries).
Calibrated on CPU by benchmarks/memory_calibration.py (torch.profiler allocation tracking).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from harness.errors import ConfigError
from harness.estimate.shapes import ModelShape

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BLOCK_4BIT = 64            # bitsandbytes 4-bit blocksize
BLOCK_DOUBLE = 256         # absmax values per second-level block (double quantization)
BLOCK_8BIT_OPTIM = 256     # bitsandbytes blockwise 8-bit optimizer blocksize

# optimizer name (TrainingArguments.optim) -> (state bytes per trainable parameter given the
# parameter's bytes, temporaries in state-sized copies of all parameters (foreach) or None for
# per-tensor kernels)
OPTIMIZERS = {
    "adamw_torch": ("param", "foreach"),
    "adamw_torch_fused": ("param", None),
    "adamw_hf": ("param", None),
    "adamw_bnb_8bit": ("8bit", None),
    "adamw_8bit": ("8bit", None),
    "paged_adamw_8bit": ("8bit", None),
    "paged_adamw_32bit": ("fp32", None),
    "adamw_bnb_32bit": ("fp32", None),
    "sgd": ("none", None),
    "adafactor": ("none", None),
}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Setup:
    """One model being trained (or held frozen) in a step: the settings memory depends on."""

    dtype: str = "bfloat16"                 # model.dtype
    peft: str = "lora"                      # lora | none (full fine-tuning)
    rank: int = 16
    targets: tuple[str, ...] = ALL_LINEAR   # LoRA target modules
    dropout: float = 0.05                   # LoRA dropout (> 0 saves a mask and a copy)
    dora: bool = False
    bits: int | None = None                 # None | 4 | 8 (bitsandbytes)
    double_quant: bool = True
    optim: str = "adamw_torch"              # resolved optimizer name (no "auto")
    batch: int = 8                          # sequences per micro-batch on one device
    seq: int = 2048                         # tokens per sequence (padded length)
    checkpointing: bool = False
    attn: str = "sdpa"                      # sdpa | eager | flash_attention_2
    padded: bool = True                     # an attention mask is passed (padded batches)
    device: str = "cuda"                    # cuda | cpu (optimizer temporaries differ)
    shards: int = 1                         # FSDP full-shard ranks (1: none)
    replicas: int = 1                       # DDP replicas (> 1: gradient buckets)
    virtual_tokens: int = 0                 # prefix / prompt tuning: virtual tokens


@dataclass
class Parts:
    """Peak memory of a step by part, in bytes; `peak` combines them (see module doc)."""

    weights: float = 0.0
    quant_constants: float = 0.0
    grads: float = 0.0
    optimizer: float = 0.0
    optimizer_temp: float = 0.0
    activations: float = 0.0
    logits: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)   # method extras (reference, ...)
    generation: float = 0.0                 # rollouts' KV cache + logits (PPO, GRPO)
    trainable_params: int = 0
    total_params: int = 0

    @property
    def backward_phase(self) -> float:
        return self.activations + self.logits

    @property
    def step_phase(self) -> float:
        return self.grads + self.optimizer_temp

    @property
    def peak(self) -> float:
        """Allocated bytes at the step's peak (comparable to torch.cuda.max_memory_allocated)."""
        static = self.weights + self.quant_constants + self.optimizer + sum(self.extras.values())
        return static + max(self.backward_phase, self.step_phase, self.generation)

    @property
    def peak_phase(self) -> str:
        phases = {"backward": self.backward_phase, "optimizer step": self.step_phase,
                  "generation": self.generation}
        return max(phases, key=phases.get)


def dtype_bytes(name: str, where: str = "model.dtype") -> int:
    if name not in DTYPE_BYTES:
        raise ConfigError(f"{where} must be one of {sorted(DTYPE_BYTES)}, got {name!r}")
    return DTYPE_BYTES[name]


def lora_targets(targets, shape: ModelShape) -> tuple[str, ...]:
    """Module names LoRA wraps: "all-linear" (peft: every linear but lm_head) or a list."""
    if isinstance(targets, str):
        targets = ALL_LINEAR if targets == "all-linear" else (targets,)
    known = shape.linears()
    bad = [t for t in targets if t not in known]
    if bad:
        raise ConfigError(f"method.lora.target_modules: {bad} are not linear modules of this "
                          f"architecture (known: {sorted(known)}); the estimate cannot count them")
    return tuple(t for t in ALL_LINEAR if t in targets)


def lora_params(shape: ModelShape, setup: Setup) -> int:
    """r x (in + out) per targeted linear per layer, + out per module with DoRA."""
    linears = shape.linears()
    per_layer = sum(setup.rank * (linears[m][0] + linears[m][1]) + (linears[m][1] if setup.dora
                                                                      else 0)
                    for m in setup.targets)
    return shape.layers * per_layer


def weight_bytes(shape: ModelShape, setup: Setup) -> tuple[float, float]:
    """(weights, quantization constants) of the model in memory."""
    p = dtype_bytes(setup.dtype)
    linear = shape.layers * shape.layer_linear_weights()
    rest = shape.total_params() - linear             # embeddings, lm_head, norms, biases
    if setup.bits is None:
        return float(shape.total_params() * p), 0.0
    rest_bytes = rest * 4   # prepare_model_for_kbit_training casts the unquantized ones to fp32
    modules = shape.layers * len(shape.linears())
    if setup.bits == 8:     # int8 weights + one fp32 scale (SCB) per output row
        rows = shape.layers * sum(out for _, out in shape.linears().values())
        return float(linear + rest_bytes), float(rows * 4)
    if setup.bits != 4:
        raise ConfigError(f"method.quantization.bits must be null, 4 or 8, got {setup.bits!r}")
    blocks = linear / BLOCK_4BIT
    if setup.double_quant:  # uint8 absmax per block + fp32 absmax per 256 blocks + code table
        constants = blocks + 4 * blocks / BLOCK_DOUBLE + modules * (256 + 16) * 4
    else:
        constants = 4 * blocks + modules * 16 * 4
    return float(linear / 2 + rest_bytes), float(constants)


def trainable(shape: ModelShape, setup: Setup) -> tuple[int, int]:
    """(trainable parameters, their bytes each)."""
    if setup.peft == "none":
        if setup.bits is not None:
            raise ConfigError("method.peft: full fine-tuning of a quantized base is not possible "
                              "(set method.quantization.bits=null or method.peft=lora)")
        return shape.total_params(), dtype_bytes(setup.dtype)
    if setup.peft in ADAPTERS:   # other peft methods: a frozen base and small fp32 vectors
        return ADAPTERS[setup.peft](shape, setup), 4
    if setup.peft != "lora":
        raise ConfigError(f"method.peft: no memory model for {setup.peft!r} (known: lora, none, "
                          f"{', '.join(ADAPTERS)})")
    # peft upcasts adapters of a 16-bit base to fp32; trl casts them to bf16 on a quantized base
    return lora_params(shape, setup), (2 if setup.bits is not None else 4)


# peft's other adapters (trainable parameters on a frozen base): IA3 scales k, v and the
# down projection's input (Liu et al. 2022; peft's Llama targets); prefix tuning learns
# virtual keys and values for every layer (Li & Liang 2021); prompt tuning virtual input
# embeddings (Lester et al. 2021).
ADAPTERS = {
    "ia3": lambda shape, s: shape.layers * (2 * shape.kv_dim + shape.intermediate),
    "prefix": lambda shape, s: s.virtual_tokens * shape.layers * 2 * shape.kv_dim,
    "prompt": lambda shape, s: s.virtual_tokens * shape.hidden,
}


def optimizer_bytes(params: int, param_bytes: int, setup: Setup) -> tuple[float, float]:
    """(optimizer states, temporaries during optimizer.step) for `params` trainable values."""
    if setup.optim not in OPTIMIZERS:
        raise ConfigError(f"method.train.optim: no memory model for optimizer {setup.optim!r} "
                          f"(known: {sorted(OPTIMIZERS)})")
    kind, temp = OPTIMIZERS[setup.optim]
    state = {"param": param_bytes, "fp32": 4, "8bit": 1 + 4 / BLOCK_8BIT_OPTIM, "none": 0}[kind]
    states = 2 * params * state
    # torch AdamW: foreach (CUDA) makes one state-sized temporary for all parameters (the sqrt of
    # exp_avg_sq); the per-tensor loop on CPU makes two of the largest tensor only (handled by
    # the caller through `largest`). Per-tensor fused kernels make none.
    temporaries = params * state if (temp == "foreach" and setup.device == "cuda") else 0.0
    return float(states / setup.shards), float(temporaries / setup.shards)


def act_bytes(setup: Setup) -> int:
    """Bytes per activation value: the model dtype; fp32 on a quantized base (prepare_model_for_
    kbit_training upcasts the embeddings, so the residual stream is fp32)."""
    return 4 if setup.bits is not None else dtype_bytes(setup.dtype)


def layer_activation_bytes(shape: ModelShape, setup: Setup) -> float:
    """Bytes autograd saves per token in one decoder layer (see the module doc)."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    a, full = act_bytes(setup), setup.peft == "none"
    lora = set(setup.targets) if setup.peft == "lora" else set()
    total = 2 * (4 * h + (a * h if full else 0))   # two RMSNorms: fp32 input (+ normed, full)
    repeat = shape.kv_heads < shape.heads and (setup.attn == "eager" or setup.padded)
    kv_saved = q if repeat else kv                  # repeat_kv copies for a masked SDPA
    total += a * (q + 2 * kv_saved)                 # RoPE'd q, k and v, saved by attention
    total += a * q + 4 * shape.heads                # attention output and its logsumexp
    if setup.attn == "eager":                       # softmax probabilities (fp32 + a copy)
        total += shape.heads * setup.seq * (4 + (a if a != 4 else 0))
    total += 3 * a * i                              # SwiGLU: gate (silu input), silu, up
    groups = ((h, ("q_proj", "k_proj", "v_proj")), (q, ("o_proj",)),
              (h, ("gate_proj", "up_proj")), (i, ("down_proj",)))
    la = 2 if setup.bits is not None else 4         # adapter dtype: peft casts x to it
    for width, modules in groups:                   # linear inputs kept for gradients
        hit = [m for m in modules if m in lora]
        if full:
            total += a * width
        if hit and setup.dropout > 0:               # per module: dropped copy + bool mask
            total += len(hit) * (la + 1) * width
        elif hit and not full:                      # shared input, or one cast copy each
            total += a * width if la == a else len(hit) * la * width
        total += len(hit) * setup.rank * la         # lora_A outputs
    return float(total)


def activation_bytes(shape: ModelShape, setup: Setup) -> float:
    """Every layer's saved activations for batch x seq tokens (plus the final norm and the
    attention mask); with gradient checkpointing, each layer's input plus one layer."""
    tokens = setup.batch * setup.seq
    a = act_bytes(setup)
    layer = layer_activation_bytes(shape, setup) * tokens
    if setup.checkpointing:
        layers = shape.layers * a * shape.hidden * tokens + layer
    else:
        layers = shape.layers * layer
    final_norm = (4 * shape.hidden + (a * shape.hidden if setup.peft == "none" else 0)) * tokens
    mask = setup.batch * setup.seq * setup.seq if setup.padded else 0   # 4-D bool mask
    dequant = 0.0
    if setup.bits is not None:                      # one layer's weight dequantized at a time
        dequant = max(a_ * b for a_, b in shape.linears().values()) * a
    return float(layers + final_norm + mask + dequant)


def logits_bytes(shape: ModelShape, setup: Setup) -> float:
    """vocab x tokens: the logits (lm_head dtype) + log-softmax + two fp32 gradient buffers."""
    head = 4 if setup.bits is not None else dtype_bytes(setup.dtype)
    return float(setup.batch * setup.seq * shape.vocab * (head + 12))


def train_parts(shape: ModelShape, setup: Setup) -> Parts:
    """Every part of one training step of `setup` on `shape`."""
    setup = _with_targets(shape, setup)
    weights, constants = weight_bytes(shape, setup)
    params, pbytes = trainable(shape, setup)
    states, temp = optimizer_bytes(params, pbytes, setup)
    if setup.device == "cpu" and OPTIMIZERS[setup.optim][1] == "foreach":
        temp = 2.0 * _largest_trainable(shape, setup) * pbytes   # per-tensor AdamW loop
    grads = params * pbytes / setup.shards
    if setup.replicas > 1 and setup.shards == 1:
        grads *= 2                                  # DDP gradient buckets (a second copy)
    extra_weights = 0.0
    if setup.peft != "none":
        extra_weights = params * pbytes             # adapters sit beside the frozen base
    return Parts(weights=(weights + extra_weights) / (setup.shards if setup.peft == "none" else 1),
                 quant_constants=constants, grads=grads, optimizer=states, optimizer_temp=temp,
                 activations=activation_bytes(shape, setup), logits=logits_bytes(shape, setup),
                 trainable_params=params, total_params=shape.total_params() + (
                     params if setup.peft != "none" else 0))


def frozen_bytes(shape: ModelShape, setup: Setup) -> float:
    """A frozen copy of the model (reference, reward): its weights and constants only."""
    weights, constants = weight_bytes(shape, setup)
    return weights + constants


def inference_bytes(shape: ModelShape, setup: Setup, batch: int, seq: int) -> float:
    """A no-grad forward of a frozen copy: its largest live tensors are the logits (fp32 log-
    probabilities for DPO/PPO's reference) and one layer's outputs."""
    a = act_bytes(setup)
    return float(batch * seq * (shape.vocab * (a + 4) + 4 * shape.hidden * a
                                + 3 * shape.intermediate * a))


def kv_cache_bytes(shape: ModelShape, setup: Setup, batch: int, tokens: int) -> float:
    """Generation's KV cache: 2 (K and V) x layers x kv heads x head dim x tokens."""
    return float(2 * shape.layers * shape.kv_dim * batch * tokens * act_bytes(setup))


def _with_targets(shape: ModelShape, setup: Setup) -> Setup:
    return replace(setup, targets=lora_targets(setup.targets, shape))


def _largest_trainable(shape: ModelShape, setup: Setup) -> int:
    if setup.peft in ADAPTERS:
        return ADAPTERS[setup.peft](shape, setup)
    if setup.peft == "none":
        return max(shape.vocab * shape.hidden, *(a * b for a, b in shape.linears().values()))
    linears = shape.linears()
    return max((setup.rank * max(linears[m]) for m in setup.targets), default=0)
