"""A training run's plumbing, shared by sft.py and diffu_grpo.py: a reader of the papers never needs it.

- command-line flags from a config dataclass, with per-model defaults (`parse_config`);
- several processes under torchrun: the process group, each process's share of a batch, sums and
  gathers over processes, the gradient sum (`init_distributed` ... `apply_gradients`);
- resumable checkpoints with every random generator's state (`save_checkpoint`, `resume_point`,
  `load_checkpoint`) and the JSONL log (`open_log`);
- `Run`, the scaffold around both scripts' outer loop: --resume, the log, the checkpoint and
  evaluation schedules, Ctrl-C, a non-finite loss, the final save; and `run_command`, their main;
- sample.py --task's resumable output: one part file per finished batch, joined at the end (`Parts`);
- diffu_grpo.py's `--dry_run`: the GPU memory plan of a run, from its configs alone (`memory_plan`).

It imports model.py and model_files.py and nothing above them: what it needs from the sampler or a
training script (an evaluation, an estimator's forward passes) is passed in.

Data parallelism is written out by hand rather than with torch's DistributedDataParallel wrapper:
each process computes the loss of its share of the batch divided by the *whole* batch's normaliser
(SFT's mean over all sequences, diffu-GRPO's answer-token count of all rollouts), so the gradients
must be summed over processes, not averaged as DDP does. One all_reduce per trainable tensor after
the last micro-batch also needs no no_sync() for micro-batching, works unchanged with LoRA (only
the adapters have gradients), and leaves the model unwrapped for model.save and the adapters-off
reference policy. What it gives up is DDP's overlap of communication with the backward pass.
In a plain `python` run there is no process group, and every helper that communicates returns at
once without calling torch.distributed.
"""
import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, field, fields
from pathlib import Path

import torch

from model import PRESETS, Transformer, load_model, prepare_for_training, save
from model_files import CheckpointError, names_list, replace_durably


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


# ----------------------------------------------------------------------------- torchrun

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


