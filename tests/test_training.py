"""End to end on CPU: masked SFT learns a toy task; diffu-GRPO raises a reward the model can move."""
import json
import sys
from dataclasses import replace

import pytest
import torch

import diffu_grpo as dg
import model
import model_files
import runs
import sft

SMALL = model.ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=192, max_seq_len=64)


@pytest.fixture
def small_path(tmp_path):
    path = tmp_path / "small"
    model.save(model.build(SMALL, seed=0), path)
    return path


def test_sft_learns_toy_sudoku(small_path, tmp_path):
    cfg = sft.SFTConfig(model=str(small_path), task="sudoku", n_train=5000, n_eval=128, steps=600, batch_size=64,
                        lr=3e-3, eval_every=0, log_every=100, out=str(tmp_path / "sft"), device="cpu")
    net, acc = sft.train(cfg)
    assert acc >= 0.65  # fraction of blanks filled right (78% when written); chance is about 1/4
    log = [json.loads(l) for l in open(tmp_path / "sft" / "log.jsonl")]
    assert len(log) == 600 and log[-1]["accuracy"] == acc
    assert sum(r["loss"] for r in log[-20:]) < 0.6 * sum(r["loss"] for r in log[:20])
    assert model.load(tmp_path / "sft").config == SMALL  # the checkpoint is model.py's format


class SevensTask:
    """A reward the model can easily move: the fraction of answer characters that are '7'."""
    name = "sevens"

    def prompt(self, ex, style):
        return ex

    def reward_funcs(self, style):
        def sevens(completion, ex):
            return completion.count("7") / 8
        return [sevens]


@pytest.mark.parametrize("block_length,threshold,cache", [(8, 0.0, "none"), (4, 0.3, "dual")])
def test_diffu_grpo_raises_an_easy_reward(block_length, threshold, cache):
    """With LLaDA's sampler, and with Fast-dLLM's parallel decoding and dual cache in the rollouts."""
    torch.manual_seed(0)
    policy = model.build(SMALL, seed=1)
    ref = model.build(SMALL, seed=1).requires_grad_(False)
    tok = model_files.byte_tokenizer()
    cfg = dg.GRPOConfig(num_generations=8, mu=2, lr=3e-3, gen_length=8, block_length=block_length, diffusion_steps=8,
                        temperature=1.0, p_mask=0.15, beta=0.04, epsilon=0.2, grad_clip=1.0, device="cpu",
                        threshold=threshold, cache=cache)  # d1's estimator, not the toy defaults
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    prompts = ["a\n", "bb\n", "ccc\n", "d\n"]
    rewards = [dg.train_step(policy, ref, opt, tok, SevensTask(), prompts, cfg, "toy", g, gen)[0]["reward"]
               for _ in range(25)]
    assert rewards[0] < 0.1  # random weights: '7' is one byte in 260
    assert sum(rewards[-5:]) / 5 > 0.5  # most answer characters are now '7'


@pytest.mark.parametrize("estimator,loss,ar_order", [("mc-elbo", "grpo", False), ("coupled", "grpo", False),
                                                    ("spg", "grpo", False), ("trajectory", "grpo", False),
                                                    ("trajectory", "grpo", True), ("one-step", "wd1", False)])
def test_every_estimator_and_loss_raises_an_easy_reward(estimator, loss, ar_order, small_path):
    """The successors' estimators and wd1's loss (docs/estimators.md) learn the same easy reward as d1's."""
    policy = model.build(SMALL, seed=1)
    ref = model.build(SMALL, seed=1).requires_grad_(False)
    tok = model_files.byte_tokenizer()
    cfg = dg.GRPOConfig(num_generations=8, mu=2, lr=3e-3, gen_length=8, block_length=4, diffusion_steps=8,
                        temperature=1.0, beta=0.04 if estimator == "coupled" else 0.0, grad_clip=1.0, device="cpu",
                        threshold=0.0, estimator=estimator, loss=loss,  # ESPO's k2 KL at 0.04 holds the policy still
                        ar_order=ar_order, model=str(small_path))
    dg.setup(cfg)  # the settings pass their own checks
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    prompts = ["a\n", "bb\n", "ccc\n", "d\n"]
    records = [dg.train_step(policy, ref, opt, tok, SevensTask(), prompts, cfg, "toy", g, gen)[0] for _ in range(25)]
    assert records[0]["reward"] < 0.1
    assert sum(r["reward"] for r in records[-5:]) / 5 > 0.5
    first = dg.train_step(policy, ref, opt, tok, SevensTask(), prompts, replace(cfg, mu=1), "toy", g, gen)[0]
    assert first["clip_frac"] == 0.0  # one update: the ratio is exactly 1, old and current share the noise


