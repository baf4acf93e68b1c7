"""reproduce.py: the four-row pipeline runs end to end (a check of the pipeline, not of the result)."""
import json
import shutil

import pytest

import reproduce
from conftest import read_log


def test_quick_run_writes_every_row_and_reruns_only_what_changed(tmp_path, monkeypatch):
    real = reproduce.run_task
    results = reproduce.main(["--quick", "--tasks", "sudoku", "--seeds", "0,1", "--out", str(tmp_path), "--device", "cpu"])
    assert list(results) == ["sudoku"] and len(results["sudoku"]) == 2
    for per_seed in results["sudoku"]:
        assert set(per_seed) == set(reproduce.ROWS) and all(0 <= v <= 1 for v in per_seed.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == results and saved["config"]["quick"]
    stored = json.loads((tmp_path / "sudoku" / "seed0" / "result.json").read_text())
    for row, scores in stored["items"].items():  # per item scores: 32 test items, their mean the accuracy
        assert len(scores) == 32 and sum(scores) / 32 == pytest.approx(stored["result"][row], abs=1e-12)
    del stored["items"]["d1"]  # a result.json without d1's item scores: scored again from the checkpoint
    (tmp_path / "sudoku" / "seed0" / "result.json").write_text(json.dumps(stored))
    cfg = reproduce.ReproConfig(**reproduce.QUICK, quick=True, device="cpu")
    again = reproduce.stored_items(tmp_path, "sudoku", 0, cfg, ["sft", "d1"])
    assert sum(again["d1"]) / 32 == pytest.approx(results["sudoku"][0]["d1"], abs=1e-12)
    assert saved["item_orderings"][0].startswith("sudoku: d1 - sft = ") and "over 64 items" in saved["item_orderings"][0]
    minutes = saved["task_minutes"]["sudoku"]  # per task-seed; the total counts reused ones too
    assert len(minutes) == 2 and saved["minutes"] == pytest.approx(sum(minutes))
    for row in ("base", "sft", "diffu-grpo", "d1"):
        assert (tmp_path / "sudoku" / "seed0" / row / "model.safetensors").is_file()
    table = reproduce.table(results)
    assert table.count("\n") == 5 and "±" in table  # two seeds: mean ± standard error
    logs = reproduce.rl_logs(tmp_path, "sudoku", [0, 1], "d1")  # the curves: evaluations at steps 0, 1, 2
    assert [[r["step"] for r in evals] for _, evals in logs] == [[0, 1, 2], [0, 1, 2]]
    assert [[r["step"] for r in rollouts] for rollouts, _ in logs] == [[1, 2], [1, 2]]
    monkeypatch.setattr(reproduce, "run_task", lambda *a: pytest.fail("an unchanged task-seed is not run again"))
    again = reproduce.main(["--quick", "--tasks", "sudoku", "--seeds", "1", "--out", str(tmp_path), "--device", "cpu",
                            "--countdown_pretrain_steps", "7",
                            "--countdown_sft_examples", "9"])  # other tasks' own options: Sudoku's result stands
    assert again["sudoku"] == results["sudoku"][1:]
    assert reproduce.task_settings("sudoku", reproduce.ReproConfig()) != reproduce.task_settings(
        "sudoku", reproduce.ReproConfig(sudoku_pretrain_steps=7))
    trained = []  # rows beyond d1: only they are trained, from the stored SFT model
    monkeypatch.setattr(reproduce, "run_task", lambda *a: trained.append(a[4]) or real(*a))
    more = reproduce.main(["--quick", "--tasks", "sudoku", "--seeds", "1", "--out", str(tmp_path), "--device", "cpu",
                           "--rows", "sft,d1,wd1,coupled,trajectory-m4,ar-order"])
    assert trained == [["wd1", "coupled", "trajectory-m4", "ar-order"]]
    assert list(more["sudoku"][0]) == ["sft", "d1", "wd1", "coupled", "trajectory-m4", "ar-order"]
    assert {k: more["sudoku"][0][k] for k in ("sft", "d1")} == {k: results["sudoku"][1][k] for k in ("sft", "d1")}
    stored = json.loads((tmp_path / "sudoku" / "seed1" / "result.json").read_text())["result"]
    assert set(stored) == {"base", "sft", "diffu-grpo", "d1", "wd1", "coupled", "trajectory-m4", "ar-order"}
    lines = reproduce.orderings(more).splitlines()
    assert [line.split(" =")[0] for line in lines][:5] == ["sudoku: d1 - sft", "sudoku: wd1 - d1", "sudoku: wd1 - sft",
                                                          "sudoku: coupled - d1", "sudoku: coupled - sft"]
    assert read_log(tmp_path / "sudoku" / "seed1" / "ar-order")[1]["answer_len"] > 0  # its rollouts ran
    spent = reproduce.costs(tmp_path, ["sudoku"], [1], ["d1", "wd1", "coupled"], reproduce.ReproConfig()).splitlines()
    assert [line.split(" | ")[:2] for line in spent[2:]] == [["| d1", "1"], ["| wd1", "1"], ["| coupled", "3"]]
    gen_s = sum(r["gen_s"] for r in reproduce.rl_logs(tmp_path, "sudoku", [1], "wd1")[0][0])
    assert spent[3].split(" | ")[2] == f"{gen_s:.0f}"  # seconds in rollouts, from the run's log
    for row in ("base", "sft"):  # results copied without weights: base and SFT are trained again, as they were
        shutil.rmtree(tmp_path / "sudoku" / "seed1" / row)
    again = reproduce.main(["--quick", "--tasks", "sudoku", "--seeds", "1", "--out", str(tmp_path), "--device", "cpu",
                            "--rows", "sft,d1,spg"])
    assert again["sudoku"][0]["sft"] == results["sudoku"][1]["sft"] and trained[-1] == ["spg"]
    assert (tmp_path / "sudoku" / "seed1" / "sft" / "model.safetensors").is_file()
    rl = json.loads((tmp_path / "sudoku" / "seed1" / "coupled" / "grpo_config.json").read_text())
    assert (rl["estimator"], rl["mc_samples"], rl["spg_beta"]) == ("coupled", 1, 1.0)  # the row's settings reach it
    with pytest.raises(ValueError, match="unknown row 'ppo'"):
        reproduce.main(["--rows", "d1,ppo", "--out", str(tmp_path)])
    assert reproduce.task_settings("sudoku", reproduce.ReproConfig()) != reproduce.task_settings(
        "sudoku", reproduce.ReproConfig(sudoku_sft_examples=9))


def test_toy_distributions_keep_test_grids_out_of_training():
    cfg = reproduce.ReproConfig(n_test=200, n_val=50, sudoku_sft_examples=64)
    domain, sft_set, prompts, val, test = reproduce.distributions("sudoku", cfg, seed=0)
    train_grids = {ex.solution for ex in domain + sft_set + prompts + val}
    assert not train_grids & {ex.solution for ex in test}  # whole solution grids held out
    assert all(ex.puzzle.count("0") == 10 for ex in sft_set + test) and len(sft_set) == 64
    assert max(ex.puzzle.count("0") for ex in domain) <= 6  # the base never sees a target-level puzzle
    domain = reproduce.countdown_domain(500, 0)
    three = [ex for ex in domain if len(ex.nums) == 3]
    assert len(three) == 500 and not set("*/") & set("".join(ex.expression for ex in three))  # + and - only
    assert not any(reproduce.tasks.countdown_in_test(ex.nums, ex.target) for ex in three)
    cd = reproduce.tasks.get_task("countdown")
    assert all(cd.score(ex.expression, ex, style="toy")[0] == 1.0 for ex in domain[:2000] + three)
    test = cd.generate(300, seed=0, split="test")
    assert all(reproduce.tasks.countdown_in_test(ex.nums, ex.target) for ex in test)


def test_chains_distributions_teach_a_way_of_thinking_not_the_target():
    cfg = reproduce.ReproConfig(n_test=300, n_val=50, chains_sft_examples=200)
    domain, sft_set, prompts, val, test = reproduce.distributions("chains", cfg, seed=0)
    chains, kinds = reproduce.tasks.get_task("chains"), reproduce.tasks.ToyS1K.KINDS
    worked = [ex for ex in domain if not ex.question.startswith(kinds)]
    assert len(worked) == 20000 and len(domain) == 24000  # plus 2,000 walks and 2,000 tallies
    for ex in worked[:500]:  # the unneeded quantity is listed last: the chain's steps name the others in order
        names = [d.split("=")[0] for d in ex.question.split(" ?")[0].split(" ")]
        assert names[:4] == [step.split("=")[0] for step in ex.rationale.split(" ")]
    walks = [ex for ex in domain if ex.question.startswith("walk ")]
    assert len(walks) == 2000 and all(ex.question.split(" ")[1:1 + len(ex.rationale.split(" "))]
                                      == ex.rationale.split(" ") for ex in walks)  # arrows in the path's order
    assert all(ex.question.startswith(kinds) for ex in sft_set) and len(sft_set) == 200  # the toy s1K, not Chains
    assert all(chains.score(chains.target(ex, "toy"), ex, style="toy")[0] == 1.0 for ex in domain[:2000] + sft_set)
    assert chains.prompt(sft_set[0], "toy") == sft_set[0].question + "\n"  # written as the toy s1K writes it
    seen = {ex.question for ex in domain + prompts + val}
    assert all(reproduce.tasks.in_test(ex.question) for ex in test) and not seen & {ex.question for ex in test}
    assert not {ex.question for ex in val} & {ex.question for ex in prompts}


def test_quick_chains_run_trains_sft_at_its_own_lr_and_plots_its_answers(tmp_path):
    results = reproduce.main(["--quick", "--tasks", "chains", "--rows", "sft,d1", "--out", str(tmp_path),
                              "--device", "cpu"])
    assert list(results["chains"][0]) == ["sft", "d1"]
    folder = tmp_path / "chains" / "seed0"
    lrs = [json.loads((folder / row / "sft_config.json").read_text())["lr"] for row in ("base", "sft")]
    assert lrs == [1e-3, 1e-5]  # d1's SFT lr for the toy s1K; the base at sft.py's
    rollouts = read_log(folder / "d1")[1]  # what the answers panel plots: length and the layout reward
    assert 0 < rollouts["answer_len"] <= 48 and 0 <= rollouts["chains_format"] <= 0.5
    pytest.importorskip("matplotlib")
    reproduce.plot(tmp_path, ["chains"], [0], rows=["d1"])
    assert (tmp_path / "rewards.png").stat().st_size > 0


def test_orderings_are_paired_differences_over_seeds():
    results = {"sudoku": [dict(base=0.70, sft=0.80, **{"diffu-grpo": 0.74}, d1=0.86),
                          dict(base=0.60, sft=0.76, **{"diffu-grpo": 0.65}, d1=0.80),
                          dict(base=0.65, sft=0.78, **{"diffu-grpo": 0.69}, d1=0.84)]}
    lines = reproduce.orderings(results).splitlines()
    assert lines[0] == "sudoku: d1 - sft = +5.3 points, 8.0 paired SE, holds on 3 of 3 seeds"  # diffs 6, 4, 6
    assert lines[1] == "sudoku: diffu-grpo - base = +4.3 points, 13.0 paired SE, holds on 3 of 3 seeds"  # 4, 5, 4
    assert lines[3].startswith("sudoku: diffu-grpo - sft = -8.7 points") and lines[3].endswith("0 of 3 seeds")


def test_item_orderings_pool_the_items_of_every_seed():
    items = {"sudoku": [dict(sft=[0, 1, 1, 0], d1=[1, 1, 1, 0], wd1=[1, 1, 1, 1]),
                        dict(sft=[1, 0], d1=[1, 1], wd1=[0, 1])]}
    lines = reproduce.item_orderings(items).splitlines()
    # d1 - sft over 6 items: 1, 0, 0, 0, 0, 1 (x100): mean 33.33, sd 51.64, SE 21.08
    assert lines[0] == "sudoku: d1 - sft = +33.33 points, 1.6 item-paired SE over 6 items"
    assert lines[1] == "sudoku: wd1 - d1 = +0.00 points, 0.0 item-paired SE over 6 items"  # 0, 0, 0, 1, -1, 0
    assert [line.split(" =")[0] for line in lines] == ["sudoku: d1 - sft", "sudoku: wd1 - d1", "sudoku: wd1 - sft"]


def test_noise_band_is_the_residual_std_of_a_moving_average_over_sqrt_window():
    assert reproduce.moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    flat = [0.5] * 20
    assert reproduce.noise_band(flat, 5) == 0.0
    noisy = [0.5 + (0.1 if i % 2 else -0.1) for i in range(400)]  # +-0.1 about a flat line
    assert abs(reproduce.noise_band(noisy, 4) - 0.1 / 2) < 0.01  # the residual std over sqrt(window)


def test_a_task_without_toy_distributions_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="toy distributions for sudoku, countdown, chains, not 'gsm8k'"):
        reproduce.main(["--tasks", "gsm8k", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_reproduction_stopped_by_sigterm_continues_to_the_same_table(tmp_path, monkeypatch, capsys):
    import signal

    import diffu_grpo
    args = ["--quick", "--tasks", "sudoku", "--seeds", "0", "--device", "cpu"]
    whole = reproduce.main([*args, "--out", str(tmp_path / "whole")])
    real, calls = diffu_grpo.train_step, []

    def sigterm_after_the_first_rl_step(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)
        return out
    with monkeypatch.context() as m:
        m.setattr(diffu_grpo, "train_step", sigterm_after_the_first_rl_step)
        with pytest.raises(SystemExit) as e:
            reproduce.run_command(lambda: reproduce.main([*args, "--out", str(tmp_path / "cut")]), "")
    assert e.value.code == 143 and "stopped by SIGTERM after step 1" in capsys.readouterr().err
    again = reproduce.main([*args, "--out", str(tmp_path / "cut")])  # base and SFT continue their finished runs,
    assert again == whole  # the RL row its step-1 checkpoint
    rl_log = read_log(tmp_path / "cut" / "sudoku" / "seed0" / "diffu-grpo")
    assert [r["step"] for r in rl_log if "reward" in r] == [1, 2]
