"""A training run's scaffold, shared by sft.py and diffu_grpo.py: a reader of the papers never needs it.

- command-line flags from a config dataclass, with per-model defaults (`parse_config`);
- the training step's plumbing: bf16 autocast on CUDA, the gradient step with its finite-loss check,
  a synchronised clock (`autocast`, `apply_gradients`, `clock`);
- SIGINT and SIGTERM as a request to stop at the next safe point (`StopSignals`, `Stopped`);
- `Run`, the scaffold around both scripts' outer loop: the folder's lock, --resume, the log, the
  checkpoint and evaluation schedules, the stop signals, a non-finite loss, the final save; and
  `run_command`, the main of every long command;
- diffu_grpo.py's `--dry_run`: the GPU memory plan of a run, from its configs alone (`memory_plan`).

Several processes (distributed.py) and the run's files (checkpoints.py) have modules of their own.
It imports model.py, model_files.py, distributed.py and checkpoints.py, nothing above them: what it
needs from the sampler or a training script (an evaluation, an estimator's forward passes) is
passed in.
"""
import argparse
import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, field, fields
from pathlib import Path

import torch

from checkpoints import claim_out, latest_checkpoint, load_checkpoint, open_log, resume_point, save_checkpoint
from distributed import all_gather, all_reduce_grads, barrier, close_distributed, init_distributed
from model import PRESETS, Transformer, load_model, prepare_for_training, save


# ----------------------------------------------------------------------------- command-line flags

# The ranges a numeric flag may take (option(..., must=...)): parse_config answers any other value with
# one line, before anything is loaded or written.
RANGES = {">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2, "> 0": lambda v: v > 0,
          "in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1, "in (0, 1)": lambda v: 0 < v < 1}


def option(default, help, must=None):
    """A dataclass field that parse_config turns into a command-line flag with this help text; must:
    its range, a key of RANGES (None: any value)."""
    assert must is None or must in RANGES, must
    return field(default=default, metadata={"help": help, "must": must})


def check_ranges(cfg):
    """The first flag of a config whose value is outside its range, as a message (None: all hold)."""
    for f in fields(cfg):
        value, must = getattr(cfg, f.name), f.metadata.get("must")
        if must and value is not None and not (math.isfinite(value) and RANGES[must](value)):
            return f"--{f.name} must be {must}, not {value}"
    return None


def preset_of(name):
    """Whose defaults a run of --model `name` takes: the preset itself, or for a checkpoint folder
    "toy" (byte vocabulary) or "llada-8b" (LLaDA's tokenizer), as its config.json says."""
    if name in PRESETS:
        return name
    try:
        return "toy" if json.loads((Path(name) / "config.json").read_text()).get("tokenizer") == "bytes" else "llada-8b"
    except (OSError, ValueError):
        return name


def parse_config(cls, argv=None, description=None, model_defaults=None, task_defaults=None):
    """A config dataclass from command-line flags, one per field. `--model NAME` and `--task TASK` are
    read first; task_defaults[TASK] (a dict) replaces the dataclass's defaults, and model_defaults[NAME]
    replaces both: one knob scales the whole run, and a task sets what a toy run of it needs."""
    toy = cls()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=toy.model)
    pre.add_argument("--task", default=getattr(toy, "task", None))
    known = pre.parse_known_args(argv)[0]
    name, task = known.model, known.task
    defaults = {**asdict(toy), **(task_defaults or {}).get(task, {}),
                **(model_defaults or {}).get(preset_of(name), {}), "model": name}
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(cls):
        d, kind, helptext = defaults[f.name], type(getattr(toy, f.name)), f.metadata.get("help", "")
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if kind is bool:
            p.add_argument(*flags, dest=f.name, default=d, action=argparse.BooleanOptionalAction, help=helptext)
        else:
            p.add_argument(*flags, dest=f.name, default=d, type=str if kind is type(None) else kind, help=helptext)
    cfg = cls(**vars(p.parse_args(argv)))
    bad = check_ranges(cfg)
    if bad:
        raise SystemExit(f"error: {bad}")  # one line, e.g. "error: --p_mask must be in [0, 1], not 1.5"
    return cfg


def check_prompt_room(prompts, room, flag, max_seq_len, which):
    """Fail before any work when the longest of these prompts (token lists) plus `room` answer tokens,
    set by `flag`, passes the model's maximum sequence length."""
    longest = max((len(p) for p in prompts), default=0)
    if longest + room > max_seq_len:
        raise ValueError(f"the longest {which} prompt has {longest} tokens, and with {flag} {room} its sequence "
                         f"passes the model's maximum length {max_seq_len}: lower {flag}, or leave out prompts "
                         f"longer than {max_seq_len - room} tokens")


