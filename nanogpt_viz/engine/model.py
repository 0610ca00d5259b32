"""GPT-2, defined the way nanoGPT defines it.

Parameter names and shapes match nanoGPT's `model.py` one for one, so a state
dict moves between the two programs unchanged (see checkpoint.py). Differences
are only in what `forward` hands back (a `GPTOutput`: logits, loss and the
per-token loss, which the GUI paints over the batch grid) and in how training
may compute: the engine options are constructor arguments,

    GPT(config, fused_loss=False, gelu="torch", residual_dtype=None)

none of which changes a parameter name or shape (nanoGPT's model.py loads the
state dict whatever they are).

Shapes: B batch rows, T sequence length (<= block_size), C n_embd,
V vocab_size, nh n_head, hs head size (C // nh).
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt_viz.config import MODEL_PRESETS, ModelConfig
from nanogpt_viz.engine.kernels.fused_loss import linear_cross_entropy
from nanogpt_viz.engine.kernels.gelu import gelu as gelu_op

_CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig))

# The MLP's GELU: "torch" is nn.GELU() (inductor fuses it and recomputes it in backward), "kept" is
# kernels/gelu.py's op (the same exact GELU; Triton kernels on CUDA, its output kept for backward).
GELU_OPS = ("torch", "kept")
_RESIDUAL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class GPTOutput(NamedTuple):
    """What GPT.forward returns, always this shape; a field is None when it was not computed.

    logits:    (B, T, V) with targets (None with return_logits=False), (B, 1, V) without (the last
               position only, for generation); in the compute dtype (bf16 under autocast)
    loss:      scalar float32 with targets (mean over non-ignored targets, or their sum), else None
    per_token: (B, T) float32 cross-entropy with targets (0 at ignored positions), else None
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None
    per_token: torch.Tensor | None


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (nn.LayerNorm could not before torch 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # one matmul produces q, k and v for every head at once
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # No causal-mask buffer: scaled_dot_product_attention masks by itself
        # (is_causal=True). nanoGPT only registers `attn.bias` on torch < 2.0.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # split channels into heads and move the head axis next to batch
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        # each position attends to itself and earlier positions only
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, gelu: str = "torch"):
        super().__init__()
        if gelu not in GELU_OPS:
            raise ValueError(f"gelu must be one of {', '.join(GELU_OPS)} (got {gelu!r})")
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.keep_gelu = gelu == "kept"  # gelu.py's op instead of nn.GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        x = gelu_op(h) if self.keep_gelu else self.gelu(h)  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig, gelu: str = "torch"):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config, gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