@pytest.mark.parametrize("estimator", ["one-step", "mc-elbo"])
def test_micro_batches_give_the_unaccumulated_gradient(estimator, monkeypatch):
    """--micro_batch 5 on 16 rollouts (5, 5, 5, 1) gives the gradient of one pass over all 16: each
    micro-batch's loss is over the whole batch's normalisers (d1's p_mask and KL, and a sequence-level estimate)."""
    tok = model_files.byte_tokenizer()
    grads = []
    monkeypatch.setattr(dg, "apply_gradients", lambda opt, params, clip, loss: grads.append([p.grad.clone() for p in params]))
    for micro in (0, 5):
        policy, ref = model.build(SMALL, seed=1), model.build(SMALL, seed=1).requires_grad_(False)
        cfg = dg.GRPOConfig(num_generations=4, mu=1, gen_length=8, block_length=8, diffusion_steps=8, temperature=1.0,
                            p_mask=0.15, beta=0.04, threshold=0.0, estimator=estimator, micro_batch=micro,
                            device="cpu")
        opt = torch.optim.AdamW(policy.parameters())
        g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        dg.train_step(policy, ref, opt, tok, SevensTask(), ["a\n", "bb\n", "ccc\n", "d\n"], cfg, "toy", g, gen)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_diffu_grpo_run_logs_the_start_and_every_step_with_each_figure(small_path, tmp_path):
    cfg = dg.GRPOConfig(model=str(small_path), task="countdown", n_train=100, n_eval=16, steps=2,
                        prompts_per_step=4, num_generations=4, mu=2, eval_every=0, micro_batch=6,
                        out=str(tmp_path / "grpo"), device="cpu")
    policy, before, after = dg.train(cfg)
    log = [json.loads(l) for l in open(tmp_path / "grpo" / "log.jsonl")]
    assert [r["step"] for r in log] == [0, 1, 2]  # step 0: the starting point's held-out figures
    assert log[0]["accuracy"] == before and set(log[0]) == {"step", "accuracy", "val_reward", "val_reward_se"}
    for key in ("reward", "reward_std", "toy_reward", "kl", "clip_frac", "answer_len", "zero_std_groups",
                "gen_s", "update_s"):
        assert key in log[1]
    assert 0 <= before <= 1 and log[-1]["accuracy"] == after and 0 <= log[-1]["val_reward"] <= 1


def test_validation_reward_is_reproducible_and_leaves_training_noise_alone():
    """Fixed prompts and noise of a fixed seed: the same policy gets the same validation reward, and
    scoring it draws nothing from torch's global RNG (LoRA dropout) or the run's own generators."""
    policy = model.build(SMALL, seed=1)
    state = torch.get_rng_state()
    tok = model_files.byte_tokenizer()
    cfg = dg.GRPOConfig(num_generations=4, gen_length=8, block_length=8, diffusion_steps=8, temperature=1.0,
                        device="cpu")
    prompts = [chr(97 + i) + "\n" for i in range(10)]
    first, se = dg.validation_reward(policy, tok, SevensTask(), prompts, cfg, "toy", batch_size=4)
    assert (first, se) == dg.validation_reward(policy, tok, SevensTask(), prompts, cfg, "toy")
    assert 0 <= first <= 1 and se >= 0 and policy.training  # the mode it had
    assert torch.equal(state, torch.get_rng_state())
    rollouts = [dg.rollout(policy, tok, SevensTask(), prompts, replace(cfg, num_generations=1), "toy",
                           torch.Generator().manual_seed(s))["total"] for s in (0, 1)]
    assert not torch.equal(*rollouts)  # the rollout noise does move the reward: the seed is what fixes it


def test_grpo_rejects_bad_settings(small_path, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="at least 2"):
        dg.setup(dg.GRPOConfig(model=str(small_path), num_generations=1, device="cpu"))
    with pytest.raises(ValueError, match="loss_norm"):
        dg.setup(dg.GRPOConfig(model=str(small_path), loss_norm="mean", device="cpu"))
    for bad, match in ((dict(estimator="elbo"), "--estimator must be one of one-step, mc-elbo, coupled, spg"),
                       (dict(loss="ppo"), "--loss must be one of grpo, wd1"),
                       (dict(loss="wd1", beta=0.04), "use --beta 0"),
                       (dict(loss="wd1", micro_batch=6, num_generations=4), "multiple of --num_generations"),
                       (dict(estimator="spg", spg_beta=0.5), "--spg_beta at least 1"),
                       (dict(estimator="mc-elbo", mc_samples=0), "--mc_samples must be at least 1")):
        with pytest.raises(ValueError, match=match):
            dg.setup(dg.GRPOConfig(model=str(small_path), device="cpu", **bad))
    monkeypatch.chdir(tmp_path)  # no runs/sft-toy here
    with pytest.raises(FileNotFoundError, match="run `python sft.py` first"):
        dg.setup(dg.GRPOConfig(device="cpu"))