# ----------------------------------------------------------------------------- the training step

def autocast(device):
    """bf16 autocast on CUDA (the forward passes of a training step); nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


def apply_gradients(opt, params, grad_clip, loss):
    """The optimiser step after the backward pass(es) of a step whose whole-batch loss is `loss`: a
    non-finite loss or gradient norm is stopped before it reaches the weights; the gradients are
    summed over processes and clipped to grad_clip by norm."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss is {loss}")
    all_reduce_grads(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip).item()
    if not math.isfinite(grad_norm):
        raise FloatingPointError(f"gradient norm is {grad_norm}")
    opt.step()


def clock(device):
    """time.perf_counter() after the device's queued work is done (CUDA runs asynchronously: an
    unsynchronised clock would charge a phase's kernels to the next phase)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ----------------------------------------------------------------------------- stopping on a signal
# SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and `docker stop` send before they kill) stop a long
# command at its next safe point: after the training step or the evaluation batch in progress, with its
# checkpoint or part file written. A second signal stops at once.
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Stopped(KeyboardInterrupt):
    """A command stopped by a signal; the message says what is kept and how to continue. run_command
    exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message, signum=signal.SIGINT, at_once=False):
        super().__init__(message)
        self.signum, self.at_once = signum, at_once


class StopSignals:
    """While active (with StopSignals("this step") as stop: ...), SIGINT and SIGTERM only ask the work to
    stop: stop.signum is set, and the loop checks it at its next safe point. The handlers are restored
    at the first signal, so a second one stops at once. Signal handlers live in the main thread only."""

    def __init__(self, what):
        self.what, self.signum, self.previous = what, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._ask) for s in SIGNAL_NAMES}
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _ask(self, signum, frame):
        self.signum = signum
        self.restore()
        name = SIGNAL_NAMES[signum]
        print(f"\n{name}: stopping after {self.what} ({name} again stops at once)", file=sys.stderr, flush=True)


def stop_at_once(signum, frame):
    """SIGTERM outside a StopSignals block: stop as Ctrl-C does (a Stopped exception, not a silent death)."""
    raise Stopped(f"stopped at once by {SIGNAL_NAMES[signum]}", signum, at_once=True)


# ----------------------------------------------------------------------------- the run scaffold

