"""The mask predictor of LLaDA: a bidirectional Transformer, LoRA, a KV cache, and the weights loader.

LLaDA (Nie et al. 2025, arXiv 2502.09992), Sec. 2.1-2.2 and App. B.2 (Table 5): the mask
predictor p_theta(. | x_t) is a Transformer *without* a causal mask that reads a partly masked
sequence and predicts every position at once. It takes no time input (the RADD result,
LLaDA Eq. 11). The layers are those of LLaMA: pre-norm RMSNorm, rotary position embeddings
(RoPE, "rotate-half" layout, full precision), SwiGLU MLP, no biases, untied output head.

    python sample.py --model toy --prompt "sudoku 3102200002100320"   # toy, random weights
    python sample.py --model path/to/LLaDA-8B-Instruct --prompt "..."  # the real weights

Module and parameter names follow LLaDA's Hugging Face checkpoint, so loading is a prefix
strip: our `transformer.blocks.3.q_proj.weight` is LLaDA's `model.transformer.blocks.3.q_proj.weight`.
Our own checkpoints are written in that same layout (config.json + model.safetensors); the file
handling (config.json's keys, safetensors headers, tokenizers, the download) is in model_files.py.

Departures from the original modeling code (Feb-2025 revision of modeling_llada.py):
1. The attention mask is honoured: padded key positions are invisible. The original builds
   the bias from `attention_mask` and then never passes it to attention.
2. The forward pass can return logits at selected positions only (`logits_at`), so the
   sampler and the RL log-prob pass never materialise [B, T, V] logits they do not use.
3. An optional KV cache (KVCache) for Fast-dLLM's approximate cached decoding; off by default.

Shapes: B batch, T sequence length, C d_model, H heads, D head dim, V vocabulary.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import model_files
from model_files import PREFIX


# ----------------------------------------------------------------------------- layers

class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps), computed in float32, cast back, then scaled (as LLaDA)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return h.to(x.dtype) * self.weight


def rope_cos_sin(T, head_dim, theta, device):
    """cos, sin of the rotary angles for positions 0..T-1, float32, each (T, D)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): the "rotate-half" layout
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate (B, H, T, D) queries or keys in float32: x*cos + rotate_half(x)*sin."""
    h = x.float()
    h1, h2 = h.chunk(2, dim=-1)
    rotated = torch.cat([-h2, h1], dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


class Block(nn.Module):
    """One LLaMA-style layer without a causal mask: x + Attn(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, cfg):
        super().__init__()
        C, H, Hkv = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
        D = C // H
        self.n_heads, self.n_kv_heads, self.head_dim = H, Hkv, D
        self.attn_norm = RMSNorm(C, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, Hkv * D, bias=False)
        self.v_proj = nn.Linear(C, Hkv * D, bias=False)
        self.attn_out = nn.Linear(H * D, C, bias=False)
        self.ff_norm = RMSNorm(C, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(C, cfg.mlp_hidden, bias=False)  # the gate: silu applies here
        self.up_proj = nn.Linear(C, cfg.mlp_hidden, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden, C, bias=False)

    def attention(self, x, cos, sin, key_mask, kv=None):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)     # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:  # a KVCache's slot for this layer: keys and values of the whole sequence
            k, v = kv(k, v)  # (B, Hkv, T_all, D)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention (LLaDA-8B has none)
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, H, T, D), no causal mask
        return self.attn_out(y.transpose(1, 2).reshape(B, T, C))

    def mlp(self, x):
        return self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))  # SwiGLU

    def forward(self, x, cos, sin, key_mask, kv=None):
        x = x + self.attention(self.attn_norm(x), cos, sin, key_mask, kv)
        return x + self.mlp(self.ff_norm(x))


# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    mlp_hidden: int = 768
    vocab_size: int = 260
    max_seq_len: int = 512
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    mask_id: int = 257         # <|mdm_mask|>
    eos_id: int = 256          # <|endoftext|>, also the padding token
    eot_id: int | None = 258   # <|eot_id|>, end of a chat turn (None where the vocabulary has none)
    tokenizer: str = "bytes"   # "bytes" (the toy tiktoken encoding) or "llada" (tokenizer.json)

    def __post_init__(self):
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into n_heads {self.n_heads} heads of even size, "
                             f"and n_heads into n_kv_heads {self.n_kv_heads} groups")
        for name in ("mask_id", "eos_id", "eot_id"):
            i = getattr(self, name)
            if i is not None and not 0 <= i < self.vocab_size:
                raise ValueError(f"{name} {i} is outside the vocabulary of size {self.vocab_size}")


PRESETS = {
    # ~3.4M parameters, byte-level vocabulary: trains on a 2-core CPU in minutes.
    "toy": ModelConfig(),
    # LLaDA-8B-Instruct exactly (its config.json): 8,015,581,184 parameters.
    "llada-8b": ModelConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden=12288,
                            vocab_size=126464, max_seq_len=4096, rope_theta=500000.0, rms_norm_eps=1e-5,
                            mask_id=126336, eos_id=126081, eot_id=126348, tokenizer="llada"),
}

