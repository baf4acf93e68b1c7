"""torchrun on CPU (gloo, 2 processes): a step over the processes' shares equals one process's step
over the whole batch, for masked SFT and for diffu-GRPO (given the same rollouts)."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import diffu_grpo as dg
import grpo_worker
import distributed
import sft
import tasks
from conftest import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(script, args):
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 script args` (a free port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_weights(a, b, start):
    wa, wb, w0 = (load_file(str(f / "model.safetensors")) for f in (a, b, start))
    assert max((wa[k] - w0[k]).abs().max() for k in wa) > 1e-4  # training moved the weights
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_shards_make_the_whole_batch():
    for n in range(1, 12):
        for world in range(1, n + 1):
            rows = [i for r in range(world) for i in range(n)[distributed.share(n, r, world)]]
            assert rows == list(range(n))


def test_sft_on_two_processes_equals_one(tiny_folder, tmp_path):
    args = ["--model", str(tiny_folder), "--task", "sudoku", "--n_train", "200", "--n_eval", "4", "--steps", "3",
            "--batch_size", "7", "--eval_every", "0", "--log_every", "1", "--device", "cpu"]  # 7 rows: shares 3 and 4
    torchrun("sft.py", args + ["--out", str(tmp_path / "two"), "--micro_batch", "2"])  # and accumulating
    sft.main(args + ["--out", str(tmp_path / "one")])
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):
        for key in ("loss", "unscaled"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    assert_same_weights(tmp_path / "one", tmp_path / "two", tiny_folder)
    assert (tmp_path / "two" / "checkpoint-000003" / "run.json").is_file()  # rank 0 saved


def test_diffu_grpo_on_two_processes_equals_one_on_the_same_rollouts(tiny_folder, tmp_path, monkeypatch):
    args = ["--model", str(tiny_folder), "--task", "even", "--n_train", "26", "--n_eval", "4", "--steps", "2",
            "--prompts_per_step", "3", "--num_generations", "4", "--mu", "2", "--micro_batch", "5",
            "--diffusion_steps", "8", "--temperature", "1.0", "--eval_every", "0", "--device", "cpu"]
    torchrun("tests/grpo_worker.py", args + ["--out", str(tmp_path / "two")])  # prompts split 1 and 2
    monkeypatch.setitem(tasks.TASKS, "even", grpo_worker.EvenTask())
    monkeypatch.setattr(dg, "rollout", grpo_worker.rollout_by_prompt)
    dg.main(args + ["--out", str(tmp_path / "one")])
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in two] == [0, 1, 2]  # step 0: the starting point's held-out figures
    assert one[0]["accuracy"] == two[0]["accuracy"]  # greedy; the sampled val_reward's noise is per process
    one, two = one[1:], two[1:]
    for a, b in zip(one, two):
        assert a["reward"] == b["reward"] and a["answer_len"] == b["answer_len"]  # the same rollouts
        for key in ("loss", "kl", "clip_frac"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), key
    assert one[0]["reward_std"] > 0  # the advantages were not all zero
    assert_same_weights(tmp_path / "one", tmp_path / "two", tiny_folder)


def test_evaluation_on_two_processes_equals_one(tiny_folder, tmp_path):
    """sample.py --task under torchrun: the processes share the batches, and one file results, the same."""
    args = ["--task", "sudoku", "--model", str(tiny_folder), "--lengths", "8", "--block_length", "8",
            "--steps_per_token", "1", "--limit", "11", "--batch_size", "3", "--temperature", "1.0", "--device", "cpu"]
    torchrun("sample.py", args + ["--out", str(tmp_path / "two")])
    import sample
    sample.main(args + ["--out", str(tmp_path / "one")])
    one, two = ((tmp_path / d / "sudoku-8.jsonl").read_bytes() for d in ("one", "two"))
    assert one == two and len(one.splitlines()) == 11
