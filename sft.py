"""Masked SFT: d1's first stage, with LLaDA's SFT objective.

LLaDA (arXiv 2502.09992) Sec. 2.3, Eq. 5 and Alg. 2; d1 (arXiv 2504.12216) Sec. 3.3.
For a (prompt p0, answer r0) pair, draw t per sequence, mask each *answer* token independently
with probability t (the prompt is never masked), and train the mask predictor to recover the
masked answer tokens, each cross-entropy weighted by 1/t:

    L = - E_t [ (1 / (t L')) sum_i 1[r_t^i = M] log p_theta(r_0^i | p0, r_t) ]        (Eq. 5, Alg. 2)

L' is the answer length *including* its end-of-text padding: the padding is part of the answer,
masked and predicted like any token, so the model learns where to stop (LLaDA Sec. 2.3).

    python sft.py                                   # toy model, toy Sudoku, a few minutes on a CPU
    python sft.py --task countdown --steps 600
    python sft.py --model path/to/LLaDA-8B-Instruct --task s1k --data s1k.jsonl   # d1's SFT data
    torchrun --standalone --nproc_per_node 8 sft.py --model llada-8b --data s1k.jsonl   # 8 GPUs
    python sft.py --resume                          # continue runs/sft-toy from its newest checkpoint

Departures:
1. t = (1 - eps) U(0,1) + eps with eps = 1e-3, as LLaDA's code (avoids dividing by t near 0).
2. The loss is normalised per sequence by its answer length L', then averaged over the batch (LLaDA
   Eq. 5). d1's code divides the batch sum by the number of answer tokens in the batch instead
   (`--norm batch`); the two agree when all answers have the same length, as in the toy tasks.
3. Logits are computed only at the masked answer positions; nothing else enters the loss.
4. A row longer than the model's maximum sequence length is cut there, losing the end of its answer
   (d1 trains on s1K at sequence length 4096, LLaDA-8B's maximum).

Several processes (torchrun, one GPU each): every process draws the same whole batch and masks and
computes the loss of its own rows over the whole batch's normaliser (sft_step); distributed.py,
checkpoints.py and runs.py hold the rest of the plumbing (gradient sum, checkpoints, --resume, Ctrl-C
and SIGTERM, the log).
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import tasks
from model import config_and_tokenizer, default_device
from distributed import all_reduce_sum, check_world, rank_world, share
from runs import Run, apply_gradients, autocast, check_prompt_room, option, parse_config, run_command
from sample import check_settings, encode_prompt, held_out_accuracy, prompt_style


@dataclass
class SFTConfig:
    model: str = option("toy", "a preset (random init) or a checkpoint folder to start from")
    task: str = option("sudoku", f"a task of tasks.py ({', '.join(tasks.TASKS)}) or s1k (needs --data)")
    data: str = option(None, "training data file (default: the task's seeded generator)")
    test_data: str = option(None, "held-out data file (default: the task's generator, test split)")
    n_train: int = option(1000, "labeled training examples drawn from the generator (d1's s1K: 1,000)", must=">= 1")
    n_eval: int = option(256, "held-out examples evaluated every eval_every steps", must=">= 1")
    steps: int = option(300, "optimiser steps", must=">= 1")
    batch_size: int = option(64, "sequences per optimiser step (the whole batch, over all processes)", must=">= 1")
    micro_batch: int = option(0, "sequences per forward/backward on each process; their gradients add up to the "
                                 "batch's (gradient accumulation; 0: a process's share at once)", must=">= 0")
    lr: float = option(1e-3, "peak learning rate (linear warmup, then --schedule)", must="> 0")
    warmup: int = option(20, "warmup steps", must=">= 0")
    schedule: str = option("constant", "after warmup: constant, or linear decay to 0 at --steps (d1's Trainer)")
    weight_decay: float = option(0.1, "AdamW weight decay (LLaDA: 0.1)", must=">= 0")
    adam_beta2: float = option(0.95, "AdamW's second-moment decay (d1's Trainer: 0.999)", must="in [0, 1)")
    grad_clip: float = option(1.0, "gradient-norm clip", must="> 0")
    eps: float = option(1e-3, "t = (1 - eps) U + eps", must="in (0, 1)")
    norm: str = option("sequence", "loss normalisation: sequence (LLaDA) or batch (d1's code)")
    answer_length: int = option(16, "answers are padded with end-of-text to this many tokens (cut if longer)",
                                must=">= 1")
    gen_length: int = option(16, "answer length of the evaluation sampler", must=">= 1")
    block_length: int = option(16, "block length of the evaluation sampler", must=">= 1")
    diffusion_steps: int = option(16, "denoising steps of the evaluation sampler", must=">= 1")
    log_every: int = option(25, "print a log line every this many steps", must=">= 1")
    eval_every: int = option(100, "evaluate every this many steps (0: only at the end)", must=">= 0")
    lora_r: int = option(0, "LoRA rank (0: train every parameter)", must=">= 0")
    lora_alpha: float = option(16.0, "LoRA alpha (the update is scaled by alpha / r)", must="> 0")
    lora_dropout: float = option(0.0, "dropout on the LoRA input", must="in [0, 1)")
    lora_targets: str = option("q_proj,k_proj,v_proj", "projections that get adapters (d1's SFT: q, k, v)")
    grad_ckpt: bool = option(False, "gradient checkpointing per block (recompute activations in backward)")
    out: str = option("runs/sft-toy", "folder for the model, its checkpoints and log.jsonl")
    save_every: int = option(100, "write a resumable checkpoint every this many steps (also at the end, on "
                             "Ctrl-C or SIGTERM)", must=">= 0")
    resume: bool = option(False, "continue the run in --out from its newest checkpoint (--steps may grow)")
    overwrite: bool = option(False, "replace an earlier run in --out (its checkpoints and log) instead of stopping")
    seed: int = option(0, "seed of the weights, the data order and the masks", must=">= 0")
    device: str = option(default_device(), "cuda, mps or cpu")


# d1's SFT for LLaDA-8B as its released code ran it (d1 Sec. 3.3 and 4: s1K, 20 epochs, sequence length 4096;
# SFT/sft_train.py with transformers 4.49's Trainer defaults): per-device batch 1 x gradient accumulation 4 x
# 4 GPUs = 16 sequences per step, 1,250 steps (20 epochs of 1,000), lr 1e-5 decayed linearly, no warmup,
# AdamW (0.9, 0.999), wd 0.1, clip 1.0; LoRA r 128, alpha 256, dropout 0.05 on q, k, v; rows padded to 4096.
MODEL_DEFAULTS = {"llada-8b": dict(task="s1k", lr=1e-5, warmup=0, schedule="linear", adam_beta2=0.999, grad_clip=1.0,
                                   batch_size=16, micro_batch=1, steps=1250, answer_length=3840, gen_length=256,
                                   block_length=32, diffusion_steps=128, norm="batch", lora_r=128, lora_alpha=256.0,
                                   lora_dropout=0.05, grad_ckpt=True, out="runs/sft-llada-8b", n_eval=64)}

# A toy run of each task pads answers to its sampler's length and evaluates with its sampler (tasks.py)
TASK_DEFAULTS = {name: dict(answer_length=t.toy_sampler["gen_length"], **t.toy_sampler) for name, t in tasks.TASKS.items()}

# Settings that --resume lets differ from the checkpoint's: none of them changes the training itself.
RESUME_MAY_CHANGE = ("steps", "resume", "overwrite", "device", "out", "log_every", "eval_every", "save_every",
                     "n_eval", "micro_batch", "test_data", "gen_length", "block_length", "diffusion_steps")


# ----------------------------------------------------------------------------- the objective

def pad_answers(tokenizer, pairs, gen_length, max_len=None):
    """(prompt ids, answer ids) pairs -> (B, T) rows [prompt | answer | EOS ...] and prompt lengths (B,).

    Each answer is padded with end-of-text to gen_length, then every row to the longest row; all
    of the padding belongs to the answer (LLaDA Sec. 2.3). A row is cut at max_len tokens."""
    rows, prompt_len = [], []
    for p, a in pairs:
        n = gen_length if max_len is None else min(gen_length, max_len - len(p))
        a = a[:n]
        rows.append(p + a + [tokenizer.eos_id] * (n - len(a)))
        prompt_len.append(len(p))
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.eos_id] * (T - len(r)) for r in rows], dtype=torch.long)
    return ids, torch.tensor(prompt_len)


def forward_process(ids, prompt_len, mask_id, eps=1e-3, generator=None):
    """Mask each answer token with probability t, never the prompt (LLaDA Eq. 7 on the answer, Alg. 2).
    Returns noisy ids (B, T), the mask (B, T) and t (B,)."""
    B, T = ids.shape
    t = (1 - eps) * torch.rand(B, generator=generator) + eps  # (B,)
    answer = torch.arange(T)[None, :] >= prompt_len[:, None]  # (B, T)
    masked = (torch.rand(B, T, generator=generator) < t[:, None]) & answer
    return ids.masked_fill(masked.to(ids.device), mask_id), masked.to(ids.device), t.to(ids.device)


def sft_loss(model, x0, xt, masked, t, answer_len, norm="sequence", whole=None):
    """Eq. 5 / Alg. 2 on a batch noised by forward_process: the sum over masked answer tokens of CE / t,
    over the answer length. x0 (B, T) clean ids, xt (B, T) noisy ids, masked (B, T), t (B,), answer_len
    (B,) including the EOS padding. The mean is over the batch's sequences (norm "sequence") or its
    answer tokens ("batch"); whole replaces that count, so that the losses of the shares of a batch
    split over processes add up to the batch's. Returns (loss, unscaled loss = mean CE over masked
    tokens, number of masked tokens)."""
    if whole is None:
        whole = x0.shape[0] if norm == "sequence" else answer_len.sum()
    logits = model(xt, logits_at=masked)  # (N, V): only the masked positions
    ce = F.cross_entropy(logits.float(), x0[masked], reduction="none")  # (N,)
    row = masked.nonzero()[:, 0]  # (N,) the sequence of each masked token
    weighted = torch.zeros(x0.shape[0], device=x0.device).index_add_(0, row, ce / t[row])  # (B,)
    loss = (weighted / answer_len if norm == "sequence" else weighted).sum() / whole
    n = int(masked.sum())
    return loss, ce.sum() / max(n, 1), n


# ----------------------------------------------------------------------------- data

def s1k_records(path):
    """s1K-style records from JSON or JSON Lines: question, reasoning trace, answer.

    Reads s1K's own columns (question, thinking_trajectories, attempt, solution) or the partial
    copy's (problem, solution, thinking). Where a record has no reasoning trace its solution stands
    in; where it has no attempt, the solution is the answer."""
    text = Path(path).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in lines]
    out = []
    for i, r in enumerate(rows):
        question = r.get("question") or r.get("problem")
        if not question:
            raise ValueError(f"{path}: record {i} has no question (or problem) field")
        trace = r.get("thinking_trajectories") or r.get("thinking") or r.get("solution") or ""
        trace = trace[0] if isinstance(trace, list) else trace
        answer = r.get("attempt") or r.get("solution") or ""
        out.append(dict(question=question, reasoning=trace, answer=answer))
    if not out:
        raise ValueError(f"{path} holds no records")
    return out


def s1k_pairs(tokenizer, records):
    """d1's SFT rows: chat-templated system prompt + question, then
    <reasoning>{trace}</reasoning>\\n<answer>{answer}</answer> and end-of-turn."""
    pairs = []
    for r in records:
        prompt = tokenizer.encode(tokenizer.chat(tasks.XML_SYSTEM_PROMPT + "\n\n" + r["question"]))
        target = f"<reasoning>{r['reasoning']}</reasoning>\n<answer>{r['answer']}</answer>"
        pairs.append((prompt, tokenizer.encode(target) + [tokenizer.eot_id]))
    return pairs


def task_pairs(tokenizer, task, examples, style):
    """(prompt ids, answer ids) of a task's worked solutions; chat answers end with end-of-turn."""
    eot = [tokenizer.eot_id] if style == "chat" else []
    return [(encode_prompt(tokenizer, task, ex, style), tokenizer.encode(task.target(ex, style)) + eot)
            for ex in examples]