def _as_model_config(config: Any) -> ModelConfig:
    """Accept a ModelConfig, a dict, or anything with GPTConfig's attributes (nanoGPT's GPTConfig)."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, dict):
        missing = [n for n in _CONFIG_FIELDS if n not in config]
        if missing:
            raise ValueError(f"The model configuration is missing {', '.join(missing)}.")
        return ModelConfig(**{n: config[n] for n in _CONFIG_FIELDS})
    try:
        return ModelConfig(**{n: getattr(config, n) for n in _CONFIG_FIELDS})
    except AttributeError as e:
        raise TypeError(f"GPT needs a ModelConfig (or an object with {', '.join(_CONFIG_FIELDS)}); "
                        f"got {type(config).__name__}.") from e


class GPT(nn.Module):
    """GPT-2 (nanoGPT's). The keyword options choose how training computes, never the parameters:

    fused_loss: with targets and return_logits=False, the output layer and the per-token cross-entropy as
        one op (kernels/fused_loss.py: a Triton row kernel on CUDA, torch operations elsewhere); same
        numbers as the plain path, without a (B*T, V) logits matrix kept apart from its gradient.
    gelu: "torch" (nn.GELU()) or "kept" (kernels/gelu.py: exact GELU with its output kept for backward;
        Triton kernels on CUDA). Both compute nanoGPT's exact (erf) GELU.
    residual_dtype: carry the residual stream between blocks in this dtype (torch.bfloat16 or
        "bfloat16" is what llm.c does); None keeps what the embeddings give (float32), as nanoGPT.
    """

    def __init__(self, config: ModelConfig, *, fused_loss: bool = False, gelu: str = "torch",
                 residual_dtype: torch.dtype | str | None = None):
        super().__init__()
        config = _as_model_config(config)
        problems = config.problems()
        if problems:
            raise ValueError("Invalid model configuration: " + "; ".join(problems) + ".")
        if gelu not in GELU_OPS:
            raise ValueError(f"gelu must be one of {', '.join(GELU_OPS)} (got {gelu!r})")
        if isinstance(residual_dtype, str):
            if residual_dtype not in _RESIDUAL_DTYPES:
                raise ValueError(f"residual_dtype must be one of {', '.join(_RESIDUAL_DTYPES)} or None "
                                 f"(got {residual_dtype!r})")
            residual_dtype = _RESIDUAL_DTYPES[residual_dtype]
        self.config = config
        self.fused_loss = bool(fused_loss)
        self.gelu = gelu
        self.residual_dtype: torch.dtype | None = residual_dtype

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),   # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),   # learned position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, gelu) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the input embedding and the output
        # projection are one matrix. Both names stay in state_dict (as in nanoGPT),
        # pointing at the same storage.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream, since
        # each of the 2 * n_layer of them adds to its variance.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def options(self) -> dict[str, Any]:
        """The engine options this model was built with (the constructor's keyword arguments)."""
        return {"fused_loss": self.fused_loss, "gelu": self.gelu, "residual_dtype": self.residual_dtype}

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. The tied wte/lm_head matrix counts once (parameters() dedups it).

        non_embedding drops the position embeddings, as nanoGPT does; the token
        embeddings stay because they double as the output layer's weights.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                reduction: str = "mean", return_logits: bool = True) -> GPTOutput:
        """Run the model; always a GPTOutput(logits, loss, per_token), None where not computed.

        idx: (B, T) int64 token ids, T <= block_size.

        targets None (inference):
            GPTOutput(logits (B, 1, V) for the last position only, None, None).
        targets given, (B, T) int64, -1 marks positions to ignore:
            logits    (B, T, V) in the compute dtype (bf16 under autocast)
            per_token (B, T) float32 cross-entropy, 0 at ignored positions
            loss      scalar float32: per_token averaged over non-ignored
                      positions (reduction="mean", what nanoGPT returns) or
                      summed (reduction="sum")
            return_logits=False gives None in place of the logits: training does not
            need them, and under torch.compile the (B, T, V) float32 copy for the
            cross-entropy then never has to be written to memory.
        """
        device = idx.device
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"Cannot forward a sequence of length {T}: the model's block size "
                             f"(context length) is only {self.config.block_size}.")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum' (got {reduction!r}).")
        pos = torch.arange(0, T, dtype=torch.long, device=device)  # (T,)

        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        if self.residual_dtype is not None:
            x = x.to(self.residual_dtype)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)

        if targets is None:
            # Generation only needs the next-token distribution; skipping the
            # other T-1 positions saves a (B, T, V) matmul.
            logits = self.lm_head(x[:, [-1], :])  # (B, 1, V); the list index keeps the T axis
            return GPTOutput(logits, None, None)

        if self.fused_loss and not return_logits:
            # the same numbers without the (B*T, V) logits kept apart from their gradient
            # (fused_loss.py); the matmul runs in the autocast dtype, as lm_head would
            dev = x.device.type
            dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
            per_token = linear_cross_entropy(x.reshape(B * T, -1).to(dt), self.lm_head.weight.to(dt),
                                             targets.reshape(-1)).view(B, T)  # (B, T) float32
            logits = None
        else:
            logits = self.lm_head(x)  # (B, T, V)
            # Cross-entropy in float32 even under bf16/fp16 autocast: the log-softmax
            # over 50k classes loses too much precision in half types.
            per_token = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                ignore_index=-1, reduction="none",
            ).view(B, T)  # (B, T) float32
        if reduction == "sum":
            loss = per_token.sum()
        else:
            # mean over real targets, which is what reduction='mean' would give
            n_real = (targets != -1).sum()
            loss = per_token.sum() / n_real  # nan when every target is ignored, as in F.cross_entropy
        return GPTOutput(logits if return_logits else None, loss, per_token)

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context length (e.g. load GPT-2 at 1024, fine-tune at 256)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"Can only crop the block size down: {block_size} is not in "
                             f"1..{self.config.block_size}.")
        self.config = self.config.with_(block_size=block_size)
        with torch.no_grad():
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].clone())
        self.transformer.wpe.num_embeddings = block_size

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float], device_type: str) -> torch.optim.AdamW:
        """nanoGPT's AdamW, the one optimizer builder of the project (the trainer uses it too).

        Two groups, in this order: every parameter of dim >= 2 (matmul weights, embeddings) with
        `weight_decay`, the rest (biases, LayerNorm gains) with none; shrinking those towards 0 has no
        regularising meaning. Fused (the whole update in one launch, and `found_inf` honoured on the
        device) wherever torch has the fused kernel for `device_type`.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = {"fused": True} if fused_adamw_available(device_type) else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **extra)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); returns (B, T + max_new_tokens).

        temperature <= 0 means greedy (argmax). Call model.eval() first so
        dropout is off.
        """
        for _ in range(max_new_tokens):
            # the model has only block_size positions: keep the most recent ones
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits = self(idx_cond).logits  # (B, 1, V)
            logits = logits[:, -1, :].float()  # (B, V)
            if temperature <= 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)  # (B, V)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def fused_adamw_available(device_type: str) -> bool:
    """Whether torch's AdamW has its fused kernel for this device type (CUDA; CPU and MPS on newer torch)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device_type in _get_fused_kernels_supported_devices()
    except ImportError:  # pragma: no cover - older torch: nanoGPT's rule
        return device_type == "cuda"


def flops_per_token(cfg: ModelConfig, non_embedding_params: int) -> float:
    """Training FLOPs (forward + backward) per token, PaLM appendix B.

    6N for the matmuls against the weights (2 forward, 4 backward) plus
    12 * L * H * Q * T for attention scores and the weighted sum over the
    context, with T = block_size.
    """
    L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
    return float(6 * non_embedding_params + 12 * L * H * Q * T)


# Dense bf16 ceilings for MFU, by a substring of the device name. Measured: the bf16 matmul rate measured on
# this project's H200 machines (about 790 TFLOP/s, H100 taken as the same chip); datasheet: the vendors'
# H100/H200 SXM bf16 dense figure (989). A100: its datasheet (312, nanoGPT's figure) in both.
PEAK_FLOPS = (("H200", 790e12), ("H100", 790e12), ("A100", 312e12))
DATASHEET_PEAK_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12))


def peak_flops_for(device: str, name: str, datasheet: bool = False) -> float | None:
    """The device's dense bf16 ceiling: the measured one (PEAK_FLOPS) or the datasheet's; None unknown."""
    if device != "cuda":
        return None
    for key, flops in (DATASHEET_PEAK_FLOPS if datasheet else PEAK_FLOPS):
        if key in name:
            return flops
    return None


def estimate_mfu(flops_per_token: float, tokens: float, seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation, the project's one formula: flops per token x tokens / seconds / peak.

    flops_per_token: flops_per_token(config, non-embedding params) (PaLM's count, nanoGPT's estimate_mfu);
    tokens: tokens one device processed in `seconds`; peak_flops: that device's ceiling (peak_flops_for).
    """
    return flops_per_token * tokens / seconds / peak_flops


