"""Benchmark: each stage against a baseline written the way the reference code computes it, and
the opt-in Fast-dLLM decoding. A benchmark prints figures; it is not a timed test.

    python bench.py                                  # every section: 10 min on 2 cores at a 95 GFLOP/s peak
    python bench.py --presets toy --repeats 5 --no-accuracy
    python bench.py --presets mid-bytes --no-accuracy   # mid with the toy's byte vocabulary
    python bench.py --presets '' --no-accuracy          # the estimators' section alone

For the toy preset (byte vocabulary) and a mid-size model (d_model 512, 8 layers, a 32k vocabulary
like a real tokenizer's) on whatever device is present, it prints the device's float32 matmul peak
(a large matmul in the same run) and, ours against the baseline, medians of --repeats interleaved
runs (the ratio is the median of the per-run ratios):
1. sampler tokens/s, after checking that both give the same tokens at temperature 0; and ours
   with the KV cache (prefix, dual) as a speed figure (on random weights the threshold never fires);
2. masked-SFT tokens/s (forward, backward, AdamW);
3. one diffu-GRPO outer step split into generation, log-probs (old and reference policies) and the
   mu updates, with ours also run with Fast-dLLM rollouts (threshold 0.9, dual cache);
with the achieved FLOP/s of ours as a fraction of the matmul peak and the peak extra tensor memory.
Then (--accuracy) the held-out accuracy of LLaDA's exact sampler against Fast-dLLM decoding on toy
Sudoku and Countdown, with the full forward passes per answer: a small model is trained for each
task the first time (runs/bench/, about a minute each) and reused afterwards. Then (--estimators) the
bias, spread and cost of every log-likelihood estimate of diffu_grpo.ESTIMATORS against LLaDA's
bound computed exactly over every mask of short answers, and against the exact likelihood of the
path the sampler took (d2, TraceRL); `--presets ''` skips the presets.

The baseline does what LLaDA's generate.py and d1's trainer do: logits for the whole sequence at
every step and in every training forward pass, float64 "Gumbel" noise and a float64 softmax over the
full vocabulary at every position, confidences of -inf beyond the current block, and a Python loop
over rows around topk: reference_sampler.py, which the parity tests also use.
"""
import argparse
import io
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import torch

import diffu_grpo
import sample
import sft
import tasks
from model import PRESETS, SMALL, ModelConfig, Transformer, build, default_device, load, save
from model_files import byte_tokenizer
from reference_sampler import FullLogits, baseline_generate
from runs import clock

MID = ModelConfig(d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, mlp_hidden=1408, vocab_size=32768)
MID_BYTES = ModelConfig(**{**vars(MID), "vocab_size": 260})

# Work per preset, sized so that the whole run stays within a few minutes on 2 CPU cores. The toy
# preset has the byte vocabulary (260); mid, like a real model, a tokenizer-sized one (32k);
# mid-bytes (not in the default run) is mid with the byte vocabulary.
SIZES = {
    "toy": dict(config=PRESETS["toy"], sampler=dict(batch=8), sft=dict(batch=64),
                grpo=dict(prompts_per_step=8, num_generations=4)),
    "mid": dict(config=MID, sampler=dict(batch=1), sft=dict(batch=16),
                grpo=dict(prompts_per_step=1, num_generations=2)),
    "mid-bytes": dict(config=MID_BYTES, sampler=dict(batch=2), sft=dict(batch=16),
                      grpo=dict(prompts_per_step=1, num_generations=4)),
}
SAMPLER = dict(prompt=32, gen_length=64, block_length=16, steps=32)  # d1's shape, scaled: 2 tokens per step
FAST = dict(threshold=0.9, cache="dual")  # Fast-dLLM's default threshold


# ----------------------------------------------------------------------------- the baseline

@contextmanager
def baseline_sampler():
    """diffu_grpo's rollouts with the reference-style sampler."""
    with mock.patch.object(diffu_grpo, "decode", baseline_generate):
        yield


# ----------------------------------------------------------------------------- measuring

def run_once(fn, device):
    """(seconds, result) of one call of fn, the device synchronised before and after (runs.clock)."""
    t = clock(device)
    out = fn()
    return clock(device) - t, out