# ----------------------------------------------------------------------------- the loop

def lr_at(step, cfg):
    """Linear warmup to cfg.lr, then constant or a linear decay that reaches 0 after the last step."""
    warm = min(1.0, step / max(cfg.warmup, 1))
    if cfg.schedule == "linear" and step > cfg.warmup:
        return cfg.lr * max(0.0, (cfg.steps - step + 1) / max(cfg.steps - cfg.warmup, 1))
    return cfg.lr * warm


def setup(cfg, world=1):
    """Check the settings before any work, each message saying what to change. Returns the task
    (None for s1k), the model's config and its tokenizer; no weights are read yet."""
    if cfg.norm not in ("sequence", "batch"):
        raise ValueError(f"--norm must be sequence or batch, not {cfg.norm!r}")
    if cfg.schedule not in ("constant", "linear"):
        raise ValueError(f"--schedule must be constant or linear, not {cfg.schedule!r}")
    if cfg.task == "s1k" and not cfg.data:
        raise ValueError("--task s1k needs --data: a JSON/JSONL copy of simplescaling/s1K")
    if cfg.task != "s1k" and cfg.task not in tasks.TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; known tasks: {', '.join(tasks.TASKS)}, s1k")
    task = None if cfg.task == "s1k" else tasks.get_task(cfg.task)
    if task:
        check_settings(cfg.gen_length, cfg.diffusion_steps, cfg.block_length, "low_confidence", 0.0, 0.0)
    check_world("batch_size", cfg.batch_size, world)
    mcfg, tokenizer = config_and_tokenizer(cfg.model)
    return task, mcfg, tokenizer