def test_llada_8b_switches_to_d1_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # and no way to download
    cfg = runs.parse_config(dg.GRPOConfig, ["--model", "llada-8b", "--task", "sudoku"], None, dg.MODEL_DEFAULTS)
    assert (cfg.p_mask, cfg.beta, cfg.epsilon, cfg.lr, cfg.grad_clip, cfg.num_generations) == \
        (0.15, 0.04, 0.5, 3e-6, 0.2, 6)
    assert (cfg.gen_length, cfg.diffusion_steps, cfg.block_length, cfg.weight_decay) == (256, 128, 32, 0.1)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.grad_ckpt) == (128, 64.0, 0.05, True)
    # as d1's code ran: PEFT matched only these of its seven names; its Sudoku scripts lost --temperature 0.3
    assert (cfg.lora_targets, cfg.temperature, cfg.loss_norm) == ("q_proj,k_proj,v_proj,up_proj", 0.9, "group")
    with pytest.raises(FileNotFoundError, match="needs the weights of GSAI-ML/LLaDA-8B-Instruct"):
        dg.setup(cfg)
    assert cfg.mu == 8  # d1's NUM_ITER for Sudoku and Countdown; 12 for GSM8K and MATH
    gsm = runs.parse_config(dg.GRPOConfig, ["--model", "llada-8b", "--task", "gsm8k"], None, dg.MODEL_DEFAULTS)
    with pytest.raises(FileNotFoundError):
        dg.setup(gsm)
    assert gsm.mu == 12
    written = runs.parse_config(dg.GRPOConfig, ["--model", "llada-8b", "--temperature", "0.3", "--lora_targets",
                                                "q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out"], None,
                                dg.MODEL_DEFAULTS)
    assert written.temperature == 0.3 and len(written.lora_targets.split(",")) == 7  # as the scripts read
    toy = runs.parse_config(dg.GRPOConfig, ["--mu", "3", "--no-scale_rewards", "--temperature", "0.5"])
    assert (toy.mu, toy.scale_rewards, toy.temperature, toy.model) == (3, False, 0.5, "runs/sft-toy")


def test_a_task_sets_a_toy_runs_sampler_and_the_model_and_flags_override_it():
    for mod, cfg_cls in ((sft, sft.SFTConfig), (dg, dg.GRPOConfig)):
        chains = runs.parse_config(cfg_cls, ["--task", "chains"], None, mod.MODEL_DEFAULTS, mod.TASK_DEFAULTS)
        assert (chains.gen_length, chains.block_length, chains.diffusion_steps) == (48, 8, 48)
        sudoku = runs.parse_config(cfg_cls, [], None, mod.MODEL_DEFAULTS, mod.TASK_DEFAULTS)
        assert (sudoku.gen_length, sudoku.block_length, sudoku.diffusion_steps) == (16, 16, 16)
        flag = runs.parse_config(cfg_cls, ["--task", "chains", "--gen_length", "64"], None, mod.MODEL_DEFAULTS,
                                 mod.TASK_DEFAULTS)
        assert (flag.gen_length, flag.block_length) == (64, 8)
        big = runs.parse_config(cfg_cls, ["--model", "llada-8b", "--task", "chains"], None, mod.MODEL_DEFAULTS,
                                mod.TASK_DEFAULTS)
        assert (big.gen_length, big.block_length, big.diffusion_steps) == (256, 32, 128)  # d1's, for every task
    assert runs.parse_config(sft.SFTConfig, ["--task", "chains"], None, sft.MODEL_DEFAULTS,
                             sft.TASK_DEFAULTS).answer_length == 48  # answers padded to the sampler's length


def test_s1k_records_render_in_d1_format():
    from conftest import SHARED, need
    records = sft.s1k_records(need(SHARED / "data" / "s1k" / "s1k_questions_solutions.json"))
    assert len(records) == 1000 and records[1]["answer"] == "128"  # the partial copy: solution stands in
    tok = model_files.byte_tokenizer()
    prompt, answer = sft.s1k_pairs(tok, records[:1])[0]
    text = tok._decode_ids(answer[:-1])
    assert text.startswith("<reasoning>") and text.endswith("</answer>") and answer[-1] == tok.eot_id
    assert records[0]["question"] in tok._decode_ids(prompt)


def test_full_s1k_records_use_trajectory_and_attempt_and_an_empty_file_fails(tmp_path):
    rows = [{"question": "Q?", "thinking_trajectories": ["think"], "attempt": "A", "solution": "S"}]
    (tmp_path / "s1k.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert sft.s1k_records(tmp_path / "s1k.jsonl") == [dict(question="Q?", reasoning="think", answer="A")]
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="no records"):
        sft.s1k_records(tmp_path / "empty.json")


