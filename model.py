"""The mask predictor of LLaDA: a bidirectional Transformer, its checkpoints and tokenizers.

LLaDA (Nie et al. 2025, arXiv 2502.09992), Sec. 2.1-2.2 and App. B.2 (Table 5): the mask
predictor p_theta(. | x_t) is a Transformer *without* a causal mask that reads a partly masked
sequence and predicts every position at once. It takes no time input (the RADD result,
LLaDA Eq. 11). The layers are those of LLaMA: pre-norm RMSNorm, rotary position embeddings
(RoPE, "rotate-half" layout, full precision), SwiGLU MLP, no biases, untied output head.

    python sample.py --model toy --prompt "sudoku 3102200002100320"   # toy, random weights
    python sample.py --model path/to/LLaDA-8B-Instruct --prompt "..."  # the real weights

Module and parameter names follow LLaDA's Hugging Face checkpoint, so loading is a prefix
strip: our `transformer.blocks.3.q_proj.weight` is LLaDA's `model.transformer.blocks.3.q_proj.weight`.
Our own checkpoints are written in that same layout (config.json + model.safetensors).

Departures from the original modeling code (Feb-2025 revision of modeling_llada.py):
1. The attention mask is honoured: padded key positions are invisible. The original builds
   the bias from `attention_mask` and then never passes it to attention.
2. The forward pass can return logits at selected positions only (`logits_at`), so the
   sampler and the RL log-prob pass never materialise [B, T, V] logits they do not use.
3. An optional KV cache (KVCache) for Fast-dLLM's approximate cached decoding; off by default.

Shapes: B batch, T sequence length, C d_model, H heads, D head dim, V vocabulary.
"""
import argparse
import json
import math
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


def default_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def option(default, help):
    """A dataclass field that parse_config turns into a command-line flag with this help text."""
    return field(default=default, metadata={"help": help})


def preset_of(name):
    """Whose defaults a run of --model `name` takes: the preset itself, or for a checkpoint folder
    "toy" (byte vocabulary) or "llada-8b" (LLaDA's tokenizer), as its config.json says."""
    if name in PRESETS:
        return name
    try:
        return "toy" if json.loads((Path(name) / "config.json").read_text()).get("tokenizer") == "bytes" else "llada-8b"
    except (OSError, ValueError):
        return name


def parse_config(cls, argv=None, description=None, model_defaults=None):
    """A config dataclass from command-line flags, one per field. `--model NAME` is read first, and
    model_defaults[NAME] (a dict) replaces the toy defaults: one knob scales the whole run."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=cls().model)
    name = pre.parse_known_args(argv)[0].model
    defaults = {**asdict(cls()), **(model_defaults or {}).get(preset_of(name), {}), "model": name}
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    toy = cls()
    for f in fields(cls):
        d, kind, helptext = defaults[f.name], type(getattr(toy, f.name)), f.metadata.get("help", "")
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if kind is bool:
            p.add_argument(*flags, dest=f.name, default=d, action=argparse.BooleanOptionalAction, help=helptext)
        else:
            p.add_argument(*flags, dest=f.name, default=d, type=str if kind is type(None) else kind, help=helptext)
    return cls(**vars(p.parse_args(argv)))


def build(name_or_config, device="cpu", dtype=None, seed=0):
    """A freshly initialised model of a preset name or a ModelConfig (seeded, reproducible)."""
    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(cfg)
    return model.to(device=device, dtype=dtype)


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


# ----------------------------------------------------------------------------- checkpoints
# A checkpoint is a folder in LLaDA's Hugging Face layout: config.json, plus model.safetensors
# or shards listed in model.safetensors.index.json, tensor names prefixed with "model.".

PREFIX = "model."
# config.json keys (LLaDA's names) <-> ModelConfig fields
HF_KEYS = dict(d_model="d_model", n_layers="n_layers", n_heads="n_heads", n_kv_heads="n_kv_heads",
               mlp_hidden="mlp_hidden_size", vocab_size="embedding_size", max_seq_len="max_sequence_length",
               rope_theta="rope_theta", rms_norm_eps="rms_norm_eps", mask_id="mask_token_id",
               eos_id="eos_token_id")
# LLaDA config options whose other values this implementation does not build
SUPPORTED = dict(block_type="llama", activation_type="silu", layer_norm_type="rms", rope=True,
                 alibi=False, include_bias=False, include_qkv_bias=False, weight_tying=False,
                 scale_logits=False, input_emb_norm=False, attention_layer_norm=False)


class CheckpointError(ValueError):
    pass


def config_from_hf(d, folder=None):
    """ModelConfig from a LLaDA config.json dict (and the folder's tokenizer_config.json, if any)."""
    for key, want in SUPPORTED.items():
        if key in d and d[key] != want:
            raise CheckpointError(f"config.json sets {key} = {d[key]!r}; this implementation supports only {want!r}")
    d = dict(d)
    d.setdefault("embedding_size", d.get("vocab_size"))
    d.setdefault("n_kv_heads", d.get("n_heads"))
    missing = [hf for hf in HF_KEYS.values() if d.get(hf) is None]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}")
    kw = {ours: d[hf] for ours, hf in HF_KEYS.items()}
    kw["eot_id"] = d.get("eot_token_id", special_tokens(folder).get("<|eot_id|>"))
    kw["tokenizer"] = d.get("tokenizer", "llada")
    return ModelConfig(**kw)