def training_data(cfg, task, tokenizer, style, max_seq_len, train_examples=None, test_examples=None):
    """The (prompt ids, answer ids) pairs to train on and the held-out examples: s1K's records, or a
    task's worked solutions (example lists, when given, replace the task's data). Every training
    prompt must leave room for an answer, every held-out prompt for gen_length tokens."""
    if task is None:
        pairs, test = s1k_pairs(tokenizer, s1k_records(cfg.data)), []
    else:
        train_examples, test = tasks.run_examples(task, cfg, train_examples, test_examples)
        pairs = task_pairs(tokenizer, task, train_examples, style)
    longest = max(len(p) for p, _ in pairs)
    if longest >= max_seq_len:
        raise ValueError(f"the longest training prompt has {longest} tokens: no room for an answer within the "
                         f"model's maximum sequence length {max_seq_len}; leave out prompts that long")
    test_prompts = [encode_prompt(tokenizer, task, ex, style, for_eval=True) for ex in test]
    check_prompt_room(test_prompts, cfg.gen_length, "--gen_length", max_seq_len, "held-out")
    return pairs, test


def sft_step(net, opt, params, tokenizer, pairs, cfg, g, step):
    """One optimiser step on cfg.batch_size pairs drawn from g (with replacement). Under torchrun every
    process draws the same batch and masks and computes the loss of its own rows over the whole
    batch's normaliser; the gradients are summed. Returns the log record and the batch's token count."""
    batch = [pairs[i] for i in torch.randint(len(pairs), (cfg.batch_size,), generator=g).tolist()]
    ids, prompt_len = pad_answers(tokenizer, batch, cfg.answer_length, net.config.max_seq_len)  # (B, T)
    ids = ids.to(cfg.device)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    noisy, masked, t = forward_process(ids, prompt_len, tokenizer.mask_id, cfg.eps, g)  # the whole batch's
    answer_len = (ids.shape[1] - prompt_len).to(ids.device).float()  # (B,) includes the EOS padding
    whole = cfg.batch_size if cfg.norm == "sequence" else answer_len.sum()  # the whole batch's normaliser
    rows = share(cfg.batch_size, *rank_world())  # this process's rows
    size = cfg.micro_batch or cfg.batch_size
    opt.zero_grad(set_to_none=True)
    total = ce = n = 0.0
    for i in range(rows.start, rows.stop, size):  # gradient accumulation: each micro-batch's loss is
        c = slice(i, min(i + size, rows.stop))  # over the whole batch's normaliser, so the gradients add up
        with autocast(cfg.device):
            loss, unscaled, k = sft_loss(net, ids[c], noisy[c], masked[c], t[c], answer_len[c], cfg.norm, whole)
        loss.backward()
        total, ce, n = total + loss.item(), ce + unscaled.item() * k, n + k
    total, ce, n = all_reduce_sum([total, ce, n])  # the whole batch's
    apply_gradients(opt, params, cfg.grad_clip, total)
    return dict(step=step, loss=total, unscaled=ce / max(n, 1), lr=lr_at(step, cfg)), ids.numel()