class Run:
    """The plumbing around a training script's outer loop, the same for SFT and diffu-GRPO:

        with Run(cfg, "sft", "sft_config.json", RESUME_MAY_CHANGE) as run:   # joins torchrun
            ...check the settings and the data...
            run.check_resume(model_config)              # lock --out; --resume: is the checkpoint continuable?
            model, tokenizer, params = run.load_model() # then the weights are read
            ...make the optimiser and the generators...
            run.begin(model, opt, tokenizer, generators, evaluate)   # resume or start; open the log
            for step in run.steps("loss"):              # progress bar, signals, checkpoints
                run.log(one_step(...), "a line to print")  # then: evaluation when due, log record

    Only rank 0 prints and writes files. The run holds a lock on cfg.out, and a fresh run refuses a
    folder that holds an earlier run unless cfg.overwrite. After each step, when due: the held-out
    evaluation (which also saves the model into cfg.out), the log record, a resumable checkpoint
    (every cfg.save_every steps, at the last step and on SIGINT or SIGTERM, which then stop the run).
    After the last step the model and the settings are saved. A non-finite loss or gradient
    (FloatingPointError) stops the run with the step and the last good checkpoint in its message."""

    def __init__(self, cfg, name, config_file, may_change):
        self.cfg, self.name, self.config_file, self.may_change = cfg, name, config_file, may_change
        self.rank, self.world, cfg.device = init_distributed(cfg.device)
        self.out = Path(cfg.out)
        self.step, self.resumed, self.log_file, self.lock = None, None, None, None
        self.signals = StopSignals("this step, with a checkpoint")
        self.metrics = dict(accuracy=None)  # what run.json keeps besides the settings

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        self.signals.restore()  # the steps' generator may be left mid-loop
        for f in (self.log_file, self.lock):
            if f is not None:
                f.close()
        if kind is FloatingPointError and self.step is not None:
            last = latest_checkpoint(self.out) or "none (none written yet)"
            raise FloatingPointError(f"{error} at step {self.step}; stopped without saving, "
                                     f"the last good checkpoint is {last}") from None

    def print(self, line):
        if self.rank == 0:
            from tqdm import tqdm
            tqdm.write(line)

    def check_resume(self, model_config):
        """Lock cfg.out for this run (claim_out: a fresh run refuses an earlier run's folder unless
        --overwrite); with --resume, find the newest checkpoint that reads whole and check that this
        run can continue it, before any weight is read (resume_point)."""
        self.model_config = model_config
        self.lock = claim_out(self.out, self.cfg.resume, getattr(self.cfg, "overwrite", False), self.rank)
        if self.cfg.resume:
            self.resumed = resume_point(self.out, asdict(self.cfg), model_config, self.may_change)
            for line in self.resumed[3]:
                self.print(line)

    def load_model(self):
        """(model, tokenizer, the parameters to train) of cfg.model, on cfg.device: with LoRA adapters
        when cfg.lora_r > 0 (else every parameter trains) and gradient checkpointing when cfg.grad_ckpt."""
        cfg = self.cfg
        model, tokenizer = load_model(cfg.model, device=cfg.device, seed=cfg.seed)
        params = prepare_for_training(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets,
                                      cfg.grad_ckpt, cfg.seed)
        return model, tokenizer, params

    def begin(self, model, opt, tokenizer, generators, evaluate=None, evaluate_first=False):
        """Continue from the checkpoint (with --resume) or start afresh: a fresh run evaluates first
        when evaluate_first (accuracy_before); open the log. evaluate() returns the held-out figures,
        {"accuracy": ..., and any others to log}; None: no evaluation."""
        self.model, self.opt, self.tokenizer, self.generators = model, opt, tokenizer, generators
        self.evaluate, self.start = evaluate, 0
        if self.resumed:
            path, run, contents, _ = self.resumed
            load_checkpoint(path, contents, model, opt, generators)
            self.start, self.metrics = run["step"], run["metrics"]
        elif evaluate_first:
            first = self.evaluate()
            self.metrics = dict(accuracy_before=first["accuracy"], accuracy=first["accuracy"])
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open_log(self.out / "log.jsonl", self.start)
        if self.resumed:
            self.print(f"resuming from {self.resumed[0]} (step {self.start})")
        elif evaluate_first:
            self.print(self.figures(0, first))
            self.write_log(dict(step=0, **first))  # the starting point's figures, for the curves

    def write_log(self, record):
        """Append one record to log.jsonl (the first process writes it) and flush it to disk."""
        if self.rank == 0:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def figures(self, step, result):
        """The line printed for an evaluation: held-out accuracy and any other figures."""
        others = "".join(f" | {k} {v:.4f}" for k, v in result.items() if k != "accuracy")
        return f"step {step:5d} | held-out accuracy {result['accuracy']:.2%}{others}"

    def steps(self, show):
        """Yield the steps start+1 .. cfg.steps with a progress bar (showing the record's `show`); SIGINT
        and SIGTERM only ask the loop to stop after the step in progress. After each step: the
        evaluation when due, the log record, the checkpoint when due, and the stop on a signal. Then
        the final save."""
        from tqdm import tqdm
        cfg = self.cfg
        with self.signals:
            bar = tqdm(range(self.start + 1, cfg.steps + 1), desc=self.name, disable=self.rank != 0)
            for step in bar:
                self.step = step
                yield step
                bar.set_postfix({show: f"{self.record[show]:.3f}"})
                if self.evaluate and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                    result = self.evaluate()
                    self.record.update(result)
                    self.metrics["accuracy"] = result["accuracy"]
                    self.print(self.figures(step, result))
                    if self.rank == 0:
                        save(self.model, self.out, self.tokenizer)
                self.write_log(self.record)
                self.after_step(step)
        if self.rank == 0:
            save(self.model, self.out, self.tokenizer)
            (self.out / self.config_file).write_text(json.dumps(asdict(cfg), indent=2))

    def log(self, record, line=None):
        """The step's record (written to the log after the step) and a line to print, if any."""
        record["step"] = self.step
        self.record = record
        if line:
            self.print(f"step {self.step:5d} | {line}")

    def after_step(self, step):
        """A checkpoint every save_every steps, at the last step and on a stop signal (reaching this
        process or, under torchrun, any process: all agree); then, on a signal, stop with Stopped,
        whose message says where the checkpoint is. Stopping in the middle of a step would leave the
        weights between two optimiser steps (diffu-GRPO takes mu per step), a state no checkpoint
        could continue exactly."""
        cfg = self.cfg
        signum = next((s for s in all_gather(self.signals.signum) if s), None)
        if signum or step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            run = dict(config=asdict(cfg), model_config=asdict(self.model_config), metrics=self.metrics)
            path = save_checkpoint(self.out, step, self.model, self.opt, self.generators, run)
        if signum:
            raise Stopped(f"stopped by {SIGNAL_NAMES[signum]} after step {step}; checkpoint in {path}, "
                          f"continue with --resume", signum)