def config_to_hf(cfg):
    d = {hf: getattr(cfg, ours) for ours, hf in HF_KEYS.items()}
    d.update(SUPPORTED, model_type="llada", vocab_size=cfg.vocab_size, pad_token_id=cfg.eos_id,
             eot_token_id=cfg.eot_id, tokenizer=cfg.tokenizer)
    return d


def special_tokens(folder):
    """{name: id} of the special tokens in a folder's tokenizer_config.json ({} without one)."""
    path = folder and Path(folder) / "tokenizer_config.json"
    if not path or not path.is_file():
        return {}
    added = json.loads(path.read_text()).get("added_tokens_decoder", {})
    return {t["content"]: int(i) for i, t in added.items() if t.get("special", True)}


def read_config(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    path = folder / "config.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return config_from_hf(d, folder)


SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def read_header(path):
    """The JSON header of a safetensors file ({name: {dtype, shape, data_offsets}}) and where its data starts."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        for name, info in header.items():
            info["dtype"], info["shape"], info["data_offsets"]  # every entry has all three
        return header, 8 + n
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def weight_files(folder):
    """{tensor name: shard path} from model.safetensors.index.json, or every name of model.safetensors."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (weight_map): {e}") from None
        shards = {name: folder / shard for name, shard in weight_map.items()}
        absent = sorted({str(p.name) for p in shards.values() if not p.is_file()})
        if absent:
            raise CheckpointError(f"{index} lists shards that are not in the folder: {', '.join(absent)}")
        return shards
    single = folder / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{folder} has neither model.safetensors nor model.safetensors.index.json")
    return {name: single for name in read_header(single)[0]}


def _names(names, most=8):
    names = sorted(names)
    return ", ".join(names[:most]) + (f" ... ({len(names)} in all)" if len(names) > most else "")


def check_tensor_names(model, stored):
    """Fail before reading any weight if the checkpoint's names do not match the module's."""
    expected = {PREFIX + n for n, _ in model.named_parameters()}
    missing, unexpected = expected - set(stored), set(stored) - expected
    if missing or unexpected:
        parts = [f"missing tensors: {_names(missing)}"] if missing else []
        parts += [f"unexpected tensors: {_names(unexpected)}"] if unexpected else []
        raise CheckpointError("checkpoint does not match the config: " + "; ".join(parts))


def load(path, device="cpu", dtype=None):
    """A Transformer from a checkpoint folder (LLaDA HF layout), filled shard by shard.

    Every name, shape and dtype is checked against the config before any weight is read. The module
    is built on the meta device and allocated once in the target dtype (default: the dtype the
    weights are stored in); each tensor's bytes are read from the file straight into its parameter,
    so peak host memory is the weights themselves (plus one tensor when loading onto a GPU)."""
    cfg = read_config(path)
    with torch.device("meta"):
        model = Transformer(cfg)
    shards = weight_files(path)
    check_tensor_names(model, shards)
    headers = {shard: read_header(shard) for shard in set(shards.values())}
    for shard, (header, _) in headers.items():
        for name, info in header.items():
            check_stored_tensor(name, info, shard, model)
    if dtype is None:
        name, shard = next(iter(shards.items()))
        dtype = SAFETENSORS_DTYPES[headers[shard][0][name]["dtype"]]
    model = model.to(dtype=dtype).to_empty(device=device)
    params = dict(model.named_parameters())
    for shard in sorted(headers):
        fill_from_shard(shard, *headers[shard], params)
    return model.eval()


