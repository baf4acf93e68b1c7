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
    pairs = reproduce.countdown_pairs(0)
    assert all(len(ex.nums) == 2 for ex in pairs) and len(pairs) > 10_000
