"""GPU check of LLaDA-8B on ONE GPU: forward throughput, d1's sampler, one full diffu-GRPO step.

    python bench/gpu_8b.py                       # LLaDA-8B, random bf16 weights, on cuda (no download)
    python bench/gpu_8b.py --skip-grpo           # only the forward and sampler phases
    python bench/gpu_8b.py --preset tiny --device cpu   # the same code path in seconds (tests/test_gpu_8b.py)

Budget: under 8 minutes end to end on one H100 80GB (build ~seconds, forward ~seconds, sampler
~tens of seconds, the GRPO step about a minute or two). The weights are random: the figures are speed
and memory, not quality. Phases, each seeded:
1. build   LLaDA-8B on the meta device, allocated in bf16 on the GPU, every parameter initialised
           there (normal std 0.02 for matrices, ones for norm weights).
2. forward no-grad forward of batch 6 x 456 tokens, logits at the last 256 only; median of 5
           timed runs after 2 warm-ups; tokens/s = 6 * 456 / median.
3. generate one sample.generate at d1's settings (prompt 200, batch 6, gen_length 256, 128 steps,
           block 32, temperature 0.9) on the plain model; tokens/s = generated tokens / time.
4. grpo    one outer step of diffu_grpo.train_step with d1's configuration (MODEL_DEFAULTS["llada-8b"],
           one prompt x 6 generations, LoRA r 128 on q, k, v, up, grad checkpointing, mu = 12 inner
           updates, d1's GSM8K and MATH value):
           rollout (with the adapters on), old/reference log-probs, 12 updates. The record is
           train_step's: gen_s (rollout), logp_s (old and reference log-probs), update_s (the
           updates), reward, kl, clip_frac; every phase time reads runs.clock (after torch.cuda.synchronize).
Reading the output: peak_mem_gib is torch.cuda.max_memory_allocated, reset before each phase (None on
a CPU); a phase that runs out of GPU memory reports status "OOM" and the next phase still runs.
The table is printed at the end and written as JSON to --out (default bench/gpu_8b.json).
"""
import argparse
import gc
import json
import random
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffu_grpo  # noqa: E402
import sample  # noqa: E402
from model import PRESETS, ModelConfig, Transformer, prepare_for_training  # noqa: E402
from runs import clock  # noqa: E402

TINY = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=128, vocab_size=320,
                   max_seq_len=512, mask_id=300, eos_id=301, eot_id=302, tokenizer="bytes")
CONFIGS = {"llada-8b": PRESETS["llada-8b"], "tiny": TINY}
# every size of the run; llada-8b's are d1's (per-GPU micro batch 6 = one prompt x 6 generations)
SIZES = {"llada-8b": dict(batch=6, prompt=200, gen_length=256, steps=128, block=32, mu=12, lora_r=128,
                          lora_alpha=64.0, max_id=126000),
         "tiny": dict(batch=2, prompt=8, gen_length=16, steps=8, block=8, mu=2, lora_r=4, lora_alpha=2.0, max_id=256)}
WARMUP, RUNS = 2, 5


# ----------------------------------------------------------------------------- helpers

def reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else None


def guarded(fn, *args):
    """fn(*args) -> dict with status "ok", or {"status": "OOM"} when the GPU runs out of memory."""
    try:
        out = dict(status="ok", **fn(*args))
    except torch.cuda.OutOfMemoryError as e:
        out = dict(status="OOM", error=str(e).splitlines()[0][:200])
    gc.collect()  # the exception (and its frames' tensors) is gone here: give the memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def random_ids(n_rows, n_cols, max_id, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max_id, (n_rows, n_cols), generator=g).to(device)


# ----------------------------------------------------------------------------- phases

def build(cfg, device, seed):
    """The model on the meta device, allocated in bf16 on `device`, initialised there (seeded)."""
    t0 = time.perf_counter()
    with torch.device("meta"):
        net = Transformer(cfg)
    net = net.to(dtype=torch.bfloat16).to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02) if p.ndim >= 2 else p.fill_(1.0)
    clock(device)  # the initialisation's kernels are done
    weights = torch.cuda.memory_allocated() / 2 ** 30 if device.startswith("cuda") else None
    return dict(net=net.eval(), params=sum(p.numel() for p in net.parameters()), build_s=time.perf_counter() - t0,
                weights_gib=weights)


def bench_forward(net, s, device, seed):
    B, T, P = s["batch"], s["prompt"] + s["gen_length"], s["prompt"]
    x = random_ids(B, T, s["max_id"], seed, device)
    reset_peak(device)
    times = []
    with torch.no_grad():
        for i in range(WARMUP + RUNS):
            t0 = clock(device)
            net(x, logits_at=slice(P, T))
            if i >= WARMUP:
                times.append(clock(device) - t0)
    med = statistics.median(times)
    return dict(batch=B, seq_len=T, logits_at=[P, T], median_s=med, tokens_per_s=B * T / med,
                peak_mem_gib=peak_gib(device))


