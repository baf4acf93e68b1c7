"""bench.py: the sampler benchmark runs and compares like with like (same tokens at temperature 0)."""
import bench
import model


def test_sampler_benchmark_checks_identical_tokens():
    cfg = model.ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=128)
    r = bench.bench_sampler(cfg, "cpu", repeats=1, batch=4, prompt=8, gen_length=16, block_length=8, steps=8)
    assert r["same_tokens"] and r["ours_tok_s"] > 0 and r["baseline_tok_s"] > 0 and r["ratio"] > 0


def test_matmul_peak_is_positive():
    assert bench.matmul_peak("cpu", n=256, repeats=2) > 0