def matmul_peak(device, n=2048, repeats=5):
    """FLOP/s of a large float32 matmul on this device (median of repeats, after one warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = [run_once(lambda: a @ b, device)[0] for _ in range(repeats + 1)]
    return 2 * n ** 3 / statistics.median(times[1:])


@contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ layer writes `USDT: ... profiler_start` and
    `profiler_stop` lines there, around every measurement."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn, device):
    """Peak extra tensor memory (bytes) while fn runs: CUDA's allocator statistics, or on the CPU the
    running sum of the profiler's allocations and frees in time order (an op's own temporaries are
    netted out). Returns (bytes, fn's result)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        return torch.cuda.max_memory_allocated() - before, out
    from torch.profiler import ProfilerActivity, profile
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                    for e in prof.events())
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, out


def compare(ours, base, repeats, device):
    """Run ours and the baseline once untimed (peak memory), then `repeats` times interleaved.
    Returns dict(ours_s, base_s medians, ratio = median of base/ours per run, memory, outputs)."""
    mem_ours, out_ours = peak_memory(ours, device)
    mem_base, out_base = peak_memory(base, device)
    pairs = [(run_once(ours, device)[0], run_once(base, device)[0]) for _ in range(repeats)]
    return dict(ours_s=statistics.median(o for o, _ in pairs), base_s=statistics.median(b for _, b in pairs),
                ratio=statistics.median(b / o for o, b in pairs), ours_mem=mem_ours, base_mem=mem_base,
                ours_out=out_ours, base_out=out_base)


def prime(opt):
    """Allocate AdamW's moments before measuring (a zero-gradient step at learning rate 0 changes no
    weight), so that a step's peak memory does not include them."""
    lrs = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    for group, lr in zip(opt.param_groups, lrs):
        group["lr"] = lr


def forward_flops(cfg, rows, queries, keys, logits):
    """FLOPs (2 per multiply-add) of one forward pass: the blocks' projections at `queries` positions of
    each row, attention of those queries over `keys` positions, the output head at `logits` positions."""
    C, D = cfg.d_model, cfg.d_model // cfg.n_heads
    kv = cfg.n_kv_heads * D
    per_position = cfg.n_layers * (2 * C * C + 2 * C * kv + 3 * C * cfg.mlp_hidden + 2 * keys * C)
    return 2 * (rows * queries * per_position + logits * C * cfg.vocab_size)


# ----------------------------------------------------------------------------- 1. the sampler

def random_prompts(batch, prompt, device, seed=0):
    return torch.randint(0, 256, (batch, prompt), generator=torch.Generator().manual_seed(seed)).to(device)


def bench_sampler(cfg, device, repeats, batch=8, prompt=32, gen_length=64, block_length=16, steps=32):
    """Tokens/s of sample.generate and of the baseline at temperature 0, whether they agree, and
    ours with the KV cache."""
    net = build(cfg, device=device).eval()
    ids = random_prompts(batch, prompt, device)
    kw = dict(steps=steps, gen_length=gen_length, block_length=block_length, mask_id=cfg.mask_id)
    r = compare(lambda: sample.generate(net, ids, **kw), lambda: baseline_generate(net, ids, **kw), repeats, device)
    tokens = batch * gen_length
    T = prompt + gen_length
    flops = steps * forward_flops(cfg, batch, T, T, batch * block_length)
    out = dict(ours_tok_s=tokens / r["ours_s"], baseline_tok_s=tokens / r["base_s"], ratio=r["ratio"],
               same_tokens=bool(torch.equal(r["ours_out"], r["base_out"])), flop_s=flops / r["ours_s"],
               ours_mem=r["ours_mem"], base_mem=r["base_mem"])
    for cache in ("prefix", "dual"):
        times = [run_once(lambda: sample.fast_generate(net, ids, cache=cache, **kw), device)[0] for _ in range(repeats)]
        out[f"{cache}_tok_s"] = tokens / statistics.median(times)
    return out


# ----------------------------------------------------------------------------- 2. masked SFT