def check_stored_tensor(name, info, shard, model):
    p = model.get_parameter(name[len(PREFIX):])
    if tuple(info["shape"]) != tuple(p.shape):
        raise CheckpointError(f"tensor {name} in {shard.name} has shape {tuple(info['shape'])}, "
                              f"the config needs {tuple(p.shape)}")
    if info["dtype"] not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"tensor {name} in {shard.name} has dtype {info['dtype']}, which is not a float type")


@torch.no_grad()
def fill_from_shard(path, header, data_start, params):
    """Read each tensor of one safetensors file into its parameter: directly into the parameter's
    memory when it is on the CPU in the stored dtype, else through one temporary tensor."""
    with open(path, "rb") as fh:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            p = params[name[len(PREFIX):]]
            begin, end = info["data_offsets"]
            stored = SAFETENSORS_DTYPES[info["dtype"]]
            fh.seek(data_start + begin)
            direct = p.device.type == "cpu" and p.dtype == stored and p.is_contiguous()
            buf = p.view(-1).view(torch.uint8).numpy() if direct else bytearray(end - begin)
            if fh.readinto(buf) != end - begin:
                raise CheckpointError(f"{path} is truncated: tensor {name} is incomplete")
            if not direct:
                p.copy_(torch.frombuffer(buf, dtype=stored).view(p.shape))


def save(model, path, tokenizer=None):
    """Write config.json and model.safetensors (LLaDA names) into the folder `path`, atomically, and
    the tokenizer's files (LLaDA's tokenizer.json ...) so that the folder is a whole checkpoint."""
    import shutil
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = base_state(model)  # LoRA adapters, if any, are merged into the saved weights
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path / "model.safetensors")
    tmp = path / "config.json.tmp"
    tmp.write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    os.replace(tmp, path / "config.json")
    for f in getattr(tokenizer, "files", []):
        if Path(f).resolve().parent != path.resolve():
            shutil.copy(f, path / Path(f).name)


HF_REPOS = {"llada-8b": "GSAI-ML/LLaDA-8B-Instruct"}  # presets with published weights
WEIGHT_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


def hf_cache_snapshot(repo):
    """The folder of `repo` in the local Hugging Face cache (HF_HUB_CACHE, HF_HOME), or None."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = os.environ.get("HF_HUB_CACHE") or home / "hub"
    root = Path(hub) / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / "main"
    candidates = [root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    candidates += sorted((root / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if (root / "snapshots").is_dir() else []
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def resolve_checkpoint(name):
    """The checkpoint folder for a preset with published weights: the Hugging Face cache, else a
    download through huggingface_hub (optional dependency), else an error that says what to do."""
    repo = HF_REPOS[name]
    cached = hf_cache_snapshot(repo)
    if cached:
        return cached
    how = (f"download {repo} (about 16 GB), e.g. `huggingface-cli download {repo} --local-dir LLaDA-8B-Instruct`, "
           f"and pass --model path/to/LLaDA-8B-Instruct")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"--model {name} needs the weights of {repo}: they are not in the Hugging Face cache "
                                f"and huggingface_hub is not installed. Either `pip install huggingface_hub` and run "
                                f"again (it downloads them), or {how}") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=WEIGHT_FILES))
    except Exception as e:  # network, authentication, disk: say which, and the way around it
        raise FileNotFoundError(f"--model {name}: downloading {repo} failed ({type(e).__name__}: {e}). "
                                f"Alternatively {how}") from None


def model_folder(name):
    """The checkpoint folder of --model `name`: None for a preset without published weights (toy,
    freshly initialised), the resolved folder for llada-8b, else the folder itself, which must exist."""
    if name in PRESETS and name not in HF_REPOS:
        return None
    folder = resolve_checkpoint(name) if name in HF_REPOS else Path(name)
    if not folder.exists():
        raise FileNotFoundError(f"--model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing folder")
    return folder


def load_model(name, device="cpu", dtype=None, seed=0):
    """(model, tokenizer) from a preset name or a checkpoint folder. A preset without published
    weights (toy) is freshly initialised; llada-8b is resolved to its checkpoint folder."""
    folder = model_folder(name)
    if folder is None:
        net = build(name, device=device, dtype=dtype, seed=seed)
        return net, get_tokenizer(net.config)
    net = load(folder, device=device, dtype=dtype)
    return net, get_tokenizer(net.config, folder)


def config_and_tokenizer(name):
    """(ModelConfig, tokenizer) of a preset or checkpoint folder, reading no weights: what a training
    script needs to check its settings and data before it loads the model."""
    folder = model_folder(name)
    cfg = get_config(name) if folder is None else read_config(folder)
    return cfg, get_tokenizer(cfg, folder)


# ----------------------------------------------------------------------------- tokenizers

BYTE_SPECIALS = {"<|endoftext|>": 256, "<|mdm_mask|>": 257, "<|eot_id|>": 258, "<|startoftext|>": 259}


class Tokenizer:
    """encode / decode with named special tokens; decode stops at end-of-text or end-of-turn."""

    def __init__(self, encode, decode_ids, special, chat_template=None, files=()):
        self._encode, self._decode_ids, self.special = encode, decode_ids, special
        self.chat_template = chat_template
        self.files = list(files)  # tokenizer files that a checkpoint of this model carries along
        self.mask_id = special["<|mdm_mask|>"]
        self.eos_id = special["<|endoftext|>"]
        self.eot_id = special.get("<|eot_id|>")

    def encode(self, text):
        return self._encode(text)

    def chat(self, content):
        """A user turn rendered with the model's chat template (the toy model has none)."""
        return self.chat_template.format(content=content.strip()) if self.chat_template else content

    def decode(self, ids):
        ids = list(ids)
        stops = [i for i, t in enumerate(ids) if t in (self.eos_id, self.eot_id)]
        ids = ids[:stops[0]] if stops else ids
        specials = set(self.special.values())
        return self._decode_ids([t for t in ids if t not in specials])


