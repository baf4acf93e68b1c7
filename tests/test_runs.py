"""runs.py and checkpoints.py against what clusters do to a run: SIGTERM, a full disk, a damaged
checkpoint, two runs on one folder, a fresh run on a finished one. Each fault is provoked for real where it can be (a signal sent to
a running process, a truncated file, a second process), and each check is the one-line message, that no
finished work is lost, and that a run that can continue continues to the same numbers."""
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import diffu_grpo as dg
import grpo_worker
import checkpoints
import sample
import sft
import tasks
from conftest import ROOT, read_log
from test_checkpoints import assert_same_logs, grpo_args, sft_args


def start_sft(folder, out, *more):
    """sft.py in its own process, printing a line per step."""
    cmd = [sys.executable, str(ROOT / "sft.py"), *sft_args(folder, out, "--save_every", "0", *more)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, step):
    """Read the process's output until it has printed the line of `step`."""
    for line in proc.stdout:
        if line.startswith(f"step {step:5d} |"):
            return
    raise AssertionError(f"the process ended before step {step}: {proc.stderr.read()}")


def same_weights(a, b):
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sigterm_stops_a_real_run_after_its_step_with_a_checkpoint_and_resume_continues(tiny_folder, tmp_path):
    proc = start_sft(tiny_folder, tmp_path / "cut", "--steps", "100000")
    wait_for_step(proc, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    line = next(line for line in err.splitlines() if line.startswith("interrupted:"))
    done = int(line.split("after step ")[1].split(";")[0])
    assert line == (f"interrupted: stopped by SIGTERM after step {done}; checkpoint in "
                    f"{tmp_path / 'cut' / f'checkpoint-{done:06d}'}, continue with --resume")
    assert [r["step"] for r in read_log(tmp_path / "cut")] == list(range(1, done + 1))  # no finished step lost
    sft.main(sft_args(tiny_folder, tmp_path / "cut", "--steps", str(done + 2), "--resume"))
    sft.main(sft_args(tiny_folder, tmp_path / "whole", "--steps", str(done + 2)))
    assert_same_logs(read_log(tmp_path / "whole"), read_log(tmp_path / "cut"))
    assert same_weights(tmp_path / "whole", tmp_path / "cut")


def signal_after(module, name, step, monkeypatch, signals=(signal.SIGTERM,)):
    """Make module.name (a step or batch function) send this process the given signals after its step-th call."""
    real, calls = getattr(module, name), []

    def then_signal(*args, **kw):
        out = real(*args, **kw)
        calls.append(1)
        if len(calls) == step:
            for s in signals:
                signal.raise_signal(s)
        return out
    monkeypatch.setattr(module, name, then_signal)


def test_diffu_grpo_on_sigterm_checkpoints_the_step_and_resumes_to_the_same_numbers(tiny_folder, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.setitem(tasks.TASKS, "even", grpo_worker.EvenTask())
    steps = ["--steps", "4", "--save_every", "0"]
    dg.main(grpo_args(tiny_folder, tmp_path / "whole", *steps))
    with monkeypatch.context() as m:
        signal_after(dg, "train_step", 2, m)
        with pytest.raises(SystemExit) as e:
            dg.main(grpo_args(tiny_folder, tmp_path / "cut", *steps))
    assert e.value.code == 143 and "stopped by SIGTERM after step 2; checkpoint in" in capsys.readouterr().err
    dg.main(grpo_args(tiny_folder, tmp_path / "cut", *steps, "--resume"))
    assert_same_logs(read_log(tmp_path / "whole"), read_log(tmp_path / "cut"))


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tiny_folder, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        signal_after(sft, "sft_step", 3, m, signals=(signal.SIGTERM, signal.SIGTERM))
        with pytest.raises(SystemExit) as e:
            sft.main(sft_args(tiny_folder, tmp_path / "run", "--steps", "6", "--save_every", "2"))
    err = capsys.readouterr().err
    assert e.value.code == 143 and "SIGTERM: stopping after this step" in err
    assert "interrupted: stopped at once by SIGTERM" in err
    assert [p.name for p in checkpoints.all_checkpoints(tmp_path / "run")] == ["checkpoint-000002"]  # step 3 was not finished


def test_sigterm_stops_the_evaluation_after_its_batch_and_the_same_command_continues(tmp_path, monkeypatch, capsys):
    args = ["--model", "toy", "--task", "sudoku", "--limit", "24", "--batch_size", "8", "--gen_length", "16",
            "--block_length", "16", "--device", "cpu"]
    sample.main([*args, "--out", str(tmp_path / "whole")])
    with monkeypatch.context() as m:
        signal_after(sample, "batch_records", 2, m)
        with pytest.raises(SystemExit) as e:
            sample.main([*args, "--out", str(tmp_path / "cut")])
    err = capsys.readouterr().err
    assert e.value.code == 143
    assert "stopped by SIGTERM after batch 1 of length 16; the finished batches are kept in" in err
    assert sorted(p.name for p in (tmp_path / "cut" / ".parts" / "sudoku-16").iterdir()) == ["000000.jsonl",
                                                                                            "000001.jsonl"]
    sample.main([*args, "--out", str(tmp_path / "cut")])
    assert (tmp_path / "cut" / "sudoku-16.jsonl").read_text() == (tmp_path / "whole" / "sudoku-16.jsonl").read_text()


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),  # what torch.save raises on a full disk
    OSError(28, "No space left on device")])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_previous_one_resumes(tiny_folder, tmp_path,
                                                                               monkeypatch, failure):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_full_on_second_save(*args, **kw):
        saves.append(1)
        if len(saves) == 2:
            raise failure
        real_save(*args, **kw)
    with monkeypatch.context() as m:
        m.setattr(torch, "save", disk_full_on_second_save)
        with pytest.raises(SystemExit) as e:
            sft.main(sft_args(tiny_folder, out, "--steps", "6", "--save_every", "2"))
    message = str(e.value.code)
    why = "file write failed" if isinstance(failure, RuntimeError) else "No space left on device"
    assert message.startswith(f"error: could not write checkpoint-000004 into {out} ({why}): a checkpoint needs "
                              f"about ") and message.endswith("MiB are free; checkpoint-000002 is kept")
    assert "\n" not in message and not list(out.glob("*.tmp"))
    sft.main(sft_args(tiny_folder, out, "--steps", "6", "--save_every", "2", "--resume"))
    sft.main(sft_args(tiny_folder, tmp_path / "whole", "--steps", "6", "--save_every", "2"))
    assert_same_logs(read_log(tmp_path / "whole"), read_log(out))
    assert same_weights(tmp_path / "whole", out)


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    sft.main(sft_args(tiny_folder, out, "--steps", "6", "--save_every", "2"))
    assert [p.name for p in checkpoints.all_checkpoints(out)] == ["checkpoint-000006", "checkpoint-000004"]  # two kept
    damaged = out / "checkpoint-000006" / "trainable.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a truncated file
    capsys.readouterr()
    sft.main(sft_args(tiny_folder, out, "--steps", "8", "--save_every", "2", "--resume"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"--resume: {damaged} is damaged (")
    assert lines[0].endswith("): resuming from checkpoint-000004")
    sft.main(sft_args(tiny_folder, tmp_path / "whole", "--steps", "8", "--save_every", "2"))
    assert_same_logs(read_log(tmp_path / "whole"), read_log(out))
    assert same_weights(tmp_path / "whole", out)
    for path in checkpoints.all_checkpoints(out):
        (path / "state.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        sft.main(sft_args(tiny_folder, out, "--steps", "10", "--resume"))
    assert str(e.value.code).startswith(f"error: --resume: no checkpoint in {out} reads whole (--resume: ")
    assert "checkpoint-000008/state.pt is damaged" in str(e.value.code) and "\n" not in str(e.value.code)


def test_a_second_run_on_the_same_folder_stops_naming_the_first_and_a_crashed_lock_is_free(tiny_folder, tmp_path):
    out = tmp_path / "run"
    first = start_sft(tiny_folder, out, "--steps", "100000")
    try:
        wait_for_step(first, 1)
        with pytest.raises(SystemExit) as e:
            sft.main(sft_args(tiny_folder, out, "--steps", "2", "--resume"))
        assert str(e.value.code) == (f"error: {out} is in use by another run (pid {first.pid} on {os.uname().nodename}): "
                                     f"wait for it to end, or choose another --out")
    finally:
        first.kill()  # a crash: no checkpoint, the lock goes with the process
        first.communicate(timeout=60)
    sft.main(sft_args(tiny_folder, out, "--steps", "2", "--overwrite"))
    assert [r["step"] for r in read_log(out)] == [1, 2]


def test_a_fresh_run_on_a_finished_one_stops_unless_told_to_overwrite(tiny_folder, tmp_path):
    out = tmp_path / "run"
    sft.main(sft_args(tiny_folder, out, "--steps", "4", "--save_every", "2"))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as e:
        sft.main(sft_args(tiny_folder, out, "--steps", "2", "--lr", "0.002"))
    assert str(e.value.code) == (f"error: {out} holds an earlier run (checkpoint-000002, checkpoint-000004, log.jsonl, "
                                 f"model.safetensors): continue it with --resume, choose another --out, or replace it "
                                 f"with --overwrite")
    assert (out / "model.safetensors").read_bytes() == before and len(read_log(out)) == 4  # nothing touched
    sft.main(sft_args(tiny_folder, out, "--steps", "2", "--lr", "0.002", "--overwrite"))
    sft.main(sft_args(tiny_folder, tmp_path / "fresh", "--steps", "2", "--lr", "0.002"))
    assert [p.name for p in checkpoints.all_checkpoints(out)] == ["checkpoint-000002"]  # the earlier run's are gone
    assert_same_logs(read_log(tmp_path / "fresh"), read_log(out))
    assert same_weights(tmp_path / "fresh", out)