def build_model(preset_or_config: str | ModelConfig | dict, *, options: dict[str, Any] | None = None,
                **overrides: Any) -> GPT:
    """GPT from a MODEL_PRESETS name, a ModelConfig or a dict, with field overrides; `options` are GPT's
    engine keyword arguments (fused_loss, gelu, residual_dtype).

    build_model("tiny", vocab_size=128, dropout=0.1)
    """
    if isinstance(preset_or_config, str):
        if preset_or_config not in MODEL_PRESETS:
            raise ValueError(f"Unknown model preset {preset_or_config!r}; choose one of "
                             f"{', '.join(MODEL_PRESETS)}.")
        cfg = MODEL_PRESETS[preset_or_config]
    else:
        cfg = _as_model_config(preset_or_config)
    unknown = sorted(set(overrides) - set(_CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"Unknown model setting(s): {', '.join(unknown)}.")
    return GPT(cfg.with_(**overrides), **(options or {}))


__all__ = ["LayerNorm", "CausalSelfAttention", "MLP", "Block", "GPT", "GPTOutput", "GELU_OPS", "flops_per_token",
           "fused_adamw_available", "PEAK_FLOPS", "DATASHEET_PEAK_FLOPS", "peak_flops_for", "estimate_mfu",
           "build_model"]
