"""bench/gpu_8b.py: the prepared LLaDA-8B GPU check, run here at tiny size on the CPU."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

import diffu_grpo

SCRIPT = ROOT / "bench" / "gpu_8b.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_8b", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--device", "cpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text()), run.stdout


def test_tiny_run_reports_every_figure(tiny_result):
    r, stdout = tiny_result
    assert r["preset"] == "tiny" and r["device"] == "cpu" and r["gpu"] is None and r["torch"] == torch.__version__
    for phase in ("build", "forward", "generate", "grpo"):
        assert r[phase]["status"] == "ok", (phase, r[phase])
    assert r["build"]["params"] > 0 and r["build"]["build_s"] > 0
    fwd, gen, grpo = r["forward"], r["generate"], r["grpo"]
    assert (fwd["batch"], fwd["seq_len"], fwd["logits_at"]) == (2, 24, [8, 24])
    assert fwd["median_s"] > 0 and fwd["tokens_per_s"] > 0
    assert gen["time_s"] > 0 and gen["tokens_per_s"] > 0 and gen["gen_length"] == 16
    assert grpo["step_s"] > 0 and grpo["trainable_params"] > 0
    for phase in (fwd, gen, grpo):
        assert phase["peak_mem_gib"] is None  # no CUDA on the CPU
    rec = grpo["record"]
    for key in ("gen_s", "update_s", "reward", "kl", "clip_frac", "loss", "answer_len"):
        assert key in rec, key
    assert rec["gen_s"] > 0 and rec["update_s"] > 0 and 0 <= rec["clip_frac"] <= 1
    assert rec["reward_std"] > 0  # the stand-in reward is random: the advantages are not all zero
    assert grpo["config"]["mu"] == 2 and grpo["config"]["lora_r"] == 4 and grpo["config"]["grad_ckpt"]
    assert r["total_s"] > 0
    assert "grpo.update_s" in stdout and "wrote" in stdout  # the printed table


def test_llada_8b_sizes_are_d1s():
    bench = load_bench()
    cfg = bench.grpo_config(bench.SIZES["llada-8b"], "cuda", 0)
    d1 = diffu_grpo.MODEL_DEFAULTS["llada-8b"]
    for key, value in d1.items():
        if key not in ("prompts_per_step", "mu"):
            assert getattr(cfg, key) == value, key
    assert cfg.prompts_per_step == 1 and cfg.mu == 12 and cfg.device == "cuda"  # d1's larger mu (GSM8K, MATH)
    s = bench.SIZES["llada-8b"]
    assert (s["batch"], s["prompt"] + s["gen_length"]) == (6, 456)
    assert bench.CONFIGS["llada-8b"] == bench.PRESETS["llada-8b"]


def test_out_of_memory_is_reported_and_not_raised():
    bench = load_bench()

    def runs_out():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    r = bench.guarded(runs_out)
    assert r["status"] == "OOM" and "out of memory" in r["error"]
    assert bench.guarded(lambda: dict(x=1)) == dict(status="ok", x=1)