def byte_tokenizer():
    """The toy tokenizer: a tiktoken Encoding built locally, one token per byte plus specials."""
    import tiktoken
    enc = tiktoken.Encoding(name="d1-toy-bytes", pat_str=r"[\s\S]",
                            mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens=BYTE_SPECIALS)
    return Tokenizer(lambda s: enc.encode(s, allowed_special="all"),
                     lambda ids: enc.decode(ids, errors="replace"), dict(BYTE_SPECIALS))


# LLaDA-8B-Instruct's chat template (tokenizer_config.json) for one user turn, generation prompt added
LLADA_CHAT = ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")


def hf_tokenizer(folder):
    """LLaDA's tokenizer from tokenizer.json (the `tokenizers` library); special tokens by name from
    tokenizer_config.json (else from tokenizer.json's added tokens)."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise ImportError("LLaDA's tokenizer needs the tokenizers package: pip install tokenizers") from None
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: LLaDA checkpoints ship their tokenizer.json")
    tok = HFTokenizer.from_file(str(path))
    special = special_tokens(folder) or {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for name in ("<|mdm_mask|>", "<|endoftext|>"):
        if name not in special:
            raise ValueError(f"{folder} names no special token {name}")
    files = [folder / f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")]
    return Tokenizer(lambda s: tok.encode(s, add_special_tokens=False).ids,
                     lambda ids: tok.decode(ids, skip_special_tokens=True), special, LLADA_CHAT,
                     files=[f for f in files if f.is_file()])


def get_tokenizer(cfg, folder=None):
    if cfg.tokenizer == "bytes":
        return byte_tokenizer()
    if folder is None:
        raise ValueError("LLaDA's tokenizer is read from a checkpoint folder (tokenizer.json)")
    return hf_tokenizer(folder)


# ----------------------------------------------------------------------------- training utilities
# What sft.py and diffu_grpo.py share around their loops: several processes (torchrun), resumable
# checkpoints, Ctrl-C. In a plain `python` run there is no process group, and every helper below
# that communicates returns at once without calling torch.distributed.
#
# Data parallelism is written out by hand rather than with torch's DistributedDataParallel wrapper:
# each process computes the loss of its share of the batch divided by the *whole* batch's normaliser
# (SFT's mean over all sequences, diffu-GRPO's answer-token count of all rollouts), so the gradients
# must be summed over processes, not averaged as DDP does. One all_reduce per trainable tensor after
# the last micro-batch also needs no no_sync() for micro-batching, works unchanged with LoRA (only
# the adapters have gradients), and leaves the model unwrapped for model.save and the adapters-off
# reference policy. What it gives up is DDP's overlap of communication with the backward pass.

def init_distributed(device):
    """Join the process group when torchrun started this process (WORLD_SIZE > 1): NCCL on CUDA, one
    GPU per process (cuda:LOCAL_RANK), gloo on CPU. Returns (rank, number of processes, device)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1, device
    dist = torch.distributed
    kind = torch.device(device).type
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"torchrun runs on cuda (NCCL) or cpu (gloo), not on {device}")
    if kind == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def close_distributed():
    if _distributed():
        torch.distributed.destroy_process_group()