def share(n, rank, world):
    """This process's rows of a batch of n: contiguous shares that differ by at most one row and
    together make the whole batch, in order."""
    return slice(rank * n // world, (rank + 1) * n // world)


def whole_batch(shape):
    """(this process's rows, N, P) of the batch that all processes' (n, p) blocks make in rank order:
    N rows in all, P the widest; (all rows, n, p) in a plain run. Random draws of shape (N, P) made
    alike on every process and cut to [rows, P - p:] (left-padded prompts end at the last column) are
    then what one process would draw for the whole batch."""
    rank = rank_world()[0]
    sizes = all_gather(tuple(shape))  # [(n, p) of each process]
    lo = sum(n for n, _ in sizes[:rank])
    return slice(lo, lo + shape[0]), sum(n for n, _ in sizes), max(p for _, p in sizes)


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


def barrier():
    """Wait until every process gets here; at once in a plain run."""
    if _distributed():
        torch.distributed.barrier()


def check_world(flag, n, world):
    """Every process needs at least one row of a batch of n (set by --flag)."""
    if n < world:
        raise ValueError(f"--{flag} {n} is smaller than the number of processes ({world}): raise it or start fewer "
                         f"processes")


def over_processes(items, measure):
    """The sums that measure(these items, rank) returns (a list of numbers), added over processes: each
    process measures every world-th item. A held-out evaluation split over torchrun's processes."""
    rank, world = rank_world()
    return all_reduce_sum(measure(items[rank::world], rank))


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


# ----------------------------------------------------------------------------- resumable checkpoints
# out/checkpoint-NNNNNN/ beside the model folder's own files, the newest two kept (a damaged newest one
# leaves the one before it to resume from).
#   run.json               step, the run's settings, the model's config, metrics, number of processes
#   trainable.safetensors  the trained parameters (with LoRA: only the adapters)
#   state.pt               optimizer state and every process's RNG states (uint8 tensors), read back
#                          with torch.load(weights_only=True): loading a checkpoint cannot run code
CHECKPOINT, KEEP = "checkpoint-", 2


def clock(device):
    """time.perf_counter() after the device's queued work is done (CUDA runs asynchronously: an
    unsynchronised clock would charge a phase's kernels to the next phase)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


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


def checkpoints(out):
    """The complete checkpoint folders of out, newest first (a .tmp folder is an unfinished save)."""
    done = [p for p in Path(out).glob(CHECKPOINT + "*") if p.name[len(CHECKPOINT):].isdigit()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT):]), reverse=True)


def latest_checkpoint(out):
    """The newest complete checkpoint folder in out, or None."""
    return next(iter(checkpoints(out)), None)


def save_checkpoint(out, step, model, opt, generators, run):
    """Write out/checkpoint-{step} (layout above), keep the newest KEEP and delete older ones. Atomic and
    durable: the folder is written as checkpoint-{step}.tmp, flushed to disk and renamed when whole,
    and older checkpoints are deleted only after that, so a kill or a power loss during a save leaves
    the previous checkpoints intact. A failed write (a full disk) removes the .tmp folder and stops
    with one line. Every process calls this (their RNG states are gathered); rank 0 writes."""
    states = all_gather(rng_states(generators))
    out = Path(out)
    final = out / f"{CHECKPOINT}{step:06d}"
    if rank_world()[0] == 0:
        tmp = out / (final.name + ".tmp")
        trained = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        state = dict(optimizer=opt.state_dict(), rng=states)
        try:
            write_checkpoint(tmp, trained, state, dict(run, step=step, world_size=len(states)))
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(write_failure(out, final.name, e, nbytes(trained) + nbytes(state))) from None
        if final.exists():  # an earlier run's checkpoint of the same step, in a folder this run took over
            shutil.rmtree(final)
        replace_durably(tmp, final)
        for old in checkpoints(out)[KEEP:]:
            shutil.rmtree(old)
    barrier()  # every process returns once the checkpoint is on disk
    return final


def write_checkpoint(folder, trained, state, run):
    from safetensors.torch import save_file
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file(trained, str(folder / "trainable.safetensors"))
    torch.save(state, folder / "state.pt")
    (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")


def nbytes(tree):
    """The bytes of every tensor in a nest of dicts and lists."""
    if torch.is_tensor(tree):
        return tree.numel() * tree.element_size()
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else ()
    return sum(nbytes(t) for t in items)


def write_failure(out, name, error, need):
    """One line for a checkpoint that could not be written: where, why, the space it needs and has."""
    free = shutil.disk_usage(out).free
    why = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip().rsplit(": ", 1)[-1]
    if not isinstance(error, OSError) and free < need:  # torch.save says "unexpected pos ..." on a full disk
        why = "no space left on the device"
    kept = latest_checkpoint(out)
    return (f"could not write {name} into {out} ({why}): a checkpoint needs about {need / 2 ** 20:.1f} MiB and "
            f"{free / 2 ** 20:.1f} MiB are free; {f'{kept.name} is kept' if kept else 'no earlier checkpoint'}")


def read_checkpoint(path):
    """(run.json, trained tensors, state) of a checkpoint folder, every file read whole; a missing,
    truncated or unreadable file is a CheckpointError that names it."""
    from safetensors.torch import load_file
    path, name = Path(path), "run.json"
    try:
        run = json.loads((path / name).read_text())
        name = "trainable.safetensors"
        trained = load_file(str(path / name))
        name = "state.pt"
        state = torch.load(path / name, map_location="cpu", weights_only=True)
    except Exception as e:  # json, safetensors and torch each raise their own kinds
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path / name} is damaged ({why})") from None
    return run, trained, state


def resume_point(out, config, model_config, may_change):
    """The newest checkpoint of out that reads whole, after checking that it can be continued: written
    with the same settings as `config` (a dict; the names in may_change excepted: steps, evaluation,
    logging), the same model config and the same number of processes. The errors say what differs.
    Returns (path, run.json, (trained tensors, state), [a line for each damaged newer checkpoint])."""
    found, damaged = checkpoints(out), []
    if not found:
        raise FileNotFoundError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}NNNNNN) to continue")
    for path in found:
        try:
            run, trained, state = read_checkpoint(path)
            break
        except CheckpointError as e:
            damaged.append(f"--resume: {e}")
    else:
        raise CheckpointError(f"--resume: no checkpoint in {out} reads whole ({'; '.join(damaged)})")
    damaged = [f"{line}: resuming from {path.name}" for line in damaged]
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
    return path, run, (trained, state), damaged


def load_checkpoint(path, contents, model, opt, generators):
    """Put a checkpoint's contents (read_checkpoint's tensors and state) into the model's trained
    parameters, the optimizer and the generators (this process's RNG states)."""
    trained, state = contents
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    wrong = sorted(set(trained) ^ set(params)) + [n for n in trained.keys() & params.keys()
                                                  if trained[n].shape != params[n].shape]
    if wrong:
        raise CheckpointError(f"{path} does not hold this run's trained parameters: {names_list(wrong)}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(trained[n])
    opt.load_state_dict(state["optimizer"])
    set_rng_states(state["rng"][rank_world()[0]], generators)


# ----------------------------------------------------------------------------- one run per folder

def lock_folder(out):
    """Hold out/.lock for as long as the returned file stays open: one run per folder. The lock is the
    operating system's (flock), so a crashed run's lock is released with its process. A folder in use
    raises ValueError naming the process that holds it."""
    import fcntl
    import socket
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise ValueError(f"{out} is in use by another run ({who}): wait for it to end, or choose another --out") \
            from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


RUN_FILES = ("log.jsonl", "model.safetensors")  # besides checkpoints: what a run leaves in its folder


def earlier_run(out):
    """The names of what an earlier run left in out (checkpoints, its log, its model); [] when none."""
    out = Path(out)
    return [p.name for p in sorted(out.glob(CHECKPOINT + "*"))] + [n for n in RUN_FILES if (out / n).exists()]


def claim_out(out, resume, overwrite, rank):
    """Lock the folder for this run (rank 0 holds the lock), and unless the run resumes, refuse one that
    holds an earlier run, or with overwrite remove that run's checkpoints. Every process gets the same
    answer (torchrun). Returns the lock's file (None on other processes)."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = lock_folder(out)
            found = [] if resume else earlier_run(out)
            if found and not overwrite:
                raise ValueError(f"{out} holds an earlier run ({names_list(found, 4)}): continue it with --resume, "
                                 f"choose another --out, or replace it with --overwrite")
            for old in Path(out).glob(CHECKPOINT + "*") if found else ():
                shutil.rmtree(old)
        except ValueError as e:
            error = str(e)
    error = next((e for e in all_gather(error) if e), None)
    if error:
        if lock:
            lock.close()
        raise ValueError(error)
    return lock


def open_log(path, keep_until=0):
    """The run's JSONL log, open for appending: a fresh run (keep_until 0) starts it empty; a resumed
    run keeps the records up to its checkpoint's step (later ones are made again)."""
    path = Path(path)
    kept = []
    if keep_until and path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= keep_until]
    path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")


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
        self._restore()

    def _restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _ask(self, signum, frame):
        self.signum = signum
        self._restore()
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
        self.signals._restore()
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
    except (ValueError, OSError, ImportError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else f"interrupted; the last checkpoint in {out} is kept", file=sys.stderr)
        raise SystemExit(128 + getattr(e, "signum", signal.SIGINT))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        close_distributed()


# ----------------------------------------------------------------------------- resumable part files
# sample.py --task writes one part file per finished batch, out/.parts/<name>/NNNNNN.jsonl (atomic), and
# joins them into out/<name>.jsonl when every batch is done: a killed run loses at most the batches in
# progress, and torchrun's processes share the missing batches.

@contextmanager
def claim_folder(out, settings, rank):
    """Use the folder out for an evaluation with these settings (a dict, kept in out/eval_settings.json)
    while the with block lasts: locked to this run (process 0 holds the lock), and one that holds an
    evaluation with other settings is refused; process 0 writes them."""
    out, saved = Path(out), Path(out) / "eval_settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        raise ValueError(f"{out} holds an evaluation with other settings ({saved}): choose another --out or delete it")
    lock = claim_out(out, resume=True, overwrite=False, rank=rank)  # the same settings continue: no overwrite check
    try:
        if rank == 0:
            saved.write_text(json.dumps(settings, indent=2))
        yield
    finally:
        if lock is not None:
            lock.close()


class Parts:
    """The part files of one output, out/<name>.jsonl, written batch by batch."""

    def __init__(self, out, name):
        self.final, self.folder = Path(out) / f"{name}.jsonl", Path(out) / ".parts" / name

    def file(self, k):
        return self.folder / f"{k:06d}.jsonl"

    def missing(self, n_batches, rank, world):
        """This process's share of the batches not yet written (every world-th); none when the output
        is finished."""
        if self.final.is_file():
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        return [k for k in range(n_batches) if not self.file(k).is_file()][rank::world]

    def write(self, k, records):
        """Batch k's records (dicts), one JSON line each, written atomically."""
        tmp = self.file(k).with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.file(k))

    def join(self, n_batches):
        """Join the parts in order into the output (once, atomically) and remove them; returns its records."""
        if not self.final.is_file():
            text = "".join(self.file(k).read_text(encoding="utf-8") for k in range(n_batches))
            self.final.with_suffix(".tmp").write_text(text, encoding="utf-8")
            os.replace(self.final.with_suffix(".tmp"), self.final)
            shutil.rmtree(self.folder)
            if not any(self.folder.parent.iterdir()):
                self.folder.parent.rmdir()
        return [json.loads(line) for line in self.final.read_text(encoding="utf-8").splitlines()]


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
