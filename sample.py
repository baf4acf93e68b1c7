"""LLaDA's reverse process: generate an answer by unmasking it step by step.

LLaDA (arXiv 2502.09992) Sec. 2.4 and App. A.3 (Alg. 4 random remasking, Alg. 5 low-confidence
remasking), App. B (semi-autoregressive blocks, classifier-free guidance App. A.2 Eq. 16).
The answer of `gen_length` tokens starts fully masked and is split into blocks of
`block_length`, filled left to right. Each block gets `steps // num_blocks` steps; at each step
every masked position gets a candidate token (argmax, or Gumbel-max at temperature > 0), and the
`k` candidates of the current block with the highest confidence are committed, `k` following the
even schedule of LLaDA's code (linear noise schedule => the same number of tokens per step).
Committed tokens are never remasked.

    python sample.py --model toy --prompt "sudoku 3102200002100320" --show
    python sample.py --model path/to/LLaDA-8B-Instruct --prompt "What is 7*8?" --gen_length 128
    python sample.py --model runs/sft-toy --threshold 0.9 --cache prefix    # Fast-dLLM decoding (opt-in)
    python sample.py --model llada-8b --task gsm8k --data data/gsm8k --lengths 128,256,512 --block_length 32
                                                   # d1's evaluation: every test item, resumable (eval_run)

`generate` is LLaDA's algorithm; at temperature 0 its tokens equal those of LLaDA's reference
generate.py. Only the work that changes the result is done:
1. Logits are computed for the current block only (the rest is never read; see exact_window for
   the one case where LLaDA's code also reads earlier positions).
2. Gumbel noise (float64, as LLaDA) and the float64 softmax of the confidence are computed for the
   current block only, not for the whole sequence.
3. top-k runs batched over rows; all rows share one schedule, since every block starts fully masked.
4. A step whose schedule commits no token (more steps than tokens) is skipped.

`fast_generate`, beside it, adds Fast-dLLM's (arXiv 2505.22618) confidence-threshold parallel
decoding (`threshold`) and block-wise approximate KV cache (`cache`) with the same step helpers;
both are opt-in (threshold 0 and cache "none" are off), and with both off its tokens are LLaDA's.
`decode` chooses between the two; every caller (rollouts, evaluation, this command) goes through it.

Shapes: B batch, P prompt length, L block length (or window), V vocabulary.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from signal import SIGINT

import torch
import torch.nn.functional as F

import tasks
from checkpoints import Parts, claim_folder
from distributed import barrier, init_distributed, over_processes
from model import PRESETS, KVCache, default_device, load_model
from runs import SIGNAL_NAMES, StopSignals, Stopped, run_command

REMASKING = ("low_confidence", "random")
CACHES = ("none", "prefix", "dual")


# ----------------------------------------------------------------------------- one step (Alg. 4-5)

def transfer_schedule(n, steps):
    """Tokens to commit at each of `steps` steps for n masked tokens: n // steps each, and one more
    for the first n % steps steps (LLaDA's get_num_transfer_tokens; linear schedule, Eq. 8)."""
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


def predict(model, x, attention_mask, positions, cfg_scale, prompt_index, mask_id):
    """Logits at `positions`, with unsupervised classifier-free guidance when cfg_scale > 0:
    u + (w + 1)(c - u), u from the same input with the prompt masked (LLaDA Eq. 16)."""
    if cfg_scale == 0:
        return model(x, attention_mask=attention_mask, logits_at=positions)  # (B, L, V)
    un_x = x.masked_fill(prompt_index, mask_id)
    am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    c, u = model(torch.cat([x, un_x]), attention_mask=am, logits_at=positions).chunk(2)
    return u + (cfg_scale + 1) * (c - u)


def sample_tokens(logits, temperature, generator=None):
    """Candidate x0 for each position: argmax, or Gumbel-max at temperature > 0.

    argmax(logits - T log(-log u)) = argmax(exp(logits) / (-log u)^T), LLaDA's form, which samples
    from softmax(logits / T); the noise is float64 as in LLaDA (low-precision Gumbel noise hurts
    quality, arXiv 2409.02908)."""
    if temperature == 0:
        return logits.argmax(-1)  # (B, L)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.double() - temperature * torch.log(-torch.log(u))).argmax(-1)  # (B, L)


def confidence(logits, x0, remasking, generator=None):
    """Score of each candidate: its (untempered) softmax probability in float64 (Alg. 5), or
    uniform noise for random remasking (Alg. 4). (B, L) float64."""
    if remasking == "low_confidence":
        p = F.softmax(logits.double(), dim=-1)  # (B, L, V)
        return p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    return torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)


