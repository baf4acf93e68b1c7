"""reproduce.py: the four-row pipeline runs end to end (a check of the pipeline, not of the result)."""
import json

import reproduce


def test_quick_reproduction_pipeline(tmp_path):
    results = reproduce.main(["--quick", "--tasks", "sudoku", "--seeds", "0,1", "--out", str(tmp_path), "--device", "cpu"])
    assert list(results) == ["sudoku"] and len(results["sudoku"]) == 2
    for per_seed in results["sudoku"]:
        assert set(per_seed) == set(reproduce.ROWS) and all(0 <= v <= 1 for v in per_seed.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == results and saved["config"]["quick"]
    for row in ("base", "sft", "diffu-grpo", "d1"):
        assert (tmp_path / "sudoku" / "seed0" / row / "model.safetensors").is_file()
    table = reproduce.table(results)
    assert table.count("\n") == 5 and "±" in table  # two seeds: mean ± standard error


def test_toy_distributions_keep_test_grids_out_of_training():
    cfg = reproduce.ReproConfig(n_test=200, n_val=50, sft_examples=64)
    domain, sft_set, prompts, val, test = reproduce.distributions("sudoku", cfg, seed=0)
    train_grids = {ex.solution for ex in domain + sft_set + prompts + val}
    assert not train_grids & {ex.solution for ex in test}  # whole solution grids held out
    assert all(ex.puzzle.count("0") == 10 for ex in sft_set + test) and len(sft_set) == 64
    assert max(ex.puzzle.count("0") for ex in domain) <= 6  # the base never sees a target-level puzzle
    domain = reproduce.countdown_domain(500, 0)
    three = [ex for ex in domain if len(ex.nums) == 3]
    assert len(three) == 500 and all(max(ex.nums) <= 20 for ex in three)  # small numbers only
    cd = reproduce.tasks.get_task("countdown")
    assert all(cd.score(ex.expression, ex, style="toy")[0] == 1.0 for ex in domain[:2000])
