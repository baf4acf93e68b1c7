"""Checkpoints: Ctrl-C saves after the step, --resume continues exactly, a kill during a save keeps the
previous checkpoint, a non-finite loss stops with the last good one, and resume refuses other settings."""
import json
import signal

import pytest
import torch
from safetensors.torch import load_file

import diffu_grpo as dg
import grpo_worker
import model
import checkpoints
import runs
import sft
import tasks
from conftest import read_log

LOGGED = ("loss", "unscaled", "reward", "reward_std", "kl", "clip_frac", "answer_len", "zero_std_groups", "accuracy")


def sft_args(folder, out, *more):
    return ["--model", str(folder), "--task", "sudoku", "--n_train", "200", "--n_eval", "4", "--batch_size", "8",
            "--eval_every", "0", "--log_every", "1", "--device", "cpu", "--out", str(out), *more]


def grpo_args(folder, out, *more):
    return ["--model", str(folder), "--task", "even", "--n_train", "26", "--n_eval", "4", "--prompts_per_step", "2",
            "--num_generations", "4", "--mu", "2", "--diffusion_steps", "8", "--temperature", "1.0",
            "--eval_every", "0", "--device", "cpu", "--out", str(out), *more]


def assert_same_logs(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert {k: x[k] for k in LOGGED if k in x} == {k: y[k] for k in LOGGED if k in y}, x["step"]


def ctrl_c_after(module, name, step, monkeypatch):
    """Make module.name (a step function) send this process SIGINT once the given step is done."""
    real, calls = getattr(module, name), []

    def step_then_ctrl_c(*args, **kw):
        out = real(*args, **kw)
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signal.SIGINT)
        return out
    monkeypatch.setattr(module, name, step_then_ctrl_c)