def rank_world():
    """(rank of this process, number of processes): (0, 1) in a plain run."""
    if not _distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shard(n, rank, world):
    """This process's rows of a batch of n: contiguous shares that differ by at most one row and
    together make the whole batch, in order."""
    return slice(rank * n // world, (rank + 1) * n // world)


def all_reduce_sum(values):
    """[sum over processes of each number] (float64); the numbers themselves in a plain run."""
    if not _distributed():
        return list(values)
    dist = torch.distributed
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_gather(obj):
    """[obj of rank 0, obj of rank 1, ...] of a small picklable object (sizes, rewards, RNG states);
    [obj] in a plain run."""
    if not _distributed():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_grads(params):
    """Sum the gradients of params over processes, in place. Each process's loss is its share of the
    whole batch's loss, so the sum is the gradient one process would get on the whole batch."""
    if not _distributed():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)


def apply_gradients(opt, params, grad_clip):
    """The optimiser step after the backward pass(es): gradients summed over processes, clipped to
    grad_clip by norm, and a non-finite norm stopped before it reaches the weights."""
    all_reduce_grads(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip).item()
    if not math.isfinite(grad_norm):
        raise FloatingPointError(f"gradient norm is {grad_norm}")
    opt.step()


def check_prompt_room(prompts, room, flag, max_seq_len, which):
    """Fail before any work when the longest of these prompts (token lists) plus `room` answer tokens,
    set by `flag`, passes the model's maximum sequence length."""
    longest = max((len(p) for p in prompts), default=0)
    if longest + room > max_seq_len:
        raise ValueError(f"the longest {which} prompt has {longest} tokens, and with {flag} {room} its sequence "
                         f"passes the model's maximum length {max_seq_len}: lower {flag}, or leave out prompts "
                         f"longer than {max_seq_len - room} tokens")


