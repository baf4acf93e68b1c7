"""Several processes under torchrun: plumbing that a reader of the papers never needs.

The process group (one GPU per process, NCCL; gloo on CPU), each process's share of a batch, sums and
gathers over processes, the gradient sum, and a held-out evaluation split over the processes.

Data parallelism is written out by hand rather than with torch's DistributedDataParallel wrapper:
each process computes the loss of its share of the batch divided by the *whole* batch's normaliser
(SFT's mean over all sequences, diffu-GRPO's answer-token count of all rollouts), so the gradients
must be summed over processes, not averaged as DDP does. One all_reduce per trainable tensor after
the last micro-batch also needs no no_sync() for micro-batching, works unchanged with LoRA (only
the adapters have gradients), and leaves the model unwrapped for model.save and the adapters-off
reference policy. What it gives up is DDP's overlap of communication with the backward pass.
In a plain `python` run there is no process group, and every helper that communicates returns at
once without calling torch.distributed. Imports torch alone.
"""
import os

import torch


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