def sft_batch(batch, device, seed=0):
    """A batch of toy Sudoku rows (prompt 24 tokens, answer 16): ids (B, T) and prompt lengths (B,)."""
    tok = byte_tokenizer()
    task = tasks.get_task("sudoku")
    pairs = sft.task_pairs(tok, task, task.generate(batch, seed=seed), "toy")
    ids, prompt_len = sft.pad_answers(tok, pairs, 16)
    return ids.to(device), prompt_len


def bench_sft(cfg, device, repeats, batch=64):
    """Tokens/s of one masked-SFT step (Eq. 5 loss, backward, AdamW): ours reads logits only at the
    masked positions, the baseline computes them for the whole sequence."""
    net = build(cfg, device=device).train()
    base = FullLogits(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    ids, prompt_len = sft_batch(batch, device)

    def step(m, seed):
        g = torch.Generator().manual_seed(seed)
        noisy, masked, t = sft.forward_process(ids, prompt_len, cfg.mask_id, generator=g)
        answer_len = (ids.shape[1] - prompt_len).to(ids.device).float()
        loss, _, n = sft.sft_loss(m, ids, noisy, masked, t, answer_len)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return n

    prime(opt)
    r = compare(lambda: step(net, 0), lambda: step(base, 0), repeats, device)
    B, T = ids.shape
    flops = 3 * forward_flops(cfg, B, T, T, r["ours_out"])  # backward = 2 x forward
    return dict(ours_tok_s=B * T / r["ours_s"], baseline_tok_s=B * T / r["base_s"], ratio=r["ratio"],
                flop_s=flops / r["ours_s"], ours_mem=r["ours_mem"], base_mem=r["base_mem"])


# ----------------------------------------------------------------------------- 3. a diffu-GRPO step

def grpo_setup(cfg, device, prompts_per_step, num_generations, **rollout):
    net = build(cfg, device=device)
    ref = build(cfg, device=device).eval().requires_grad_(False)
    gcfg = diffu_grpo.GRPOConfig(prompts_per_step=prompts_per_step, num_generations=num_generations, mu=2,
                                 p_mask=0.15, beta=0.04, device=device, **{"threshold": 0.0, **rollout})
    task = tasks.get_task("sudoku")
    return net, ref, gcfg, task, task.generate(prompts_per_step, seed=0)


class AnyVocabulary:
    """The byte tokenizer for a model whose vocabulary is larger: ids beyond it decode as '?'."""

    def __init__(self):
        self.base = byte_tokenizer()

    def __getattr__(self, name):
        return getattr(self.base, name)

    def decode(self, ids):
        return self.base.decode([t if t < 260 else ord("?") for t in ids])


def bench_grpo(cfg, device, repeats, prompts_per_step=8, num_generations=4):
    """Seconds per outer step of diffu_grpo.train_step (toy Sudoku prompts, G answers of 16 tokens,
    mu 2): ours, the baseline (reference-style sampler, whole-sequence logits), and ours with
    Fast-dLLM rollouts. Each split into generation, log-probs and the updates."""
    tok = AnyVocabulary()
    out = {}
    for name, rollout, baseline in (("ours", {}, False), ("baseline", {}, True), ("ours_fast", FAST, False)):
        net, ref, gcfg, task, examples = grpo_setup(cfg, device, prompts_per_step, num_generations, **rollout)
        policy, ref_model = (FullLogits(net), FullLogits(ref)) if baseline else (net, ref)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-6)
        g, gen = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)
        step = lambda: diffu_grpo.train_step(policy, ref_model, opt, tok, task, examples, gcfg, "toy", g, gen)[0]
        prime(opt)
        with baseline_sampler() if baseline else nullcontext():
            mem, _ = peak_memory(step, device)
            records = [run_once(step, device)[1] for _ in range(repeats)]
        out[name] = {k: statistics.median(r[k] for r in records) for k in ("gen_s", "logp_s", "update_s")}
        out[name]["step_s"] = statistics.median(r["gen_s"] + r["logp_s"] + r["update_s"] for r in records)
        out[name]["mem"] = mem
    N, T, L = prompts_per_step * num_generations, 24 + 16, 16
    update_flops = gcfg.mu * (2 + 3) * forward_flops(cfg, N, T, T, N * L)  # old + ref log-probs, fwd + bwd
    out["update_flop_s"] = update_flops / (out["ours"]["logp_s"] + out["ours"]["update_s"])
    out["ratio"] = out["baseline"]["step_s"] / out["ours"]["step_s"]
    out["ratio_fast"] = out["baseline"]["step_s"] / out["ours_fast"]["step_s"]
    return out