def train(cfg, train_examples=None, test_examples=None):
    """Run masked SFT; returns (model, final held-out accuracy or None). Example lists, when given,
    replace the task's data (reproduce.py builds its own distributions). Under torchrun, every
    process calls this. Ctrl-C or SIGTERM stops after the step in progress, writes a checkpoint and
    raises runs.Stopped; a non-finite loss raises FloatingPointError and writes nothing."""
    with Run(cfg, "sft", "sft_config.json", RESUME_MAY_CHANGE) as run:
        task, mcfg, tokenizer = setup(cfg, run.world)
        style = prompt_style(mcfg)
        pairs, test = training_data(cfg, task, tokenizer, style, mcfg.max_seq_len, train_examples, test_examples)
        run.check_resume(mcfg)
        net, tokenizer, params = run.load_model()  # LoRA and gradient checkpointing as cfg says
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(cfg.seed)  # data order and masks: the same on every process
        evaluate = (lambda: dict(accuracy=held_out_accuracy(net, tokenizer, task, test, style, cfg))) if task else None
        run.begin(net, opt, tokenizer, dict(g=g), evaluate)
        net.train()
        t0, tokens = time.time(), 0
        for step in run.steps(show="loss"):
            record, n_tokens = sft_step(net, opt, params, tokenizer, pairs, cfg, g, step)
            tokens += n_tokens
            line = None
            if step % cfg.log_every == 0 or step == cfg.steps:
                dt = time.time() - t0
                record.update(tokens_per_s=tokens / dt, seqs_per_s=(step - run.start) * cfg.batch_size / dt)
                line = (f"loss {record['loss']:.4f} | unscaled {record['unscaled']:.4f} | "
                        f"{record['tokens_per_s']:.0f} tok/s")
            run.log(record, line)
    return net, run.metrics["accuracy"]


def main(argv=None):
    cfg = parse_config(SFTConfig, argv, __doc__.split("\n\n")[0], MODEL_DEFAULTS, TASK_DEFAULTS)

    def run():
        net, acc = train(cfg)
        if rank_world()[0] == 0:
            print(f"SFT done: checkpoint in {cfg.out}" + (f", held-out accuracy {acc:.2%}" if acc is not None else ""))

    run_command(run, cfg.out)


if __name__ == "__main__":
    main()