def run_command(run, out):
    """A command's main (the training scripts', sample.py --task's, reproduce.py's): run(), with
    configuration and data mistakes, a non-finite loss and a failed write (a full disk) as one
    `error: ...` line; a stop by Ctrl-C or SIGTERM (after its checkpoint; Stopped says what is kept)
    as exit status 130 or 143; the process group closed. SIGTERM outside a step stops as Ctrl-C does."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop_at_once)
    try:
        run()
        barrier()  # every process done before the group closes: a rank leaving early can abort the other's exit
    except (ValueError, OSError, ImportError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else f"interrupted; the last checkpoint in {out} is kept", file=sys.stderr)
        raise SystemExit(128 + getattr(e, "signum", signal.SIGINT))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        close_distributed()


# ----------------------------------------------------------------------------- diffu_grpo.py --dry_run: memory plan

GiB = 2 ** 30


def memory_plan(cfg, mcfg, passes=1):
    """Estimated peak GPU memory (bytes) of a diffu-GRPO run, item by item, from the configs alone:
    bf16 weights, fp32 LoRA parameters with their gradients and AdamW moments, the activations of one
    micro-batch in the update (block inputs kept, one block recomputed, with gradient checkpointing),
    the answer-position logits, and the rollout batch in generation, whose vocabulary-wide float64
    temporaries of a sampling step (noise, its logs, the softmax) peak at 32 bytes per logit, as
    measured (bench/cpu_8b_width.py). An upper-bound style estimate: it counts the attention scores
    as if no fused attention kernel were used. passes: forward passes
    of one log-likelihood estimate (diffu_grpo.ESTIMATORS); each keeps its graph until the backward."""
    C, H, nl, V = mcfg.d_model, mcfg.mlp_hidden, mcfg.n_layers, mcfg.vocab_size
    with torch.device("meta"):
        n_params = sum(p.numel() for p in Transformer(mcfg).parameters())
    shapes = dict(q_proj=(C, C), k_proj=(C, C), v_proj=(C, C), attn_out=(C, C), ff_proj=(C, H), up_proj=(C, H),
                  ff_out=(H, C))
    targets = cfg.lora_targets.split(",")
    lora = nl * sum(cfg.lora_r * (shapes[t][0] + shapes[t][1]) for t in targets) if cfg.lora_r else 0
    trainable = lora or n_params
    mb = cfg.micro_batch or cfg.prompts_per_step * cfg.num_generations
    T, L = cfg.prompt_length + cfg.gen_length, cfg.gen_length
    block = mb * T * (6 * C + 4 * H) * 2 + mb * mcfg.n_heads * T * T * 4  # bf16 tensors + fp32 scores
    acts = passes * ((nl * mb * T * C * 2 + 2 * block) if cfg.grad_ckpt else nl * block)
    each = f", x {passes} passes" if passes > 1 else ""
    ckpt = ", checkpointed" if cfg.grad_ckpt else ""
    N = cfg.prompts_per_step * cfg.num_generations
    return [("weights (bf16)", n_params * 2),
            (f"trainable parameters, fp32 ({trainable / 1e6:.0f}M{' LoRA' if lora else ''})", trainable * 4),
            ("their gradients (fp32)", trainable * 4),
            ("AdamW moments (2 x fp32)", trainable * 8),
            (f"update activations (micro-batch {mb} x {T} tokens{ckpt}{each})", acts),
            (f"answer logits (micro-batch {mb} x {L} x {V}: bf16, fp32, grad{each})", passes * mb * L * V * 10),
            (f"generation: {N} sequences, one layer's activations, block logits (fp32) and float64 sampling "
             f"temporaries (32 bytes a logit)",
             N * T * (4 * C + 3 * H) * 2 + N * cfg.block_length * V * (4 + 32))]


def print_plan(cfg, mcfg, passes=1):
    items = memory_plan(cfg, mcfg, passes)
    print(f"memory plan for --model {cfg.model} (d_model {mcfg.d_model}, {mcfg.n_layers} layers, "
          f"vocab {mcfg.vocab_size}), LoRA r {cfg.lora_r}, {cfg.prompts_per_step} prompts x "
          f"{cfg.num_generations} answers of {cfg.gen_length} tokens")
    gen = items[-1][1]
    train = sum(b for _, b in items[:-1])
    peak = sum(b for _, b in items[:4]) + max(gen, train - sum(b for _, b in items[:4]))
    for name, b in items:
        print(f"{b / GiB:8.2f} GiB  {name}")
    print(f"{peak / GiB:8.2f} GiB  estimated peak (weights and optimiser state + the larger of update and generation)")
    print("fits one 80 GB GPU" if peak < 76 * GiB else "does NOT fit one 80 GB GPU: lower --micro_batch or use LoRA")
    return peak