# ----------------------------------------------------------------------------- 4. Fast-dLLM accuracy

EVAL_BATCH = 128  # answers generated together
DECODERS = {  # the tasks' sampler: 16-token answers in one block of 16 steps
    "exact (LLaDA)": {},
    "threshold 0.9": dict(threshold=0.9),
    "threshold 0.7": dict(threshold=0.7),
    "threshold 0.9 + prefix cache": dict(threshold=0.9, cache="prefix"),
    "threshold 0.9 + dual cache, blocks of 4": dict(threshold=0.9, cache="dual", block_length=4),
}


def accuracy_model(task, device, folder):
    """A small model (SMALL, 0.9M parameters) SFT-trained on the task, trained once and kept."""
    if (folder / "model.safetensors").exists():
        return load(folder, device=device)
    init = folder.parent / f"{folder.name}-init"
    save(build(SMALL, seed=0), init)
    print(f"training a small {task} model for the accuracy figures (once: it is kept in {folder})", flush=True)
    t = time.time()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # sft.train's progress bars
        net, _ = sft.train(sft.SFTConfig(model=str(init), task=task, n_train=20000, steps=400, lr=2e-3, n_eval=1,
                                         eval_every=0, log_every=10 ** 9, out=str(folder), device=device))
    print(f"  trained in {time.time() - t:.0f} s", flush=True)
    return net


def count_forward(net):
    """Attach a counter of computed positions (idx.numel()) per forward pass; returns its list."""
    seen = []
    handle = net.register_forward_pre_hook(lambda m, args, kw: seen.append(args[0].numel()), with_kwargs=True)
    return seen, handle


