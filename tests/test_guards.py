"""Configuration mistakes stop sft.py, diffu_grpo.py and reproduce.py before any weights load, with one
line that says what to change; tasks.py answers a bad file the same way."""
import dataclasses

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
    (["--task", "chess"], "unknown task 'chess'; known tasks: gsm8k, math500, countdown, sudoku, chains, toy-s1k, s1k"),
    (["--model", "gpt-9"], "--model 'gpt-9' is neither a preset (toy, llada-8b) nor an existing folder"),
    (["--norm", "mean"], "--norm must be sequence or batch"),
    (["--task", "s1k"], "--task s1k needs --data"),
    (["--model", 32], "the longest held-out prompt has 24 tokens, and with --gen_length 16 its sequence passes"),
    (["--model", 20], "the longest training prompt has 24 tokens: no room for an answer"),
    (["--resume"], "holds no checkpoint"),
    (["--steps", "-5"], "--steps must be >= 1, not -5"),  # trained nothing and overwrote runs/sft-toy
    (["--lr", "0"], "--lr must be > 0, not 0.0"),
    (["--eps", "1"], "--eps must be in (0, 1), not 1.0"),
    (["--lora_dropout", "1"], "--lora_dropout must be in [0, 1), not 1.0"),
]

GRPO_CASES = [
    (["--num_generations", "1"], "--num_generations must be >= 2, not 1"),
    (["--block_length", "5"], "block_length 5 must divide gen_length 16"),
    (["--block_length", "8", "--diffusion_steps", "3"], "steps 3 must be a multiple of the number of blocks (2"),
    (["--temperature", "-1"], "must be >= 0"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--model", "no/such/folder"], "--model 'no/such/folder' is neither a preset (toy, llada-8b) nor an existing"),
    (["--model", 32], "the longest training prompt has 24 tokens, and with --gen_length 16 its sequence passes"),
    (["--resume"], "holds no checkpoint"),
    (["--p_mask", "1.5"], "--p_mask must be in [0, 1], not 1.5"),  # ran
    (["--temperature", "nan"], "--temperature must be >= 0, not nan"),
    (["--threshold", "2"], "--threshold must be in [0, 1], not 2.0"),
    (["--mu", "0"], "--mu must be >= 1, not 0"),
    (["--gen_length", "0"], "--gen_length must be >= 1, not 0"),
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
def test_a_bad_sft_flag_is_one_error_line_before_weights_load(flags, expected, folders, tmp_path, monkeypatch):
    assert expected in run_main(sft.main, folders, tmp_path, monkeypatch, flags)


@pytest.mark.parametrize("flags, expected", GRPO_CASES)
def test_a_bad_diffu_grpo_flag_is_one_error_line_before_weights_load(flags, expected, folders, tmp_path, monkeypatch):
    assert expected in run_main(dg.main, folders, tmp_path, monkeypatch, flags)


def test_a_batch_smaller_than_the_number_of_processes_is_refused(folders):
    with pytest.raises(ValueError, match="--batch_size 1 is smaller than the number of processes"):
        sft.setup(sft.SFTConfig(model=str(folders[64]), batch_size=1, device="cpu"), world=2)
    with pytest.raises(ValueError, match="--prompts_per_step 1 is smaller than the number of processes"):
        dg.setup(dg.GRPOConfig(model=str(folders[64]), prompts_per_step=1, device="cpu"), world=2)


def test_every_numeric_flag_has_a_range():
    # a count, probability, temperature or length without one would let a mistake run (or train nothing)
    import reproduce
    for cls in (sft.SFTConfig, dg.GRPOConfig, reproduce.ReproConfig):
        for f in dataclasses.fields(cls):
            if f.type in (int, float, "int", "float"):
                assert f.metadata.get("must") in runs.RANGES, (cls.__name__, f.name)


def test_reproduce_answers_a_flag_out_of_range(tmp_path):
    import reproduce
    with pytest.raises(SystemExit, match=r"^error: --rl_lr must be > 0, not 0.0$"):
        reproduce.main(["--rl_lr", "0", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, expected", [
    (None, "error: no file at "),
    (b"\xff\xfe\x00 not text", "is not UTF-8 text (byte 0): expected JSON Lines"),
    (b'{"generation": "1"}\n', ":1: a record needs 'generation' and 'ground_truth'"),
    (b'{"generation": "1", "ground_truth": "1"}\nnot json\n', ":2: not JSON"),
    (b"\n", "holds no records"),
])
def test_tasks_score_answers_a_bad_file_with_one_line(tmp_path, content, expected):
    import tasks
    path = tmp_path / "gen.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        tasks.main(["score", "--task", "gsm8k", "--file", str(path)])
    assert str(e.value.code).startswith("error: ") and expected in str(e.value.code) and "\n" not in str(e.value.code)


def test_a_sudoku_file_that_is_not_text_is_a_clear_error(tmp_path):
    import tasks
    (tmp_path / "s.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        tasks.get_task("sudoku").load(tmp_path / "s.csv")


def test_sample_checks_its_settings_before_loading(monkeypatch):
    import sample
    monkeypatch.setattr(sample, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    for flags, expected in ((["--gen_length", "0"], "must be positive"), (["--temperature", "-1"], "must be >= 0"),
                            (["--threshold", "1.5"], "threshold")):
        with pytest.raises(SystemExit, match=f"^error: .*{expected}"):
            sample.main(["--model", "no/such/folder", *flags])


def test_sample_and_bench_answer_a_bad_path_or_count_with_one_line():
    import bench
    import sample
    with pytest.raises(SystemExit, match="^error: --model 'no/such/folder' is neither a preset"):
        sample.main(["--model", "no/such/folder"])
    with pytest.raises(SystemExit, match=r"^error: --repeats \(0\) and --n_eval \(512\) must be >= 1$"):
        bench.main(["--repeats", "0"])


def readme_torchrun_commands():
    """The README's torchrun commands for LLaDA-8B: (script, flags, processes)."""
    import re
    import shlex
    text = (runs.Path(__file__).resolve().parents[1] / "README.md").read_text()
    for line in text.splitlines():
        if line.startswith("torchrun") and "llada" in line:
            words = shlex.split(line.split("#")[0])
            i = next(i for i, w in enumerate(words) if w.endswith(".py"))
            yield words[i], words[i + 1:], int(re.search(r"--nproc_per_node (\d+)", line).group(1))


def test_readmes_8_gpu_commands_pass_their_own_checks(tmp_path, monkeypatch):
    """Everything torchrun's 8 processes check before loading passes (the batch is at least one row
    per process, ...), and the first thing they need is the weights, absent here."""
    import shutil
    from conftest import LLADA_8B, need
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    commands = list(readme_torchrun_commands())
    monkeypatch.chdir(tmp_path)  # SFT's output, as RL's start: LLaDA-8B's config, no weights or tokenizer.json
    shutil.copytree(need(LLADA_8B), tmp_path / "runs" / "sft-llada-8b")
    assert {script for script, _, _ in commands} == {"sft.py", "diffu_grpo.py", "sample.py"}
    import sample
    for script, flags, world in commands:
        if script == "sample.py":  # d1's evaluation: its flags pass their checks (it loads nothing before)
            assert sample.check_eval_args(sample.parse_args(flags)) == [128, 256, 512]
            continue
        mod = sft if script == "sft.py" else dg
        cfg = runs.parse_config(mod.SFTConfig if mod is sft else mod.GRPOConfig, flags, None, mod.MODEL_DEFAULTS)
        if mod is sft:
            assert cfg.batch_size % world == 0 and cfg.batch_size // world >= cfg.micro_batch  # 2 rows, 1 at a time
        with pytest.raises(FileNotFoundError, match="needs the weights of GSAI-ML|tokenizer.json is missing"):
            mod.setup(cfg, world=world)