def commit(xw, x0, score, k, mask_id):
    """Alg. 4/5's remasking, in place on the window xw (B, L) of the canvas: of the positions still
    masked, the k with the highest score take their candidate x0; the others stay masked."""
    score = score.masked_fill(xw != mask_id, -math.inf)  # committed tokens stay
    chosen = score.topk(k, dim=-1).indices  # (B, k)
    xw.scatter_(1, chosen, x0.gather(1, chosen))


def exact_window(x, end, mask_id):
    """The positions to predict: the current block, plus, as in LLaDA's code, any earlier position
    that still holds [MASK] (the prompt's own masks, or a position where [MASK] itself was the
    committed candidate: a trained model never predicts it, a random one can). A slice of columns."""
    still_masked = (x[:, :end] == mask_id).any(0)  # (end,)
    return slice(int(still_masked.int().argmax()), end)  # from the first masked column to the block end


# ----------------------------------------------------------------------------- LLaDA's reverse process

def check_settings(gen_length, steps, block_length, remasking, temperature, cfg_scale):
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise ValueError(f"gen_length ({gen_length}), block_length ({block_length}) and steps ({steps}) "
                         f"must be positive")
    if gen_length % block_length:
        raise ValueError(f"block_length {block_length} must divide gen_length {gen_length}")
    if steps % (gen_length // block_length):
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks "
                         f"({gen_length // block_length} = gen_length {gen_length} / block_length {block_length})")
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; choose one of {', '.join(REMASKING)}")
    if temperature < 0 or cfg_scale < 0:
        raise ValueError(f"temperature ({temperature}) and cfg_scale ({cfg_scale}) must be >= 0")


def masked_canvas(model, prompt, gen_length, mask_id, attention_mask):
    """x = [prompt | gen_length x MASK] (B, P + gen_length) and its attention mask (the answer is real)."""
    B, P = prompt.shape
    if P + gen_length > model.config.max_seq_len:
        raise ValueError(f"prompt ({P}) + gen_length ({gen_length}) exceeds the model's maximum "
                         f"sequence length {model.config.max_seq_len}")
    x = torch.cat([prompt, prompt.new_full((B, gen_length), mask_id)], dim=1)  # (B, P + gen_length)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, gen_length)], dim=1)
    return x, attention_mask