def bench_accuracy(device, n_eval, folder):
    """Held-out accuracy of each decoder on toy Sudoku and Countdown (16-token answers, 16 steps),
    the model calls per batch of 128, the full-pass equivalents per answer (positions computed,
    over those of one full pass: a cached pass or a pass over the unfinished rows counts as its
    share), and the milliseconds per answer."""
    tok = byte_tokenizer()
    out = {}
    for name in ("sudoku", "countdown"):
        net = accuracy_model(name, device, folder / f"sft-{name}").eval()
        task = tasks.get_task(name)
        test = task.generate(n_eval, seed=1, split="test")
        positions = {}
        for decoder, kw in DECODERS.items():
            seen, handle = count_forward(net)
            t = time.perf_counter()
            acc, _ = sample.evaluate(net, tok, task, test, style="toy", gen_length=16, steps=16,
                                     batch_size=EVAL_BATCH, **{"block_length": 16, **kw})
            elapsed = time.perf_counter() - t
            handle.remove()
            positions[decoder] = sum(seen)
            passes = 16 * sum(seen) / positions["exact (LLaDA)"]  # the exact sampler makes 16 full passes
            out[(name, decoder)] = dict(accuracy=acc, passes=passes, calls=len(seen) / -(-n_eval // EVAL_BATCH),
                                        s_per_answer=elapsed / n_eval)
    return out


# ----------------------------------------------------------------------------- 5. the estimators

ESTIMATOR_ROWS = {  # name: (--estimator, GRPOConfig changes, advantage sign)
    "one-step, p_mask 0.15 (d1)": ("one-step", dict(p_mask=0.15), 1.0),
    "one-step, p_mask 0": ("one-step", dict(p_mask=0.0), 1.0),
    "mc-elbo": ("mc-elbo", {}, 1.0),
    "coupled": ("coupled", {}, 1.0),
    "spg, A >= 0 (ELBO)": ("spg", {}, 1.0),
    "spg, A < 0 (0.5 EUBO + 0.5 ELBO)": ("spg", {}, -1.0),
    "trajectory, merge 1 (the path)": ("trajectory", dict(merge_steps=1), 1.0),
    "trajectory, merge 2": ("trajectory", dict(merge_steps=2), 1.0),
    "trajectory, merge 4": ("trajectory", dict(merge_steps=4), 1.0),
}


def estimator_answers(device, folder, n, L):
    """n toy-Sudoku prompts and the first L tokens of an answer sampled from the bench's Sudoku model
    at temperature 1 (what RL scores; L = 8 is short enough for exact_elbo's 2^L - 1 masks), with
    the step at which the sampler committed each of them (16 steps, one token each)."""
    net = accuracy_model("sudoku", device, folder / "sft-sudoku").eval()
    tok, task = byte_tokenizer(), tasks.get_task("sudoku")
    prompt, am = sample.prompt_batch(tok, task, task.generate(n, seed=2, split="test"), "toy", device)
    g, path = torch.Generator(device).manual_seed(0), sample.PathRecorder(prompt.shape[1], tok.mask_id)
    out = sample.generate(net, prompt, gen_length=16, steps=16, block_length=16, temperature=1.0,
                          mask_id=tok.mask_id, attention_mask=am, generator=g, on_step=path)
    return net, tok.mask_id, prompt, am, out[:, prompt.shape[1]:prompt.shape[1] + L], path.order[:, :L]


def estimator_batch(prompt, am, completion, order, index, sign):
    """The rows `index` of the answers as a rollout batch (every position is answer) whose advantages
    all have the given sign: what an estimator's noise and terms take."""
    return dict(prompt=prompt[index], attention_mask=None if am is None else am[index], completion=completion[index],
                mask=torch.ones_like(completion[index], dtype=torch.bool), order=order[index],
                adv=torch.full((len(index),), sign, device=prompt.device))


@torch.no_grad()
def estimate(net, mask_id, prompt, am, completion, order, row, passes, draws, g):
    """draws estimates (draws, n) of each answer's sequence log-likelihood by one ESTIMATOR_ROWS row,
    each averaging as many estimates as fit in `passes` forward passes (K-copy estimates: K = passes;
    the trajectory's passes are its own: one per group of merged steps), and the passes it took."""
    name, changes, sign = row
    cfg = diffu_grpo.GRPOConfig(estimator=name, mc_samples=passes, block_length=completion.shape[1], device="cpu",
                                **changes)
    est, n = diffu_grpo.ESTIMATORS[name], len(prompt)
    batch = estimator_batch(prompt, am, completion, order, torch.arange(draws * n) % n, sign)  # (draws * n, ...)
    repeats = max(1, passes // est.passes(cfg))
    total = 0
    for _ in range(repeats):
        noise = est.noise(diffu_grpo.uniforms(g, draws * n), batch, cfg, prompt.shape[1])
        total = total + est.terms(net, batch, noise, cfg, mask_id).sum(1).cpu()
    return (total / repeats).view(draws, n), repeats * est.passes(cfg)


def against(reference, net, mask_id, prompt, am, completion, order, passes, draws, g):
    """Bias, spread and rmse of every ESTIMATOR_ROWS row against reference (n,) exact values."""
    out = {}
    for label, row in ESTIMATOR_ROWS.items():
        est, used = estimate(net, mask_id, prompt, am, completion, order, row, passes, draws, g)  # (draws, n)
        err = est - reference
        out[label] = dict(bias=err.mean().item(), sd=est.var(0).mean().sqrt().item(),  # over draws, per answer
                          rmse=err.pow(2).mean().sqrt().item(), exact=reference.mean().item(), passes=used)
    return out


def bench_estimators(device, folder, n=8, L=8, passes=6, draws=256, batch=64):
    """Bias and standard deviation of each estimate of log p(o | q) against LLaDA's bound computed
    exactly (diffu_grpo.exact_elbo) on n answers of L tokens, at `passes` forward passes per estimate;
    against the exact likelihood of the path the sampler took (trajectory_terms, one pass per step) on
    the whole 16-token answers; and the seconds of one update (forward and backward of the estimate)
    on `batch` answers."""
    net, mask_id, prompt, am, completion, order = estimator_answers(device, folder, n, 16)
    short, short_order = completion[:, :L], order[:, :L]
    exact = diffu_grpo.exact_elbo(net, prompt, short, mask_id, am)  # (n,)
    g = torch.Generator().manual_seed(0)
    out = against(exact, net, mask_id, prompt, am, short, short_order, passes, draws, g)
    with torch.no_grad():
        path = diffu_grpo.trajectory_terms(net, prompt, completion, order, mask_id, attention_mask=am).sum(1)  # (n,)
    out["path"] = against(path, net, mask_id, prompt, am, completion, order, passes, draws // 4, g)
    net.train()
    for label, (name, changes, sign) in ESTIMATOR_ROWS.items():
        cfg = diffu_grpo.GRPOConfig(estimator=name, block_length=16, device="cpu", **changes)
        b = estimator_batch(prompt, am, short, short_order, torch.arange(batch) % n, sign)
        est = diffu_grpo.ESTIMATORS[name]
        def update():
            noise = est.noise(diffu_grpo.uniforms(g, batch), b, cfg, prompt.shape[1])
            est.terms(net, b, noise, cfg, mask_id).sum().backward()
        update()  # warm-up
        times = [run_once(update, device)[0] for _ in range(3)]
        out[label].update(update_passes=est.passes(cfg), update_s=statistics.median(times))
    net.zero_grad(set_to_none=True)
    return out


def print_estimators(r, n=8, L=8, passes=6, batch=64):
    rows = {k: v for k, v in r.items() if k != "path"}
    print(f"\nlog p(o | q) estimates against LLaDA's bound computed exactly over all {2 ** L - 1} masks "
          f"(toy Sudoku, {n} sampled answers of {L} tokens, mean exact bound {next(iter(rows.values()))['exact']:.3f}), "
          f"{passes} forward passes per estimate (the trajectory's: its own); one update = forward and backward "
          f"on {batch} answers:")
    for label, x in rows.items():
        print(f"  {label:34s} bias {x['bias']:+8.3f} | sd {x['sd']:6.3f} | rmse {x['rmse']:6.3f} | "
              f"{x['passes']:2d} passes | update: {x['update_passes']} passes, {1e3 * x['update_s']:6.1f} ms")
    path = r["path"]
    print(f"the same estimates against the exact log-likelihood of the path the sampler took (the whole 16-token "
          f"answers, 16 steps of one token; mean {next(iter(path.values()))['exact']:.3f}):")
    for label, x in path.items():
        print(f"  {label:34s} bias {x['bias']:+8.3f} | sd {x['sd']:6.3f} | rmse {x['rmse']:6.3f} | "
              f"{x['passes']:2d} passes")


# ----------------------------------------------------------------------------- printing

def mib(b):
    return f"{b / 2 ** 20:7.1f} MiB"


def print_preset(name, cfg, r, peak):
    n = sum(p.numel() for p in Transformer(cfg).parameters()) if cfg.d_model < 1024 else 0
    print(f"\n{name}: d_model {cfg.d_model}, {cfg.n_layers} layers, vocab {cfg.vocab_size}, {n / 1e6:.1f}M parameters")
    s, t = r["sampler"], r["sft"]
    print(f"  sampler   ours {s['ours_tok_s']:8.1f} tok/s | baseline {s['baseline_tok_s']:8.1f} tok/s | "
          f"ours/baseline {s['ratio']:.2f}x (median of paired runs) | "
          f"same tokens at temperature 0: {s['same_tokens']} | "
          f"{s['flop_s'] / peak:.0%} of matmul peak | peak memory {mib(s['ours_mem'])} vs {mib(s['base_mem'])}")
    base = s["baseline_tok_s"]
    print(f"            ours with prefix cache {s['prefix_tok_s']:8.1f} tok/s ({s['prefix_tok_s'] / base:.2f}x), "
          f"dual cache {s['dual_tok_s']:8.1f} tok/s ({s['dual_tok_s'] / base:.2f}x): approximate, not the same tokens")
    print(f"  SFT step  ours {t['ours_tok_s']:8.0f} tok/s | baseline {t['baseline_tok_s']:8.0f} tok/s | "
          f"ours/baseline {t['ratio']:.2f}x | {t['flop_s'] / peak:.0%} of matmul peak | "
          f"peak memory {mib(t['ours_mem'])} vs {mib(t['base_mem'])}")
    g = r["grpo"]
    for k, label in (("ours", "ours"), ("baseline", "baseline"), ("ours_fast", "ours, fast rollouts")):
        x = g[k]
        print(f"  GRPO step {label:20s} {x['step_s']:6.2f} s = generation {x['gen_s']:5.2f} + log-probs "
              f"{x['logp_s']:5.2f} + updates {x['update_s']:5.2f} | peak memory {mib(x['mem'])}")
    print(f"            baseline/ours {g['ratio']:.2f}x, with fast rollouts {g['ratio_fast']:.2f}x | "
          f"log-probs + updates at {g['update_flop_s'] / peak:.0%} of matmul peak")


def print_accuracy(acc, n_eval):
    print(f"\nFast-dLLM decoding on the toy tasks ({n_eval} held-out examples each, 16-token answers, 16 steps, "
          f"batches of {EVAL_BATCH}):")
    for (task, decoder), r in acc.items():
        exact = acc[(task, "exact (LLaDA)")]
        change = 100 * (r["accuracy"] - exact["accuracy"])
        print(f"  {task:9s} {decoder:40s} accuracy {r['accuracy']:6.1%} ({change:+5.1f} pts) | "
              f"{r['calls']:4.1f} model calls per batch, {r['passes']:5.2f} full-pass equivalents per answer "
              f"({exact['passes'] / r['passes']:4.1f}x fewer) | "
              f"{1e3 * r['s_per_answer']:5.2f} ms per answer")


BENCH_MINUTES, BENCH_PEAK = 10, 95e9  # `python bench.py`, every section, as measured on a 2-core CPU


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default="toy,mid", help=f"comma-separated, of {', '.join(SIZES)} "
                                                        "(mid: d_model 512, 8 layers, vocabulary 32k)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (medians are shown)")
    p.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                   help="measure Fast-dLLM decoding's accuracy on toy Sudoku and Countdown")
    p.add_argument("--n_eval", type=int, default=512, help="held-out examples per task for --accuracy")
    p.add_argument("--estimators", action=argparse.BooleanOptionalAction, default=True,
                   help="bias, spread and cost of the log-likelihood estimators against the exact bound")
    p.add_argument("--models", default="runs/bench", help="where the small accuracy models are trained and kept")
    p.add_argument("--out", default="bench/results.json", help="the figures as JSON")
    p.add_argument("--device", default=default_device())
    args = p.parse_args(argv)
    if args.repeats < 1 or args.n_eval < 1:
        raise SystemExit(f"error: --repeats ({args.repeats}) and --n_eval ({args.n_eval}) must be >= 1")
    presets = [name for name in args.presets.split(",") if name]  # --presets '': none
    for name in presets:
        if name not in SIZES:
            raise SystemExit(f"error: unknown preset {name!r}; choose from {', '.join(SIZES)}")
    t0 = time.time()
    peak = matmul_peak(args.device)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32, 2048^3); medians of {args.repeats} runs")
    if torch.device(args.device).type == "cpu":  # the whole run's time goes about as 1 / the matmul peak
        print(f"expect about {BENCH_MINUTES * BENCH_PEAK / peak:.0f} minutes for every section at this peak "
              f"({BENCH_MINUTES} at {BENCH_PEAK / 1e9:.0f} GFLOP/s, 2 cores)")
    results = dict(device=args.device, torch=torch.__version__, matmul_peak=peak, repeats=args.repeats)
    for name in presets:
        size = SIZES[name]
        cfg = size["config"]
        results[name] = r = dict(sampler=bench_sampler(cfg, args.device, args.repeats, **size["sampler"], **SAMPLER),
                                 sft=bench_sft(cfg, args.device, args.repeats, **size["sft"]),
                                 grpo=bench_grpo(cfg, args.device, args.repeats, **size["grpo"]))
        print_preset(name, cfg, r, peak)
    if args.accuracy:
        acc = bench_accuracy(args.device, args.n_eval, Path(args.models))
        print_accuracy(acc, args.n_eval)
        results["accuracy"] = {f"{t} | {d}": v for (t, d), v in acc.items()}
    if args.estimators:
        results["estimators"] = bench_estimators(args.device, Path(args.models))
        print_estimators(results["estimators"])
    print(f"\ntotal {time.time() - t0:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