def test_dry_run_plans_llada_8b_on_one_80gb_gpu(capsys):
    dg.main(["--model", "llada-8b", "--dry-run"])  # loads nothing: no weights here
    out = capsys.readouterr().out
    assert "fits one 80 GB GPU" in out and "14.93 GiB  weights (bf16)" in out and "168M LoRA" in out
    cfg = runs.parse_config(dg.GRPOConfig, ["--model", "llada-8b", "--lora_r", "0"], None, dg.MODEL_DEFAULTS)
    assert runs.print_plan(cfg, model.PRESETS["llada-8b"]) > 80 * 2 ** 30  # full fine-tuning would not fit


def test_dry_run_keeps_the_graph_of_every_pass_of_an_estimate(capsys):
    # mc-elbo with K copies keeps K graphs until the backward: K times the activations and answer logits
    cfg = runs.parse_config(dg.GRPOConfig, ["--model", "llada-8b"], None, dg.MODEL_DEFAULTS)
    one, four = (runs.memory_plan(cfg, model.PRESETS["llada-8b"], p) for p in (1, 4))
    for (name, b1), (name4, b4) in zip(one, four):
        per_pass = name.startswith(("update activations", "answer logits"))
        assert b4 == (4 * b1 if per_pass else b1) and ("x 4 passes" in name4) == per_pass
    dg.main(["--model", "llada-8b", "--dry-run", "--estimator", "mc-elbo", "--mc_samples", "4"])
    assert "x 4 passes" in capsys.readouterr().out


def test_diffu_grpo_with_lora_trains_only_adapters():
    policy, base = model.build(SMALL, seed=1), model.build(SMALL, seed=1)
    params = model.prepare_for_training(policy, lora_r=4, lora_alpha=8.0, grad_ckpt=True)
    ref = dg.reference_policy(policy, lora=True)  # adapters off: the base, no second copy
    cfg = dg.GRPOConfig(num_generations=8, mu=2, lr=3e-3, gen_length=8, block_length=8, diffusion_steps=8,
                        temperature=1.0, p_mask=0.15, beta=0.04, lora_r=4, device="cpu")  # d1's estimator, its KL
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    tok = model_files.byte_tokenizer()
    records = [dg.train_step(policy, ref, opt, tok, SevensTask(), ["a\n", "b\n"], cfg, "toy", g, gen)[0]
               for _ in range(3)]
    assert records[-1]["kl"] > 0  # the policy has moved away from its adapters-off reference
    base_params = dict(base.named_parameters())
    for n, p in policy.named_parameters():
        if "lora_" in n:
            continue
        assert torch.equal(p, base_params[n]), n  # base weights frozen
    assert any(layer.lora_B.abs().sum() > 0 for layer in model.lora_layers(policy))


def test_diffu_grpo_end_to_end_with_lora_saves_merged(small_path, tmp_path):
    cfg = dg.GRPOConfig(model=str(small_path), task="sudoku", n_train=50, n_eval=8, steps=1, prompts_per_step=2,
                        num_generations=4, mu=1, lora_r=4, lora_alpha=8.0, grad_ckpt=True, eval_every=0,
                        out=str(tmp_path / "lora"), device="cpu")
    policy, _, _ = dg.train(cfg)
    assert model.lora_layers(policy)
    assert not model.lora_layers(model.load(tmp_path / "lora"))  # a plain checkpoint


def test_a_llada_folder_takes_d1_settings_and_a_toy_folder_the_toy_ones(tiny_path, small_path):
    big = runs.parse_config(dg.GRPOConfig, ["--model", str(tiny_path)], None, dg.MODEL_DEFAULTS)
    assert (big.model, big.mu, big.p_mask, big.beta, big.threshold, big.lora_r) == (str(tiny_path), None, 0.15, 0.04,
                                                                                    0.0, 128)  # d1's (mu: by task)
    toy = runs.parse_config(dg.GRPOConfig, ["--model", str(small_path)], None, dg.MODEL_DEFAULTS)
    assert (toy.model, toy.mu, toy.p_mask, toy.beta, toy.threshold, toy.lora_r) == (str(small_path), 1, 0.0, 0.0,
                                                                                     0.9, 0)  # the toy protocol


def test_a_task_without_a_generator_needs_a_data_file():
    import tasks
    with pytest.raises(ValueError, match="has no generator: pass --data"):
        tasks.examples(tasks.get_task("gsm8k"), None, 10, 0, "train")
    assert len(tasks.examples(tasks.get_task("sudoku"), None, 10, 0, "train")) == 10