class StopOnCtrlC:
    """Context manager around a training loop: the first Ctrl-C (SIGINT) only sets a flag, so that the
    loop finishes the step in progress, writes a checkpoint and stops; a second one interrupts at once.
    Stopping in the middle of a step would leave the weights between two optimiser steps (diffu-GRPO
    takes mu per step), a state that no checkpoint could continue exactly."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        print("\nCtrl-C: stopping after this step, with a checkpoint (Ctrl-C again stops at once)", file=sys.stderr,
              flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def stop(self):
        """Whether to stop now: Ctrl-C reached this process or, under torchrun, any process (all agree)."""
        return all_reduce_sum([float(self.requested)])[0] > 0

    def after_step(self, step, last, save_every, checkpoint):
        """End of a training step: checkpoint(step) every save_every steps, at the last step and on
        Ctrl-C; then, on Ctrl-C, stop with a KeyboardInterrupt that says where the checkpoint is."""
        stop = self.stop()
        if stop or step == last or (save_every and step % save_every == 0):
            path = checkpoint(step)
        if stop:
            raise KeyboardInterrupt(f"stopped by Ctrl-C after step {step}; checkpoint in {path}, "
                                    f"continue with --resume")


def not_finite(error, step, out):
    """The FloatingPointError of a non-finite loss or gradient: it names the step and the last good checkpoint."""
    last = latest_checkpoint(out) or "none (none written yet)"
    return FloatingPointError(f"{error} at step {step}; stopped without saving, the last good checkpoint is {last}")


def run_command(run, out):
    """A training script's main: run(), with configuration and data mistakes and a non-finite loss as
    one `error: ...` line, Ctrl-C as exit status 130 (after its checkpoint), the process group closed."""
    try:
        run()
    except (ValueError, FileNotFoundError, ImportError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else f"interrupted; the last checkpoint in {out} is kept", file=sys.stderr)
        raise SystemExit(130)
    finally:
        close_distributed()


# Checkpoints: out/checkpoint-NNNNNN/ beside the model folder's own files, the newest one kept.
#   run.json               step, the run's settings, the model's config, metrics, number of processes
#   trainable.safetensors  the trained parameters (with LoRA: only the adapters)
#   state.pt               optimizer state and every process's RNG states (uint8 tensors), read back
#                          with torch.load(weights_only=True): loading a checkpoint cannot run code
CHECKPOINT = "checkpoint-"


def rng_states(generators):
    """{name: state} of the given torch.Generators, of torch's global RNG (LoRA dropout) and, where
    CUDA is in use, of its global RNG: uint8 tensors."""
    states = {name: g.get_state() for name, g in generators.items()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states, generators):
    for name, g in generators.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"])


def latest_checkpoint(out):
    """The newest complete checkpoint folder in out, or None (a .tmp folder is an unfinished save)."""
    done = [p for p in Path(out).glob(CHECKPOINT + "*") if p.name[len(CHECKPOINT):].isdigit()]
    return max(done, key=lambda p: int(p.name[len(CHECKPOINT):]), default=None)


def save_checkpoint(out, step, model, opt, generators, run):
    """Write out/checkpoint-{step} (layout above) and delete the older ones. Atomic: the folder is
    written as checkpoint-{step}.tmp and renamed when whole, and older checkpoints are deleted only
    after that, so a kill during a save leaves the previous checkpoint intact. Every process calls
    this (their RNG states are gathered); rank 0 writes. Returns the folder."""
    import shutil
    from safetensors.torch import save_file
    states = all_gather(rng_states(generators))
    out = Path(out)
    final = out / f"{CHECKPOINT}{step:06d}"
    if rank_world()[0] == 0:
        tmp = out / (final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        trained = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, str(tmp / "trainable.safetensors"))
        torch.save(dict(optimizer=opt.state_dict(), rng=states), tmp / "state.pt")
        (tmp / "run.json").write_text(json.dumps(dict(run, step=step, world_size=len(states)), indent=2) + "\n")
        if final.exists():  # an earlier run's checkpoint of the same step, in a folder this run took over
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in out.glob(CHECKPOINT + "*"):
            if old != final:
                shutil.rmtree(old)
    if _distributed():
        torch.distributed.barrier()  # every process returns once the checkpoint is on disk
    return final


def resume_point(out, config, model_config, may_change):
    """The newest checkpoint of out and its run.json, after checking that it can be continued: written
    with the same settings as `config` (a dict; the names in may_change excepted: steps, evaluation,
    logging), the same model config and the same number of processes. The error says what differs."""
    path = latest_checkpoint(out)
    if path is None:
        raise FileNotFoundError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}NNNNNN) to continue")
    run = json.loads((path / "run.json").read_text())
    now = json.loads(json.dumps(config))  # as run.json stores it
    diff = [f"--{k} {run['config'].get(k)!r} there, {v!r} now" for k, v in now.items()
            if k not in may_change and run["config"].get(k) != v]
    diff += [f"model {k} {run['model_config'].get(k)!r} there, {v!r} now" for k, v in asdict(model_config).items()
             if run["model_config"].get(k) != v]
    if diff:
        raise ValueError(f"--resume: {path} was written by a run with other settings ({'; '.join(diff)}); "
                         f"resume with its settings, or start a new run with another --out")
    world = rank_world()[1]
    if run["world_size"] != world:
        raise ValueError(f"--resume: {path} was written by {run['world_size']} process(es), this run has {world}: "
                         f"resume with torchrun --nproc_per_node {run['world_size']} (or plain python for 1), "
                         f"so that every process gets its own RNG streams back")
    return path, run


def load_checkpoint(path, model, opt, generators):
    """Read a checkpoint into the model's trained parameters, the optimizer and the generators (this
    process's RNG states). Only safetensors and torch.load(weights_only=True): no code can run."""
    from safetensors.torch import load_file
    path = Path(path)
    trained = load_file(str(path / "trainable.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    wrong = sorted(set(trained) ^ set(params)) + [n for n in trained.keys() & params.keys()
                                                  if trained[n].shape != params[n].shape]
    if wrong:
        raise CheckpointError(f"{path} does not hold this run's trained parameters: {_names(wrong)}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(trained[n])
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    set_rng_states(state["rng"][rank_world()[0]], generators)


def open_log(path, keep_until=0):
    """The run's JSONL log, open for appending: a fresh run (keep_until 0) starts it empty; a resumed
    run keeps the records up to its checkpoint's step (later ones are made again)."""
    path = Path(path)
    kept = []
    if keep_until and path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= keep_until]
    path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")