def test_sft_ctrl_c_then_resume_equals_an_uninterrupted_run(tiny_folder, tmp_path, monkeypatch, capsys):
    lora = ["--lora_r", "2", "--lora_dropout", "0.1", "--save_every", "0", "--steps", "6"]  # dropout: torch's RNG
    torch.manual_seed(0)
    sft.main(sft_args(tiny_folder, tmp_path / "whole", *lora))
    torch.manual_seed(0)
    with monkeypatch.context() as m:
        ctrl_c_after(sft, "sft_step", 3, m)
        with pytest.raises(SystemExit) as e:
            sft.main(sft_args(tiny_folder, tmp_path / "cut", *lora))
    assert e.value.code == 130
    assert "stopped by Ctrl-C after step 3; checkpoint in" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-000003"]
    assert [r["step"] for r in read_log(tmp_path / "cut")] == [1, 2, 3]
    torch.manual_seed(1)  # the checkpoint brings back torch's RNG too
    sft.main(sft_args(tiny_folder, tmp_path / "cut", *lora, "--resume"))
    assert_same_logs(read_log(tmp_path / "whole"), read_log(tmp_path / "cut"))
    for name in ("model.safetensors", "checkpoint-000006/trainable.safetensors"):
        a, b = (load_file(str(tmp_path / run / name)) for run in ("whole", "cut"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(load_file(str(tmp_path / "cut" / "checkpoint-000006" / "trainable.safetensors")))[0].endswith(
        "lora_A")  # with LoRA, the checkpoint holds the adapters only


def test_diffu_grpo_ctrl_c_then_resume_equals_an_uninterrupted_run(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "even", grpo_worker.EvenTask())
    steps = ["--steps", "4", "--save_every", "0", "--beta", "0.04"]  # full fine-tuning: a frozen copy as reference
    dg.main(grpo_args(tiny_folder, tmp_path / "whole", *steps))
    with monkeypatch.context() as m:
        ctrl_c_after(dg, "train_step", 2, m)
        with pytest.raises(SystemExit):
            dg.main(grpo_args(tiny_folder, tmp_path / "cut", *steps))
    assert checkpoints.latest_checkpoint(tmp_path / "cut").name == "checkpoint-000002"
    dg.main(grpo_args(tiny_folder, tmp_path / "cut", *steps, "--resume"))
    whole, cut = read_log(tmp_path / "whole"), read_log(tmp_path / "cut")
    assert_same_logs(whole, cut)
    assert [r["step"] for r in whole] == [0, 1, 2, 3, 4]  # step 0: the starting point's held-out figures
    assert whole[-1]["kl"] > 0 and len({r["reward"] for r in whole[1:]}) > 1  # the policy moved, rollouts differ


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def killed_on_second_save(*args, **kw):
        saves.append(1)
        if len(saves) == 2:
            raise SystemExit("killed")  # as if the process died while writing checkpoint-000004
        real_save(*args, **kw)
    with monkeypatch.context() as m:
        m.setattr(torch, "save", killed_on_second_save)
        with pytest.raises(SystemExit, match="killed"):
            sft.main(sft_args(tiny_folder, out, "--steps", "6", "--save_every", "2"))
    assert (out / "checkpoint-000004.tmp").is_dir()  # the unfinished save
    assert checkpoints.latest_checkpoint(out).name == "checkpoint-000002"
    sft.main(sft_args(tiny_folder, out, "--steps", "6", "--save_every", "2", "--resume"))
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000004", "checkpoint-000006"]  # newest
    # two kept, older ones and the .tmp removed


def test_sft_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_folder, tmp_path, monkeypatch):
    real, calls = sft.sft_loss, []

    def nan_at_step_3(*args, **kw):
        calls.append(1)
        loss, unscaled, n = real(*args, **kw)
        return (loss * float("nan") if len(calls) == 3 else loss), unscaled, n
    monkeypatch.setattr(sft, "sft_loss", nan_at_step_3)
    with pytest.raises(SystemExit) as e:
        sft.main(sft_args(tiny_folder, tmp_path / "run", "--steps", "5", "--save_every", "2"))
    message = str(e.value.code)
    assert message.startswith("error: loss is nan at step 3") and "checkpoint-000002" in message
    assert "\n" not in message
    last = checkpoints.latest_checkpoint(tmp_path / "run")
    assert last.name == "checkpoint-000002" and json.loads((last / "run.json").read_text())["step"] == 2


def test_diffu_grpo_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "even", grpo_worker.EvenTask())
    rollouts, real_rollout, real_reduce = [], dg.rollout, dg.reduce_loss

    def counted_rollout(*args, **kw):
        if args[4].num_generations > 1:  # a training step's rollouts, not the validation reward's
            rollouts.append(1)
        return real_rollout(*args, **kw)
    monkeypatch.setattr(dg, "rollout", counted_rollout)
    monkeypatch.setattr(dg, "reduce_loss", lambda *a: real_reduce(*a) * (float("nan") if len(rollouts) == 3 else 1))
    with pytest.raises(SystemExit) as e:
        dg.main(grpo_args(tiny_folder, tmp_path / "run", "--steps", "4", "--save_every", "1"))
    assert str(e.value.code).startswith("error: loss is nan at step 3") and "checkpoint-000002" in str(e.value.code)
    assert checkpoints.latest_checkpoint(tmp_path / "run").name == "checkpoint-000002"


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    sft.main(sft_args(tiny_folder, out, "--steps", "2"))
    with pytest.raises(SystemExit, match=r"--lr 0.001 there, 0.002 now; --lora_r 0 there, 4 now"):
        sft.main(sft_args(tiny_folder, out, "--steps", "4", "--resume", "--lr", "0.002", "--lora_r", "4"))
    model.save(model.build(model.ModelConfig(d_model=64, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64,
                                             max_seq_len=64)), tiny_folder)  # another architecture, same folder
    monkeypatch.setattr(runs, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(SystemExit, match="model d_model 32 there, 64 now"):
        sft.main(sft_args(tiny_folder, out, "--steps", "4", "--resume"))
    with pytest.raises(SystemExit, match="holds no checkpoint"):
        sft.main(sft_args(tiny_folder, tmp_path / "empty", "--resume"))
