"""d1's Table 1 ordering at toy scale: base, +SFT, +diffu-GRPO and d1 (SFT then diffu-GRPO).

d1 (arXiv 2504.12216) Sec. 4, Table 1 claims that on every task SFT + diffu-GRPO beats diffu-GRPO
alone, which beats SFT alone and the base model. This script trains the four rows of that table for
a toy model on toy Sudoku and Countdown, per seed, and prints held-out accuracy (mean and standard
error over seeds), writes the numbers as JSON and the reward curves as a PNG (matplotlib optional).

    python reproduce.py                       # one seed, both tasks
    python reproduce.py --seeds 0,1,2         # the table with error bars
    python reproduce.py --quick               # a pipeline check in seconds (CI), not a result

The toy analogue of d1's setting (README, "Reproducing d1 at toy scale"):
- base: masked-diffusion training on task-domain text that is *not* a worked solution of the test
  distribution: easier instances (Sudoku with 2-6 blanks where the target has 10; Countdown with two
  numbers, or three small ones, 1-20, where the target draws three from 1-100). LLaDA-Instruct
  plays this role in d1: it can do some of the task, none of it from worked target solutions.
- SFT: a small, fixed set of worked target solutions, trained for many epochs (d1: s1K, 1,000
  examples, 20 epochs; general reasoning rather than the target task).
- diffu-GRPO: unlimited unlabeled prompts of the target distribution with the task's reward, from
  the base (row 3) or from the SFT model (row 4, d1).
- evaluation: greedy accuracy on n_test held-out target instances (Sudoku: from solution grids never
  used in training); settings are chosen on a separate validation set (n_val instances from the
  training grids or split), which is also what the training runs report as they go.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diffu_grpo
import sample
import sft
import tasks
from model import ModelConfig, build, default_device, save
from model_files import byte_tokenizer
from runs import option, parse_config


@dataclass
class ReproConfig:
    model: str = option("repro", "model size: repro (d_model 128, 4 layers) or toy")
    tasks: str = option("sudoku,countdown", "tasks to reproduce, comma-separated")
    seeds: str = option("0", "seeds, comma-separated (3 for error bars)")
    n_test: int = option(2000, "held-out target instances per task")
    n_val: int = option(256, "validation instances (what the training runs report)")
    pretrain_steps: int = option(600, "base model: masked-diffusion steps on the easier domain data")
    sft_examples: int = option(128, "the fixed, small set of worked target solutions")
    sft_steps: int = option(300, "SFT steps over that set (batch 64: 150 epochs at the defaults)")
    rl_steps: int = option(40, "diffu-GRPO outer steps for each RL row")
    rl_lr: float = option(1e-4, "diffu-GRPO learning rate")
    temperature: float = option(0.7, "rollout temperature")
    prompts_per_step: int = option(16, "prompts per diffu-GRPO step")
    num_generations: int = option(8, "G")
    mu: int = option(4, "inner updates per batch of rollouts")
    quick: bool = option(False, "tiny budgets everywhere: checks the pipeline, not the result")
    out: str = option("runs/reproduce", "folder for checkpoints, results.json and rewards.png")
    device: str = option(default_device(), "cuda, mps or cpu")


REPRO = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=384)
QUICK = dict(n_test=32, n_val=16, pretrain_steps=20, sft_examples=16, sft_steps=10, rl_steps=2,
             prompts_per_step=4, num_generations=4, mu=1)
ROWS = ("base", "sft", "diffu-grpo", "d1")


# ----------------------------------------------------------------------------- the toy distributions

def countdown_domain(n, seed):
    """Countdown domain text, easier than the target task: every two-number instance a op b in 1..100
    (about 10,800), and n three-number instances whose numbers are small (1..20; the target task draws
    them from 1..100), each with the expression that built it."""
    import random
    cd, rng = tasks.get_task("countdown"), random.Random(seed)
    out = []
    for a in range(1, 101):
        for b in range(1, 101):
            for op, value in (("+", a + b), ("-", a - b), ("*", a * b), ("/", a / b)):
                if value == int(value) and 1 <= value <= 100:
                    out.append(cd.make([a, b], int(value), f"{a}{op}{b}"))
    seen = set()
    while len(seen) < n:
        a, b, c = (rng.randint(1, 20) for _ in range(3))
        expr = rng.choice([f"{a}{o1}{b}{o2}{c}" for o1 in "+-*" for o2 in "+-*"] + [f"({a}+{b})*{c}", f"({a}-{b})*{c}"])
        value = tasks.safe_eval(expr, strict=True)
        if value is not None and value == int(value) and 1 <= value <= 100 and (a, b, c, value) not in seen:
            seen.add((a, b, c, value))
            out.append(cd.make([a, b, c], int(value), expr))
    rng.shuffle(out)
    return out


def distributions(name, cfg, seed):
    """(domain, sft set, rl prompts, validation, test) example lists for one task and seed."""
    task = tasks.get_task(name)
    if name == "sudoku":
        target = 10  # blanks of the target puzzles; the domain data has 2-6
        domain = [ex for b in range(2, 7) for ex in task.generate(6000, seed=seed, split="train", blanks=b)]
        pool = task.generate(20000 + cfg.n_val, seed=seed + 100, split="train", blanks=target)
        test = task.generate(cfg.n_test, seed=seed + 200, split="test", blanks=target)
    else:
        domain = countdown_domain(20000, seed)
        pool = task.generate(20000 + cfg.n_val, seed=seed + 100, split="train")
        test = task.generate(cfg.n_test, seed=seed + 200, split="test")
    val, rest = pool[:cfg.n_val], pool[cfg.n_val:]
    return domain, rest[:cfg.sft_examples], rest, val, test


# ----------------------------------------------------------------------------- the four rows

def run_task(name, seed, cfg, out):
    """Train base, +SFT, +diffu-GRPO and d1 for one task and seed; held-out accuracy of each."""
    domain, sft_set, prompts, val, test = distributions(name, cfg, seed)
    folder = out / name / f"seed{seed}"
    init = folder / "init"
    net = build(REPRO if cfg.model == "repro" else cfg.model, seed=seed)
    save(net, init)
    common = dict(task=name, device=cfg.device, seed=seed, eval_every=0, n_eval=cfg.n_val)
    gen = dict(answer_length=16, gen_length=16, block_length=16, diffusion_steps=16, log_every=10 ** 9)
    base, _ = sft.train(sft.SFTConfig(model=str(init), steps=cfg.pretrain_steps, out=str(folder / "base"),
                                      **common, **gen), domain, val)
    tuned, _ = sft.train(sft.SFTConfig(model=str(folder / "base"), steps=cfg.sft_steps, out=str(folder / "sft"),
                                       **common, **gen), sft_set, val)
    rl = diffu_grpo.GRPOConfig(steps=cfg.rl_steps, lr=cfg.rl_lr, temperature=cfg.temperature, mu=cfg.mu,
                               prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
                               gen_length=16, block_length=16, diffusion_steps=16, **common)
    models = {"base": base, "sft": tuned}
    for row, start in (("diffu-grpo", "base"), ("d1", "sft")):
        models[row], _, _ = diffu_grpo.train(replace(rl, model=str(folder / start), out=str(folder / row)),
                                             prompts, val)
    tokenizer = byte_tokenizer()
    return {row: sample.evaluate(m, tokenizer, tasks.get_task(name), test, style="toy", gen_length=16, steps=16,
                                 block_length=16, batch_size=256)[0] for row, m in models.items()}


def table(results):
    """Markdown table: accuracy mean +- standard error over seeds, per task and row."""
    lines = ["| row | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for row in ROWS:
        cells = []
        for per_seed in results.values():
            accs = [r[row] * 100 for r in per_seed]
            mean = sum(accs) / len(accs)
            se = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 / len(accs) ** 0.5 if len(accs) > 1 else math.nan
            cells.append(f"{mean:.1f} ± {se:.1f}" if len(accs) > 1 else f"{mean:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(out, names, seeds):
    """Reward per diffu-GRPO step, one panel per task (skipped without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no rewards.png (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for row, color in (("diffu-grpo", "tab:blue"), ("d1", "tab:red")):
            for i, seed in enumerate(seeds):
                log = [json.loads(l) for l in open(out / name / f"seed{seed}" / row / "log.jsonl")]
                ax.plot([r["step"] for r in log], [r["reward"] for r in log], color=color, alpha=0.8,
                        label=row if i == 0 else None)
        ax.set(title=f"toy {name}", xlabel="diffu-GRPO step", ylabel="mean reward of the rollouts")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rewards.png", dpi=120)


def main(argv=None):
    cfg = parse_config(ReproConfig, argv, __doc__.split("\n\n")[0])
    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    out, names = Path(cfg.out), cfg.tasks.split(",")
    seeds = [int(s) for s in cfg.seeds.split(",")]
    t0, results = time.time(), {name: [] for name in names}
    for name in names:
        tasks.get_task(name)  # an unknown task fails before any training
    for seed in seeds:
        for name in names:
            results[name].append(run_task(name, seed, cfg, out))
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.1%}" for k, v in results[name][-1].items()))
    minutes = (time.time() - t0) / 60
    print(f"\nheld-out accuracy (%), {cfg.n_test} instances per task, {len(seeds)} seed(s), {minutes:.1f} min\n")
    print(table(results))
    (out / "results.json").write_text(json.dumps(dict(config=asdict(cfg), results=results, minutes=minutes), indent=2))
    plot(out, names, seeds)
    return results


if __name__ == "__main__":
    main()