# 0.9M parameters, byte vocabulary: reproduce.py's toy table (--model repro) and bench.py's accuracy models.
SMALL = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=384)


def get_config(name):
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------- the model

class Transformer(nn.Module):
    """LLaDA's mask predictor. forward((B, T) ids) -> (B, T, V) logits, or (B, K, V) with logits_at."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.gradient_checkpointing = False  # keep only each block's input, recompute the rest in backward
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.d_model),
            blocks=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers)),
            ln_f=RMSNorm(cfg.d_model, cfg.rms_norm_eps),
            ff_out=nn.Linear(cfg.d_model, cfg.vocab_size, bias=False),  # untied output head
        ))
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx, attention_mask=None, logits_at=None, cache=None, start=0):
        """idx (B, T) token ids; attention_mask (B, T), 1 for real tokens and 0 for padding, whose
        keys become invisible; logits_at: the positions to return logits for, a slice or (K,) index
        (same for every row) or a (B, T) bool mask (then the logits are flattened to (N, V)).

        cache (a KVCache, sampling only): an empty cache is filled with every layer's keys and values;
        a filled one makes idx the tokens at positions start..start+T of the cached sequence, whose
        own keys and values replace the cached ones there, and whose queries attend over the whole
        sequence (attention_mask then covers the whole sequence)."""
        B, T = idx.shape
        cfg = self.config
        cos, sin = rope_cos_sin(start + T, cfg.d_model // cfg.n_heads, cfg.rope_theta, idx.device)
        cos, sin = cos[start:], sin[start:]  # (T, D), the angles of positions start..start+T
        key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T_all): True = may attend
        x = self.transformer.wte(idx)  # (B, T, C)
        for i, block in enumerate(self.transformer.blocks):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, key_mask, use_reentrant=False)  # recompute in backward
            else:
                x = block(x, cos, sin, key_mask, None if cache is None else cache.slot(i, start))
        if isinstance(logits_at, torch.Tensor) and logits_at.dtype == torch.bool:
            x = x[logits_at]  # (N, C): the positions where logits_at (B, T) is True
        elif logits_at is not None:
            x = x[:, logits_at]  # (B, K, C): only the positions the caller will read
        return self.transformer.ff_out(self.transformer.ln_f(x))  # (B, T, V), (B, K, V) or (N, V)


class KVCache:
    """Fast-dLLM's block-wise approximate KV cache (arXiv 2505.22618, Sec. 3.2), for sampling.

    A full forward pass stores every layer's keys and values (after RoPE), shape (B, Hkv, T, D).
    A later pass over a span of positions computes that span's keys and values afresh, writes them
    into the cache and attends over the whole cached sequence: the other positions' keys and values
    are those of the last full pass, not of the current tokens (the approximation). The sampler
    refills the cache at the start of each block (sample.generate, cache="prefix" or "dual")."""

    def __init__(self):
        self.layers = []  # [(k, v)] per layer

    def rows(self, index):
        """The cache of some rows of the batch (index None: all). A copy: a pass only writes positions
        that every pass recomputes, so its writes need not reach the full cache."""
        if index is None:
            return self
        sub = KVCache()
        sub.layers = [(k[index], v[index]) for k, v in self.layers]
        return sub

    def slot(self, i, start):
        """The function layer i calls with its fresh (k, v) of positions start..start+T."""
        def update(k, v):
            if i == len(self.layers):  # filling: a full pass
                self.layers.append((k, v))
                return k, v
            ck, cv = self.layers[i]
            ck[:, :, start:start + k.shape[2]] = k
            cv[:, :, start:start + v.shape[2]] = v
            return ck, cv
        return update


# ----------------------------------------------------------------------------- LoRA
# Low-rank adapters (Hu et al. 2021), as d1 trains LLaDA-8B: W x + (alpha / r) B A dropout(x), with
# W frozen, A (r, in) random, B (out, r) zero so that the adapted model starts equal to the base.

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")  # d1's RL config


class LoRALinear(nn.Linear):
    """A frozen nn.Linear plus a trainable low-rank update kept in float32. The base weight keeps
    its name (`.weight`), so checkpoints and LLaDA's tensor names are unchanged."""

    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight.requires_grad_(False)
        self.register_parameter("bias", None)
        device = base.weight.device
        self.lora_A = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(r, self.in_features), a=5 ** 0.5).to(device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device, dtype=torch.float32))
        self.scaling, self.dropout, self.enabled = alpha / r, nn.Dropout(dropout), True

    def forward(self, x):
        y = F.linear(x, self.weight)
        if not self.enabled:
            return y
        update = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return y + (self.scaling * update).to(y.dtype)

    def merged_weight(self):
        return (self.weight.float() + self.scaling * self.lora_B @ self.lora_A).to(self.weight.dtype)


