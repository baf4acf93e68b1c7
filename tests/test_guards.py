"""Configuration mistakes stop sft.py and diffu_grpo.py before any weights load, with one line that says
what to change."""
import pytest

import diffu_grpo as dg
import model
import runs
import sft

SHORT = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64)


@pytest.fixture
def folders(tmp_path):
    """Tiny models whose maximum sequence length is 64 (room for Sudoku's 24-token prompts and 16-token
    answers), 32 (no room for an answer of 16) and 20 (not even for the prompt)."""
    paths = {}
    for n in (64, 32, 20):
        paths[n] = tmp_path / f"max{n}"
        model.save(model.build(model.ModelConfig(**SHORT, max_seq_len=n)), paths[n])
    return paths


SFT_CASES = [
    (["--block_length", "5"], "block_length 5 must divide gen_length 16"),
    (["--block_length", "8", "--diffusion_steps", "3"], "steps 3 must be a multiple of the number of blocks (2"),
    (["--task", "chess"], "unknown task 'chess'; known tasks: gsm8k, math500, countdown, sudoku, s1k"),
    (["--model", "gpt-9"], "--model 'gpt-9' is neither a preset (toy, llada-8b) nor an existing folder"),
    (["--norm", "mean"], "--norm must be sequence or batch"),
    (["--task", "s1k"], "--task s1k needs --data"),
    (["--model", 32], "the longest held-out prompt has 24 tokens, and with --gen_length 16 its sequence passes"),
    (["--model", 20], "the longest training prompt has 24 tokens: no room for an answer"),
    (["--resume"], "holds no checkpoint"),
]

GRPO_CASES = [
    (["--num_generations", "1"], "--num_generations must be at least 2"),
    (["--block_length", "5"], "block_length 5 must divide gen_length 16"),
    (["--block_length", "8", "--diffusion_steps", "3"], "steps 3 must be a multiple of the number of blocks (2"),
    (["--temperature", "-1"], "must be >= 0"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--model", "no/such/folder"], "--model 'no/such/folder' is neither a preset nor a checkpoint folder"),
    (["--model", 32], "the longest training prompt has 24 tokens, and with --gen_length 16 its sequence passes"),
    (["--resume"], "holds no checkpoint"),
]


def run_main(main, folders, tmp_path, monkeypatch, flags):
    flags = [str(folders[f]) if isinstance(f, int) else f for f in flags]
    monkeypatch.setattr(runs, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(SystemExit) as e:
        main(["--model", str(folders[64]), "--task", "sudoku", "--n_train", "50", "--n_eval", "4", "--device", "cpu",
              "--out", str(tmp_path / "out"), *flags])
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


@pytest.mark.parametrize("flags, expected", SFT_CASES)
def test_sft_guards(flags, expected, folders, tmp_path, monkeypatch):
    assert expected in run_main(sft.main, folders, tmp_path, monkeypatch, flags)


@pytest.mark.parametrize("flags, expected", GRPO_CASES)
def test_diffu_grpo_guards(flags, expected, folders, tmp_path, monkeypatch):
    assert expected in run_main(dg.main, folders, tmp_path, monkeypatch, flags)


def test_a_batch_smaller_than_the_number_of_processes(folders):
    with pytest.raises(ValueError, match="--batch_size 1 is smaller than the number of processes"):
        sft.setup(sft.SFTConfig(model=str(folders[64]), batch_size=1, device="cpu"), world=2)
    with pytest.raises(ValueError, match="--prompts_per_step 1 is smaller than the number of processes"):
        dg.setup(dg.GRPOConfig(model=str(folders[64]), prompts_per_step=1, device="cpu"), world=2)
