"""A run's files: resumable checkpoints, one run per folder, the log, and the evaluation command's
part files. Plumbing that a reader of the papers never needs.

- resumable checkpoints with every random generator's state, the newest two kept, written durably,
  read back whole or not at all (`save_checkpoint`, `resume_point`, `load_checkpoint`);
- one run per folder (`lock_folder`), and no silent overwrite of an earlier run (`claim_out`);
- the JSONL log (`open_log`);
- sample.py --task's resumable output: one part file per finished batch, joined at the end
  (`claim_folder`, `Parts`).

Imports model_files.py and distributed.py, nothing above them.
"""
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from distributed import all_gather, barrier, rank_world
from model_files import CheckpointError, names_list, replace_durably


# ----------------------------------------------------------------------------- resumable checkpoints
# out/checkpoint-NNNNNN/ beside the model folder's own files, the newest two kept (a damaged newest one
# leaves the one before it to resume from).
#   run.json               step, the run's settings, the model's config, metrics, number of processes
#   trainable.safetensors  the trained parameters (with LoRA: only the adapters)
#   state.pt               optimizer state and every process's RNG states (uint8 tensors), read back
#                          with torch.load(weights_only=True): loading a checkpoint cannot run code
CHECKPOINT, KEEP = "checkpoint-", 2


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


def all_checkpoints(out):
    """The complete checkpoint folders of out, newest first (a .tmp folder is an unfinished save)."""
    done = [p for p in Path(out).glob(CHECKPOINT + "*") if p.name[len(CHECKPOINT):].isdigit()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT):]), reverse=True)


def latest_checkpoint(out):
    """The newest complete checkpoint folder in out, or None."""
    return next(iter(all_checkpoints(out)), None)


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
        for old in all_checkpoints(out)[KEEP:]:
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


def settings_diff(there, config, may_change):
    """How the settings `config` (a dict) differ from a checkpoint's run.json settings `there`, the names
    in may_change excepted: ["--lr 0.001 there, 0.002 now", ...]; [] when a run may continue it."""
    now = json.loads(json.dumps(config))  # as run.json stores it
    return [f"--{k} {there.get(k)!r} there, {v!r} now" for k, v in now.items()
            if k not in may_change and there.get(k) != v]


def resume_point(out, config, model_config, may_change):
    """The newest checkpoint of out that reads whole, after checking that it can be continued: written
    with the same settings as `config` (a dict; the names in may_change excepted: steps, evaluation,
    logging), the same model config and the same number of processes. The errors say what differs.
    Returns (path, run.json, (trained tensors, state), [a line for each damaged newer checkpoint])."""
    found, damaged = all_checkpoints(out), []
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
    diff = settings_diff(run["config"], config, may_change)
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
            if found:  # and overwrite: the earlier run's checkpoints go (its log and model are rewritten)
                for old in Path(out).glob(CHECKPOINT + "*"):
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


# ----------------------------------------------------------------------------- resumable part files
# sample.py --task writes one part file per finished batch, out/.parts/<name>/NNNNNN.jsonl (durably), and
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
        replace_durably(tmp, self.file(k))

    def join(self, n_batches):
        """Join the parts in order into the output (once, atomically) and remove them; returns its records."""
        if not self.final.is_file():
            text = "".join(self.file(k).read_text(encoding="utf-8") for k in range(n_batches))
            self.final.with_suffix(".tmp").write_text(text, encoding="utf-8")
            replace_durably(self.final.with_suffix(".tmp"), self.final)
            shutil.rmtree(self.folder)
            if not any(self.folder.parent.iterdir()):
                self.folder.parent.rmdir()
        return [json.loads(line) for line in self.final.read_text(encoding="utf-8").splitlines()]