def apply_lora(model, r, alpha, dropout=0.0, targets=LORA_TARGETS, seed=0):
    """Freeze the model and wrap the target projections of every block with LoRA adapters
    (A drawn from a seeded CPU generator, so the same seed gives the same adapters anywhere)."""
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for block in model.transformer.blocks:
            for name in targets:
                setattr(block, name, LoRALinear(getattr(block, name), r, alpha, dropout))
    return model


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


class lora_disabled:
    """Context manager: the adapters are switched off inside, so the model is its base (d1's reference
    policy pi_ref, without a second copy of the weights)."""

    def __init__(self, model):
        self.layers = lora_layers(model)

    def __enter__(self):
        for m in self.layers:
            m.enabled = False

    def __exit__(self, *exc):
        for m in self.layers:
            m.enabled = True


def merge_lora(model):
    """Fold every adapter into its base weight and drop the adapters: a plain model again."""
    for block in model.transformer.blocks:
        for name, m in list(block.named_children()):
            if isinstance(m, LoRALinear):
                plain = nn.Linear(m.in_features, m.out_features, bias=False, device=m.weight.device,
                                  dtype=m.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(m.merged_weight())
                setattr(block, name, plain)
    return model


def prepare_for_training(model, lora_r=0, lora_alpha=16.0, lora_dropout=0.0, lora_targets=LORA_TARGETS,
                         grad_ckpt=False, seed=0):
    """LoRA adapters when lora_r > 0 (else every parameter trains) and per-block gradient
    checkpointing; returns the parameters the optimiser should update."""
    if lora_r:
        targets = lora_targets.split(",") if isinstance(lora_targets, str) else lora_targets
        apply_lora(model, lora_r, lora_alpha, lora_dropout, targets, seed=seed)
    model.gradient_checkpointing = grad_ckpt
    return [p for p in model.parameters() if p.requires_grad]


def base_state(model):
    """{LLaDA tensor name: tensor} of the model as a plain checkpoint, adapters merged in."""
    merged = {f"{n}.weight": m.merged_weight() for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    return {PREFIX + n: merged.get(n, p).detach().contiguous().cpu()
            for n, p in model.named_parameters() if "lora_" not in n}


# ----------------------------------------------------------------------------- building and loading

def default_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def build(name_or_config, device="cpu", dtype=None, seed=0):
    """A freshly initialised model of a preset name or a ModelConfig (seeded, reproducible)."""
    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(cfg)
    return model.to(device=device, dtype=dtype)


def read_config(folder):
    """The ModelConfig of a checkpoint folder (its config.json), reading no weights."""
    return ModelConfig(**model_files.read_config(folder))


def load(path, device="cpu", dtype=None):
    """A Transformer from a checkpoint folder in LLaDA's Hugging Face layout, filled file by file.

    Every name, shape and dtype is checked against the config before any weight is read. The module
    is built on the meta device and allocated once in the target dtype (default: the dtype the
    weights are stored in); each tensor's bytes are read from the file straight into its parameter,
    so peak host memory is the weights themselves (plus one tensor when loading onto a GPU)."""
    with torch.device("meta"):
        model = Transformer(read_config(path))
    shapes = {PREFIX + n: p.shape for n, p in model.named_parameters()}
    headers, stored = model_files.read_headers(path, shapes)
    model = model.to(dtype=dtype or stored).to_empty(device=device)
    params = {PREFIX + n: p for n, p in model.named_parameters()}
    for file in sorted(headers):
        model_files.fill_from_file(file, *headers[file], params)
    return model.eval()


def save(model, path, tokenizer=None):
    """Write the model into the folder `path` as a LLaDA checkpoint (config.json, model.safetensors,
    and from the folder the tokenizer was read from its tokenizer files and LLaDA's remote code; see
    model_files.write_folder), LoRA adapters merged into the weights."""
    model_files.write_folder(path, base_state(model), asdict(model.config), tokenizer)


def model_folder(name):
    """The checkpoint folder of --model `name`: None for a preset without published weights (toy,
    freshly initialised), the resolved folder for llada-8b, else the folder itself, which must exist."""
    if name in PRESETS and name not in model_files.HF_REPOS:
        return None
    folder = model_files.resolve_checkpoint(name) if name in model_files.HF_REPOS else Path(name)
    if not folder.exists():
        raise FileNotFoundError(f"--model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing folder")
    return folder


def config_and_tokenizer(name):
    """(ModelConfig, tokenizer) of a preset or checkpoint folder, reading no weights: what a training
    script needs to check its settings and data before it loads the model."""
    folder = model_folder(name)
    cfg = get_config(name) if folder is None else read_config(folder)
    return cfg, model_files.get_tokenizer(cfg.tokenizer, folder)


def load_model(name, device="cpu", dtype=None, seed=0):
    """(model, tokenizer) from a preset name or a checkpoint folder. A preset without published
    weights (toy) is freshly initialised; llada-8b is resolved to its checkpoint folder."""
    folder = model_folder(name)
    net = build(name, device=device, dtype=dtype, seed=seed) if folder is None else load(folder, device, dtype)
    return net, model_files.get_tokenizer(net.config.tokenizer, folder)