def bench_generate(net, s, device, seed):
    prompt = random_ids(s["batch"], s["prompt"], s["max_id"], seed + 1, device)
    gen = torch.Generator(device).manual_seed(seed)
    reset_peak(device)
    t0 = clock(device)
    with torch.no_grad():
        sample.generate(net, prompt, gen_length=s["gen_length"], steps=s["steps"], block_length=s["block"],
                        temperature=0.9, mask_id=net.config.mask_id, generator=gen)
    dt = clock(device) - t0
    return dict(batch=s["batch"], prompt=s["prompt"], gen_length=s["gen_length"], steps=s["steps"],
                block_length=s["block"], time_s=dt, tokens_per_s=s["batch"] * s["gen_length"] / dt,
                peak_mem_gib=peak_gib(device))


class StandInTokenizer:
    """What train_step reads of a tokenizer: every prompt encodes to the same fixed random ids."""

    def __init__(self, cfg, n, max_id, seed):
        self.mask_id, self.eos_id, self.eot_id = cfg.mask_id, cfg.eos_id, cfg.eot_id
        self.ids = random_ids(1, n, max_id, seed + 2, "cpu")[0].tolist()

    def chat(self, content):
        return content

    def encode(self, text):
        return list(self.ids)

    def decode(self, ids):
        return "bench answer"


class StandInTask:
    """A task whose one reward is a seeded random float, so that the advantages are non-zero."""
    name = "bench"

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def prompt(self, example, style):
        return f"bench prompt {example}"

    def reward_funcs(self, style):
        def random_reward(text, example):
            return self.rng.random()
        return [random_reward]


def grpo_config(s, device, seed):
    d1 = dict(diffu_grpo.MODEL_DEFAULTS["llada-8b"])
    d1.update(prompts_per_step=1, num_generations=s["batch"], micro_batch=s["batch"],
              mu=s["mu"], lora_r=s["lora_r"], lora_alpha=s["lora_alpha"], gen_length=s["gen_length"],
              diffusion_steps=s["steps"], block_length=s["block"], device=device, seed=seed)
    return diffu_grpo.GRPOConfig(**d1)


def bench_grpo(net, s, device, seed):
    cfg = grpo_config(s, device, seed)
    params = prepare_for_training(net, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets,
                                            cfg.grad_ckpt, seed)
    ref = diffu_grpo.reference_policy(net, lora=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    tok, task = StandInTokenizer(net.config, s["prompt"], s["max_id"], seed), StandInTask(seed)
    g, gen = torch.Generator().manual_seed(seed), torch.Generator(device).manual_seed(seed)
    reset_peak(device)
    t0 = clock(device)
    record, _ = diffu_grpo.train_step(net, ref, opt, tok, task, [0], cfg, "chat", g, gen)
    return dict(step_s=clock(device) - t0, peak_mem_gib=peak_gib(device), record=record,
                trainable_params=sum(p.numel() for p in params), config=asdict(cfg))


# ----------------------------------------------------------------------------- report

def fmt(v):
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def progress(t0, phase, r):
    print(f"[{time.perf_counter() - t0:6.1f} s] {phase}: {r['status']}", flush=True)


def table(result):
    rows = [("device", result["gpu"] or result["device"]), ("torch", f"{result['torch']} (CUDA {result['cuda']})")]
    for phase in ("build", "forward", "generate", "grpo"):
        r = result[phase]
        if r["status"] != "ok":
            rows.append((phase, r["status"]))
            continue
        figures = {**r, **r.get("record", {})}
        for k, v in figures.items():
            if k not in ("status", "record", "config", "logits_at"):
                rows.append((f"{phase}.{k}", fmt(v)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llada-8b", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cuda", help="cuda (not cuda:N: train_step autocasts only for 'cuda') or cpu")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "gpu_8b.json"))
    p.add_argument("--skip-grpo", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dev, s, t0 = args.device, SIZES[args.preset], time.perf_counter()
    cuda = dev.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU (for a CPU dry run: --preset tiny --device cpu)")
    result = dict(preset=args.preset, device=dev, gpu=torch.cuda.get_device_name() if cuda else None,
                  torch=torch.__version__, cuda=torch.version.cuda, sizes=s)
    result["build"] = guarded(build, CONFIGS[args.preset], dev, args.seed)
    net = result["build"].pop("net", None)
    skipped = dict(status="skipped" if net is not None else "no model")
    progress(t0, "build", result["build"])
    for phase, fn in (("forward", bench_forward), ("generate", bench_generate), ("grpo", bench_grpo)):
        run = net is not None and not (phase == "grpo" and args.skip_grpo)
        result[phase] = guarded(fn, net, s, dev, args.seed) if run else skipped
        progress(t0, phase, result[phase])
    result["total_s"] = time.perf_counter() - t0
    print(table(result) + f"\ntotal  {result['total_s']:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