@torch.no_grad()
def generate(model, prompt, *, gen_length, steps, block_length, temperature=0.0, cfg_scale=0.0,
             remasking="low_confidence", mask_id, attention_mask=None, generator=None, on_step=None):
    """LLaDA's reverse process (Sec. 2.4, App. A.3, App. B). prompt (B, P) ids, left-padded when rows
    differ in length, with attention_mask (B, P) 0 on the padding. Returns (B, P + gen_length).
    on_step(x) is called after each step (progress bars, --show)."""
    check_settings(gen_length, steps, block_length, remasking, temperature, cfg_scale)
    x, attention_mask = masked_canvas(model, prompt, gen_length, mask_id, attention_mask)
    prompt_index = x != mask_id  # (B, P + gen_length), the answer is all masks
    num_blocks = gen_length // block_length
    schedule = transfer_schedule(block_length, steps // num_blocks)
    for b in range(num_blocks):
        end = prompt.shape[1] + (b + 1) * block_length  # the current block ends here
        for k in schedule:
            if k > 0:
                window = exact_window(x, end, mask_id)
                logits = predict(model, x, attention_mask, window, cfg_scale, prompt_index, mask_id)  # (B, L, V)
                x0 = sample_tokens(logits, temperature, generator)  # (B, L)
                score = confidence(logits, x0, remasking, generator)  # (B, L)
                commit(x[:, window], x0, score, k, mask_id)
            if on_step is not None:
                on_step(x)
    return x


# ----------------------------------------------------------------------------- Fast-dLLM (opt-in)

def check_fast_settings(threshold, cache, remasking, cfg_scale):
    if cache not in CACHES:
        raise ValueError(f"unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
    if threshold and not (0 < threshold <= 1 and remasking == "low_confidence"):
        raise ValueError(f"threshold {threshold} must be in (0, 1] (0: off) and needs low_confidence remasking")
    if cache != "none" and cfg_scale:
        raise ValueError("the KV cache does not support classifier-free guidance; use cache='none' with cfg_scale")


@torch.no_grad()
def fast_generate(model, prompt, *, gen_length, steps, block_length, temperature=0.0, cfg_scale=0.0,
                  remasking="low_confidence", mask_id, attention_mask=None, generator=None, on_step=None,
                  threshold=0.0, cache="none"):
    """generate with Fast-dLLM's two accelerations (arXiv 2505.22618); with both off, LLaDA's tokens.
    threshold (0: off): confidence-aware parallel decoding (Sec. 3.3): each step also commits every candidate
        of the block whose confidence is at least `threshold`; a row's block ends as soon as it is
        filled, and only the rows whose block is unfinished are computed.
    cache: "prefix" reuses the keys and values of the prompt and of finished blocks within a block
        (Sec. 3.2); "dual" also those of the masked blocks after it. A full pass refreshes the cache
        at each block's first step."""
    check_settings(gen_length, steps, block_length, remasking, temperature, cfg_scale)
    check_fast_settings(threshold, cache, remasking, cfg_scale)
    x, attention_mask = masked_canvas(model, prompt, gen_length, mask_id, attention_mask)
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    schedule = transfer_schedule(block_length, steps // num_blocks)
    for b in range(num_blocks):
        start, end = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
        kv = None if cache == "none" else KVCache()
        for i, k in enumerate(schedule):
            rows = unfinished_rows(x, start, end, mask_id) if threshold else None
            if rows is not None and len(rows) == 0:
                break  # the block is filled in every row
            if k > 0 or threshold:
                xr, am = pick(x, rows), pick(attention_mask, rows)  # (B', T): the rows computed
                if kv is None:
                    window = exact_window(xr, end, mask_id)
                    logits = predict(model, xr, am, window, cfg_scale, pick(prompt_index, rows), mask_id)
                else:
                    window = slice(start, end)
                    logits = cached_predict(model, xr, am, start, end, kv.rows(rows), cache, fresh=i == 0)
                x0 = sample_tokens(logits, temperature, generator)  # (B', L)
                score = confidence(logits, x0, remasking, generator)  # (B', L)
                if not threshold:
                    commit(xr[:, window], x0, score, k, mask_id)
                else:
                    commit_confident(xr[:, window], x0, score, k, mask_id, threshold)
                if rows is not None:
                    x[rows] = xr
            if on_step is not None:
                on_step(x)
    return x


class PathRecorder:
    """An on_step callback that records the path the sampler took: order (B, L), the step at which each
    answer position was committed (counting every step of the sampler from 0; -1: never). The
    trajectory estimate (diffu_grpo.trajectory_terms; d2, TraceRL) scores the answer along it. One
    comparison of the answer with [MASK] per step."""

    def __init__(self, prompt_width, mask_id):
        self.P, self.mask_id, self.step, self.order = prompt_width, mask_id, 0, None

    def __call__(self, x):
        committed = x[:, self.P:] != self.mask_id  # (B, L)
        if self.order is None:
            self.order = torch.full(committed.shape, -1, dtype=torch.long, device=x.device)
        self.order[committed & (self.order < 0)] = self.step
        self.step += 1


def decode(model, prompt, *, threshold=0.0, cache="none", **settings):
    """LLaDA's reverse process (generate), or Fast-dLLM's decoding (fast_generate) when its confidence
    threshold (0: off) or its KV cache ("none": off) is on. settings: generate's."""
    if threshold or cache != "none":
        return fast_generate(model, prompt, threshold=threshold, cache=cache, **settings)
    return generate(model, prompt, **settings)


def pick(t, rows):
    """The rows of t (None: all of them; t None stays None)."""
    return t if rows is None or t is None else t[rows]


def unfinished_rows(x, start, end, mask_id):
    """Indices (B',) of the rows whose block [start, end) still holds a [MASK]; None when all do."""
    rows = (x[:, start:end] == mask_id).any(1).nonzero()[:, 0]  # (B',)
    return None if len(rows) == x.shape[0] else rows


def cached_predict(model, x, attention_mask, start, end, kv, cache, fresh):
    """Logits of the block [start, end) with the KV cache. At a block's first step (fresh) one full
    pass fills the cache; later steps recompute positions start..T ("prefix": the block and the masked
    suffix) or only the block ("dual") against it. (B, L, V)."""
    if fresh:
        kv.layers.clear()
        return model(x, attention_mask=attention_mask, logits_at=slice(start, end), cache=kv)
    stop = x.shape[1] if cache == "prefix" else end
    return model(x[:, start:stop], attention_mask=attention_mask, logits_at=slice(0, end - start),
                 cache=kv, start=start)


def commit_confident(xw, x0, score, k, mask_id, threshold):
    """Fast-dLLM's parallel commit (Sec. 3.3), in place on the window xw (B, L): every masked candidate
    whose score is at least `threshold`, and at least the max(k, 1) most confident ones."""
    masked = xw == mask_id
    score = score.masked_fill(~masked, -math.inf)
    top = torch.zeros_like(masked).scatter_(1, score.topk(max(k, 1), dim=-1).indices, True)  # (B, L)
    take = (top | (score >= threshold)) & masked
    xw.copy_(torch.where(take, x0, xw))


# ----------------------------------------------------------------------------- prompts and evaluation

def left_pad(rows, pad_id):
    """Token lists of different lengths -> (B, P) ids left-padded with pad_id, and the attention mask."""
    P = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (P - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def prompt_style(config):
    """The prompt format a model reads: the compact toy format for the byte vocabulary, else d1's chat format."""
    return "toy" if config.tokenizer == "bytes" else "chat"


def encode_prompt(tokenizer, task, example, style, for_eval=False):
    """Token ids of a task's prompt: the compact toy format, or the chat format inside the model's
    chat template (LLaDA-8B-Instruct). d1 evaluates chat models with its evaluation prompt, which also
    asks for \\boxed{}, and pre-fills the answer with "<reasoning>" (d1's evaluation code; the paper's
    Sec. 4 gives the protocol, not the prompt)."""
    if for_eval and style == "chat":
        return tokenizer.encode(tokenizer.chat(task.prompt(example, "chat_eval")) + tasks.EVAL_PREFILL)
    return tokenizer.encode(tokenizer.chat(task.prompt(example, style)))


def prompt_batch(tokenizer, task, examples, style, device="cpu", for_eval=False):
    """(B, P) left-padded prompt ids and their attention mask (None when no row is padded)."""
    rows = [encode_prompt(tokenizer, task, ex, style, for_eval) for ex in examples]
    ids, mask = left_pad(rows, tokenizer.eos_id)
    return ids.to(device), (None if bool(mask.all()) else mask.to(device))


@torch.no_grad()
def answer_batch(model, tokenizer, task, examples, style, temperature, generator, **decoding):
    """Greedy (or sampled) answers to a batch of a task's held-out examples with d1's evaluation prompt,
    and the forward passes of the model it took (each pass reads the whole batch)."""
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        ids, mask = prompt_batch(tokenizer, task, examples, style, next(model.parameters()).device, for_eval=True)
        out = decode(model, ids, mask_id=tokenizer.mask_id, attention_mask=mask, temperature=temperature,
                     generator=generator, **decoding)
    finally:
        hook.remove()
    return [tokenizer.decode(row) for row in out[:, ids.shape[1]:].tolist()], len(calls)


@torch.no_grad()
def evaluate(model, tokenizer, task, examples, *, style, batch_size=64, progress=False, **decoding):
    """Greedy held-out accuracy, d1's protocol (Sec. 4): generate at temperature 0, score each answer
    with the task's scorer, average the scores (for Sudoku, the fraction of blanks right).
    decoding: decode's settings (gen_length, steps, block_length, and Fast-dLLM's threshold or cache,
    whose accuracy bench.py measures).
    Returns (accuracy, [(text, score), ...])."""
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    results = []
    for i in tqdm(range(0, len(examples), batch_size), desc="evaluating", disable=not progress, leave=False):
        chunk = examples[i:i + batch_size]
        texts, _ = answer_batch(model, tokenizer, task, chunk, style, 0.0, None, **decoding)
        results += [(text, task.score(text, ex, style=style)[0]) for text, ex in zip(texts, chunk)]
    model.train(was_training)
    return sum(s for _, s in results) / max(len(results), 1), results


def held_out_accuracy(model, tokenizer, task, examples, style, cfg):
    """evaluate's greedy accuracy with a training run's sampler settings (cfg.gen_length, diffusion_steps,
    block_length), split over torchrun's processes (each scores every world-th example)."""
    def measure(mine, rank):
        _, results = evaluate(model, tokenizer, task, mine, style=style, gen_length=cfg.gen_length,
                              steps=cfg.diffusion_steps, block_length=cfg.block_length, progress=rank == 0)
        return [sum(s for _, s in results), len(results)]

    total, n = over_processes(examples, measure)
    return total / max(n, 1)


# ----------------------------------------------------------------------------- d1's evaluation, as one command

def length_settings(length, steps_per_token, block_length):
    """generate's settings for one answer length of d1's evaluation: steps = length x steps_per_token
    (d1: 1/2), blocks of block_length (the whole answer when it is shorter)."""
    return dict(gen_length=length, steps=max(1, round(length * steps_per_token)),
                block_length=min(block_length, length))


def eval_run(model, tokenizer, task, examples, settings, out, decoding, rank=0, world=1):
    """d1's evaluation (Sec. 4, Table 1) of every example at each answer length: one JSONL of records
    (question, ground_truth, generation, score, ...) per length in `out`, readable by `tasks.py score`.

    The items go in fixed batches of settings["batch_size"]; each finished batch is written to its own
    part file (checkpoints.Parts), which makes the run resumable (a killed run loses at most the batches in
    progress, and a batch's answers do not depend on when or where it runs) and lets torchrun
    processes share the batches. Process 0 joins the parts in order. SIGINT or SIGTERM stops the run
    after the batch in progress (Stopped); the folder is locked to this run while it lasts.
    Returns {length: (accuracy %, passes per answer)} on process 0."""
    with claim_folder(out, {k: v for k, v in settings.items() if k != "lengths"}, rank):  # a length may be added
        return eval_batches(model, tokenizer, task, examples, settings, out, decoding, rank, world)


def eval_batches(model, tokenizer, task, examples, settings, out, decoding, rank, world):
    from tqdm import tqdm
    B, style = settings["batch_size"], prompt_style(model.config)
    n_batches = math.ceil(len(examples) / B)
    parts = {length: Parts(out, f"{task.name}-{length}") for length in settings["lengths"]}
    todo = {length: p.missing(n_batches, rank, world) for length, p in parts.items()}
    barrier()  # every process has read the same missing batches before any is written
    bar = tqdm(total=sum(min(B, len(examples) - k * B) for ks in todo.values() for k in ks), unit="item",
               desc=f"evaluating {task.name}", disable=rank != 0)
    with StopSignals("this batch, with its part file") as stop:
        for length, batches in todo.items():
            kw = {**length_settings(length, settings["steps_per_token"], settings["block_length"]), **decoding}
            for k in batches:
                parts[length].write(k, batch_records(model, tokenizer, task, examples, k * B, B, style, settings, kw))
                bar.update(min(B, len(examples) - k * B))
                if stop.signum:
                    raise Stopped(f"stopped by {SIGNAL_NAMES[stop.signum]} after batch {k} of length {length}; the "
                                  f"finished batches are kept in {out}: the same command continues", stop.signum)
    bar.close()
    barrier()
    if rank != 0:
        return {}
    summary = {}
    for length, p in parts.items():
        rows = p.join(n_batches)
        accuracy, _ = task.score_rows(rows)
        summary[length] = (accuracy, sum(r["forward_passes"] for r in rows) / len(rows))
    return summary


def batch_records(model, tokenizer, task, examples, first, B, style, settings, decoding):
    """The records of the B examples from `first` on: the answers, sampled with noise seeded by the batch
    (the same wherever and whenever the batch runs), and our verdict as tasks.py score gives it."""
    chunk = examples[first:first + B]
    g = torch.Generator(next(model.parameters()).device).manual_seed(settings["seed"] * 1_000_003 + first // B)
    texts, passes = answer_batch(model, tokenizer, task, chunk, style, settings["temperature"], g, **decoding)
    rows = [dict(index=first + i, **task.record(ex), generation=text, style=style, forward_passes=passes)
            for i, (ex, text) in enumerate(zip(chunk, texts))]
    for r in rows:
        r["score"], r["extracted"] = task.score_record(r)
    return rows


# ----------------------------------------------------------------------------- command line

def render(tokenizer, ids):
    """The answer as text, a masked position shown as '_' (for --show)."""
    return "".join("_" if t == tokenizer.mask_id else tokenizer.decode([t]) for t in ids.tolist())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate with a masked diffusion LM (LLaDA's reverse process), or with "
                                            "--task, run d1's evaluation of a model on a task's test set.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="toy", help=f"a preset ({', '.join(PRESETS)}; random weights) "
                                                  "or a checkpoint folder in LLaDA's Hugging Face layout")
    p.add_argument("--prompt", default="sudoku 3102200002100320\n", help="the prompt text")
    p.add_argument("--gen_length", type=int, default=32, help="answer length in tokens")
    p.add_argument("--steps", type=int, default=32, help="denoising steps in all (split evenly over blocks)")
    p.add_argument("--block_length", type=int, default=16, help="semi-autoregressive block length")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 = Gumbel-max sampling")
    p.add_argument("--cfg_scale", type=float, default=0.0, help="unsupervised classifier-free guidance w")
    p.add_argument("--remasking", default="low_confidence", choices=REMASKING)
    p.add_argument("--threshold", type=float, default=0.0,
                   help="Fast-dLLM parallel decoding: also commit every candidate this confident (0: off)")
    p.add_argument("--cache", default="none", choices=CACHES,
                   help="Fast-dLLM approximate KV cache: prefix, or dual (prefix and masked suffix)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (and of preset weights)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--show", action="store_true", help="print the answer after every step as it is unmasked")
    e = p.add_argument_group("evaluation (d1 Sec. 4: greedy, steps = length / 2; README 'Evaluation')")
    e.add_argument("--task", help=f"evaluate every test item of a task ({', '.join(tasks.TASKS)}) instead of --prompt")
    e.add_argument("--data", help="the test file or folder (GSM8K and MATH500 need one; Sudoku and Countdown "
                                  "default to their generator's test split)")
    e.add_argument("--lengths", default=None, help="answer lengths, comma-separated (d1: 128,256,512; "
                                                   "default: --gen_length)")
    e.add_argument("--steps_per_token", type=float, default=0.5, help="denoising steps per answer token (d1: 1/2)")
    e.add_argument("--batch_size", type=int, default=8, help="items per batch (per process under torchrun)")
    e.add_argument("--limit", type=int, default=None, help="only the first N items, for a quick look")
    e.add_argument("--n_generated", type=int, default=256, help="items drawn from a generator when there is no --data")
    e.add_argument("--out", default="runs/eval", help="folder for one JSONL per length and summary.json; a killed "
                                                     "run started again with the same flags continues")
    return p.parse_args(argv)


def check_eval_args(args):
    """Evaluation flags, before anything is loaded: the answer lengths and counts."""
    try:
        lengths = [int(n) for n in (args.lengths or str(args.gen_length)).split(",")]
    except ValueError:
        raise ValueError(f"--lengths must be whole numbers, comma-separated, not {args.lengths!r}") from None
    for name, value in (("--batch_size", args.batch_size), ("--limit", args.limit or 1),
                        ("--n_generated", args.n_generated), ("--steps_per_token", args.steps_per_token)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, not {value}")
    for n in lengths:
        kw = length_settings(n, args.steps_per_token, args.block_length)
        check_settings(kw["gen_length"], kw["steps"], kw["block_length"], args.remasking, args.temperature,
                       args.cfg_scale)
    return lengths


def evaluate_command(args):
    """sample.py --task: d1's evaluation, written to --out (eval_run), with a summary table."""
    task = tasks.get_task(args.task)
    lengths = check_eval_args(args)
    check_fast_settings(args.threshold, args.cache, args.remasking, args.cfg_scale)
    examples = tasks.examples(task, args.data, args.n_generated, args.seed, "test")[:args.limit]
    rank, world, device = init_distributed(args.device)  # run_command closes the process group
    model, tokenizer = load_model(args.model, device=device, seed=args.seed)
    decoding = {k: v for k, v in (("threshold", args.threshold), ("cache", args.cache)) if v and v != "none"}
    settings = dict(model=args.model, task=task.name, data=args.data, items=len(examples), lengths=lengths,
                    steps_per_token=args.steps_per_token, block_length=args.block_length,
                    temperature=args.temperature, batch_size=args.batch_size, seed=args.seed, **decoding)
    try:
        summary = eval_run(model, tokenizer, task, examples, settings, args.out, decoding, rank, world)
    except KeyboardInterrupt as e:  # a second signal, or one outside the batches: at once
        if isinstance(e, Stopped) and not e.at_once:
            raise
        raise Stopped(f"stopped at once; the finished batches are kept in {args.out}: the same command continues",
                      getattr(e, "signum", SIGINT)) from None
    if rank == 0:
        lines = ["| length | items | accuracy (%) | forward passes per answer |", "|---|---|---|---|"]
        lines += [f"| {n} | {len(examples)} | {acc:.2f} | {passes:.1f} |" for n, (acc, passes) in summary.items()]
        print(f"{task.name}, {args.model}, {', '.join(f'{k} {v}' for k, v in decoding.items()) or 'LLaDA decoding'}:")
        print("\n".join(lines))
        Path(args.out, "summary.json").write_text(json.dumps(dict(settings=settings, accuracy={
            n: dict(accuracy=a, forward_passes_per_answer=p) for n, (a, p) in summary.items()}), indent=2))


def main(argv=None):
    from tqdm import tqdm
    args = parse_args(argv)
    if args.task:  # one error line, a signal as exit status 130 or 143, the process group closed: as sft.py's main
        return run_command(lambda: evaluate_command(args), args.out)
    try:  # the settings first: a mistake costs no loading
        check_settings(args.gen_length, args.steps, args.block_length, args.remasking, args.temperature, args.cfg_scale)
        check_fast_settings(args.threshold, args.cache, args.remasking, args.cfg_scale)
        model, tokenizer = load_model(args.model, device=args.device, seed=args.seed)
    except (ValueError, FileNotFoundError, ImportError) as e:
        sys.exit(f"error: {e}")
    prompt = torch.tensor([tokenizer.encode(tokenizer.chat(args.prompt))], device=args.device)
    P = prompt.shape[1]
    bar = tqdm(total=args.steps, desc="denoising", disable=args.show)
    step = 0

    def on_step(x):
        nonlocal step
        step += 1
        bar.update(1)
        if args.show:
            print(f"{step:4d} | {render(tokenizer, x[0, P:])}")

    kw = dict(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length,
              temperature=args.temperature, cfg_scale=args.cfg_scale, remasking=args.remasking,
              mask_id=tokenizer.mask_id, generator=torch.Generator(args.device).manual_seed(args.seed), on_step=on_step)
    out = decode(model, prompt, threshold=args.threshold, cache=args.cache, **kw)
    bar.close()
    print(tokenizer.decode(out[0, P:].tolist()))


if __name__ == "__main__":
    main()
