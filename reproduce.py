"""d1's Table 1 ordering at toy scale: base, +SFT, +diffu-GRPO and d1 (SFT then diffu-GRPO).

d1 (arXiv 2504.12216) Sec. 4, Table 1 claims that on every task SFT + diffu-GRPO beats diffu-GRPO
alone, which beats SFT alone and the base model. This script trains the four rows of that table for
a toy model on toy Sudoku, Countdown and Chains (tasks.py: worked steps, then the answer, as GSM8K),
per seed, and prints held-out accuracy (mean and standard error over seeds), writes the numbers as
JSON and the reward and answer curves as a PNG (matplotlib optional).

    python reproduce.py                       # one seed, the three tasks
    python reproduce.py --seeds 0,1,2         # the table with error bars
    python reproduce.py --quick               # a pipeline check in seconds (CI), not a result
    python reproduce.py --seeds 0,1,2 --rows sft,d1,mc-elbo,coupled,spg,wd1   # d1's estimator against its successors'

The toy analogue of d1's setting (docs/reproduction.md):
- base: masked-diffusion training on task-domain text that is *not* a worked solution of the test
  distribution: easier instances (Sudoku with 2-6 blanks where the target has 10; Countdown with two
  numbers, or three built with + and - only, where the target also uses * and / and gives its
  numbers in any order; Chains with the unneeded quantity listed after the chain, where the target
  lists it among the chain, beside walks and tallies: chains_domain). LLaDA-Instruct plays this role
  in d1: it can do some of the task (here 65-80% of Sudoku, 12-23% of Countdown, about 33% of Chains),
  none of it from worked target solutions.
- SFT: a fixed set of worked target solutions, trained for many epochs (d1: s1K, 1,000 examples, 20
  epochs; general reasoning rather than the target task): Sudoku 128 for 150 epochs; Countdown, whose
  base is stronger, 1,000 for 19 (chosen on validation: LOG.md, 2026-12-02, "Countdown's SFT stage
  chosen on validation"). Chains is d1's setting itself: its SFT set is the toy s1K (1,000 worked
  walks and tallies, no Chains problem) at d1's lr 1e-5 (LOG.md, 2026-12-06, "Chains, tenth probe").
- diffu-GRPO: unlimited unlabeled prompts of the target distribution with the task's reward, from
  the base (row 3) or from the SFT model (row 4, d1). The settings were chosen on the validation
  set (LOG.md, 2026-12-01, "the toy RL protocol: what makes diffu-GRPO learn"): many rollouts per
  update (32 prompts x 8 answers, mu 1, 70 steps, lr 5e-5, temperature 1.0) and d1's one-step
  estimator without its prompt masking and KL (p_mask 0, beta 0), which each cost about 5 points on a
  toy prompt that is all information. The rollouts decode with Fast-dLLM's confidence threshold
  (arXiv 2505.22618, Sec. 3.3; 0.9), about 3x faster for the same gain; every evaluation decodes one
  token per step.
- evaluation: greedy accuracy on n_test held-out target instances (Sudoku: from solution grids never
  used in training); settings are chosen on a separate validation set (n_val instances from the
  training grids or split), which is also what the training runs report as they go: every
  rl_eval_every steps the RL runs score it greedily (accuracy) and with one sampled answer per
  prompt under fixed noise (val_reward), the curves of rewards.png.

A finished task and seed leaves result.json in its folder (each row's accuracy and its score on
every held-out item); running again with the same settings reuses it, so an interrupted reproduction
continues where it stopped, and asking for more rows trains only those. Each difference is reported
twice: paired over seeds, and with the trained models fixed, paired over the items of every seed.
The rows beyond d1 are d1's RL run from the same SFT model with another log-likelihood estimate or
loss (diffu_grpo.py --estimator, --loss); their curves go to estimators.png.
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
from model import SMALL, build, default_device, load, save
from model_files import byte_tokenizer
from checkpoints import latest_checkpoint, settings_diff
from runs import option, parse_config, run_command


ROWS = ("base", "sft", "diffu-grpo", "d1")
# Rows beyond d1: d1's run from the SFT model with another log-likelihood estimate or loss
BEYOND = {"mc-elbo": dict(estimator="mc-elbo"), "coupled": dict(estimator="coupled"), "spg": dict(estimator="spg"),
          "wd1": dict(loss="wd1"),
          # the path the sampler took (d2, TraceRL): exact, with four steps per pass (StepMerge), in AR order (JustGRPO)
          "trajectory": dict(estimator="trajectory"), "trajectory-m4": dict(estimator="trajectory", merge_steps=4),
          "ar-order": dict(estimator="trajectory", ar_order=True),
          "ar-rollouts": dict(ar_order=True)}  # JustGRPO's rollouts with d1's estimate: which of the two counts
RL_ROWS = {"diffu-grpo": ("base", {}), "d1": ("sft", {}), **{row: ("sft", c) for row, c in BEYOND.items()}}
# Each task's sampler: answer length, block length and denoising steps of the rollouts, of the evaluations
# (one token per step there unless the task says otherwise) and of the answers SFT pads to (tasks.py)
TOY_TASKS = ("sudoku", "countdown", "chains")  # the tasks with toy distributions below
SAMPLERS = {name: tasks.get_task(name).toy_sampler for name in TOY_TASKS}


@dataclass
class ReproConfig:
    model: str = option("repro", "model size: repro (d_model 128, 4 layers) or toy")
    tasks: str = option("sudoku,countdown,chains", "tasks to reproduce, comma-separated")
    rows: str = option("base,sft,diffu-grpo,d1", "rows, comma-separated: base, sft, diffu-grpo, d1, and the SFT model "
                                                 "trained by RL with another estimate or loss: " + ", ".join(BEYOND))
    seeds: str = option("0", "seeds, comma-separated (3 for error bars)")
    n_test: int = option(2000, "held-out target instances per task", must=">= 1")
    n_val: int = option(256, "validation instances (what the training runs report)", must=">= 1")
    sudoku_pretrain_steps: int = option(600, "Sudoku's base model: masked-diffusion steps on its domain data",
                                        must=">= 1")
    countdown_pretrain_steps: int = option(1800, "Countdown's base model: the same (its domain text is larger)",
                                           must=">= 1")
    chains_pretrain_steps: int = option(1500, "Chains' base model: the same", must=">= 1")
    sudoku_sft_examples: int = option(128, "Sudoku's fixed, small set of worked target solutions", must=">= 1")
    countdown_sft_examples: int = option(1000, "Countdown's (d1's s1K size: its base is stronger, LOG.md)", must=">= 1")
    chains_sft_examples: int = option(1000, "Chains' toy s1K: worked walks and tallies, not Chains problems (d1's s1K)",
                                      must=">= 1")
    chains_sft_lr: float = option(1e-5, "Chains' SFT learning rate (d1's; Sudoku and Countdown: sft.py's 1e-3)",
                                  must="> 0")
    sft_steps: int = option(300, "SFT steps over that set (batch 64: 150 epochs of 128, 19 of 1,000)", must=">= 1")
    rl_steps: int = option(70, "diffu-GRPO outer steps for each RL row", must=">= 1")
    rl_lr: float = option(5e-5, "diffu-GRPO learning rate", must="> 0")
    temperature: float = option(1.0, "rollout temperature", must=">= 0")
    threshold: float = option(0.9, "rollouts only: Fast-dLLM parallel decoding threshold (0: off); "
                                   "evaluation always decodes one token per step", must="in [0, 1]")
    prompts_per_step: int = option(32, "prompts per diffu-GRPO step", must=">= 1")
    num_generations: int = option(8, "G", must=">= 2")
    mu: int = option(1, "inner updates per batch of rollouts", must=">= 1")
    p_mask: float = option(0.0, "prompt masking probability of the log-prob estimate (d1: 0.15)", must="in [0, 1]")
    beta: float = option(0.0, "weight of the KL to the reference policy (d1: 0.04)", must=">= 0")
    mc_samples: int = option(1, "mc-elbo and spg rows: masked copies per estimate (1: d1's forward passes per update)",
                             must=">= 1")
    sudoku_spg_beta: float = option(1.0, "spg row on Sudoku: the EUBO's beta (SPG's choice for Sudoku)", must=">= 1")
    countdown_spg_beta: float = option(1.5, "spg row on Countdown: the EUBO's beta (SPG's choice elsewhere)",
                                       must=">= 1")
    chains_spg_beta: float = option(1.5, "spg row on Chains: the same", must=">= 1")
    rl_eval_every: int = option(10, "validation accuracy and sampled reward every this many RL steps", must=">= 1")
    quick: bool = option(False, "tiny budgets everywhere: checks the pipeline, not the result")
    out: str = option("runs/reproduce", "folder for checkpoints, results.json and rewards.png")
    device: str = option(default_device(), "cuda, mps or cpu")


QUICK = dict(n_test=32, n_val=16, sudoku_pretrain_steps=20, countdown_pretrain_steps=20, chains_pretrain_steps=20,
             sudoku_sft_examples=16, countdown_sft_examples=16, chains_sft_examples=16, sft_steps=10,
             rl_steps=2, prompts_per_step=4, num_generations=4, mu=1, rl_eval_every=1)

# ----------------------------------------------------------------------------- the toy distributions

def countdown_domain(n, seed):
    """Countdown domain text, easier than the target task: every two-number instance a op b in 1..100
    (about 10,800), and n three-number instances over 1..100 built with + and - only (the target task
    also uses * and /, and asks for its numbers in any order), each with the expression that built it.
    No instance shares (numbers, target) with the task's test split."""
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
        a, b, c = (rng.randint(1, 100) for _ in range(3))
        o1, o2 = rng.choice("+-"), rng.choice("+-")
        expr = rng.choice([f"{a}{o1}{b}{o2}{c}", f"({a}{o1}{b}){o2}{c}", f"{a}{o1}({b}{o2}{c})"])
        value = tasks.safe_eval(expr, strict=True)
        if value is None or not 1 <= value <= 100:
            continue
        key = (tuple(sorted((a, b, c))), int(value))
        if key not in seen and not tasks.countdown_in_test(*key):
            seen.add(key)
            out.append(cd.make([a, b, c], int(value), expr))
    rng.shuffle(out)
    return out


def chains_domain(n, seed):
    """Chains domain text, easier than the target task: n worked four-quantity chains whose unneeded
    quantity is listed last (the target lists it among the chain, where a model that takes the next
    definition by its place goes wrong), and n / 10 each of worked walks with their arrows in the
    path's order and of tallies of 3-6 steps: LLaDA saw text of every kind before s1K, and a base that
    has never seen a walk or a tally is wrecked by SFT on them (LOG.md, 2026-12-06, "Chains, ninth
    probe" and "tenth probe"). None is a worked target problem."""
    import random
    rng = random.Random(seed + 400)
    out = tasks.get_task("chains").generate(n, seed=seed, split="train", order="chain")
    out += [tasks.ToyS1K.walk(rng, rng.randint(3, 6), 1, ordered=True) for _ in range(n // 10)]
    out += [tasks.ToyS1K.tally(rng, rng.randint(3, 6)) for _ in range(n // 10)]
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
        domain = countdown_domain(20000, seed) if name == "countdown" else chains_domain(20000, seed)
        pool = task.generate(20000 + cfg.n_val, seed=seed + 100, split="train")
        test = task.generate(cfg.n_test, seed=seed + 200, split="test")
    val, rest = pool[:cfg.n_val], pool[cfg.n_val:]
    n_sft = getattr(cfg, f"{name}_sft_examples")
    # Chains' SFT set is its toy s1K (other problems, as d1's s1K); the others' are worked target solutions
    sft_set = tasks.get_task("toy-s1k").generate(n_sft, seed=seed + 300) if name == "chains" else rest[:n_sft]
    return domain, sft_set, rest, val, test


# ----------------------------------------------------------------------------- the four rows

def run_task(name, seed, cfg, out, rows, done=()):
    """Train the given rows of one task and seed; done: the rows of an earlier run with the same
    settings. Each trained row's per-item held-out scores. The base and SFT models are trained (and
    scored) together whenever the folder lacks them: in a first run, or beside results copied without
    their weights (docs/estimators/), where they come out as before (CPU training is deterministic)."""
    domain, sft_set, prompts, val, test = distributions(name, cfg, seed)
    folder = out / name / f"seed{seed}"
    common = dict(task=name, device=cfg.device, seed=seed, eval_every=0, n_eval=cfg.n_val)
    gen = dict(**sft.TASK_DEFAULTS[name], log_every=10 ** 9)  # the task's sampler, answers padded to its length
    models = {}
    if "base" not in done or not (folder / "sft" / "model.safetensors").is_file():  # (results copied without weights)
        save(build(SMALL if cfg.model == "repro" else cfg.model, seed=seed), folder / "init")
        steps = getattr(cfg, f"{name}_pretrain_steps")
        base = sft.SFTConfig(model=str(folder / "init"), steps=steps, out=str(folder / "base"), **common, **gen)
        models["base"], _ = sft.train(continued(base, sft.RESUME_MAY_CHANGE), domain, val)
        lr = getattr(cfg, f"{name}_sft_lr", sft.SFTConfig.lr)
        tuned = sft.SFTConfig(model=str(folder / "base"), steps=cfg.sft_steps, lr=lr, out=str(folder / "sft"),
                              **common, **gen)
        models["sft"], _ = sft.train(continued(tuned, sft.RESUME_MAY_CHANGE), sft_set, val)
    rl = diffu_grpo.GRPOConfig(steps=cfg.rl_steps, lr=cfg.rl_lr, temperature=cfg.temperature, mu=cfg.mu,
                               prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
                               p_mask=cfg.p_mask, beta=cfg.beta, threshold=cfg.threshold, **SAMPLERS[name],
                               mc_samples=cfg.mc_samples,
                               spg_beta=getattr(cfg, f"{name}_spg_beta"), **{**common, "eval_every": cfg.rl_eval_every})
    for row in rows:
        if row in RL_ROWS:
            start, change = RL_ROWS[row]
            row_cfg = replace(rl, model=str(folder / start), out=str(folder / row), **change)
            models[row], _, _ = diffu_grpo.train(continued(row_cfg, diffu_grpo.RESUME_MAY_CHANGE), prompts, val)
    return {row: item_scores(m, name, test) for row, m in models.items()}


def continued(run_cfg, may_change):
    """A training run's settings set to continue the run in its folder when that folder holds a
    checkpoint of a run with the same settings (a reproduction stopped by a signal, or one that ended
    its training), else to replace what the folder holds: the folders are reproduce.py's own."""
    last = latest_checkpoint(run_cfg.out)
    try:
        there = json.loads((last / "run.json").read_text())["config"] if last else None
    except (OSError, ValueError, KeyError):
        there = None
    same = there is not None and not settings_diff(there, asdict(run_cfg), may_change)  # as --resume compares
    return replace(run_cfg, resume=same, overwrite=not same)


def held_out(model, name, test):
    """(greedy accuracy, [(answer, score), ...]) of a toy model on a task's held-out items, as the table scores it."""
    sampler = SAMPLERS[name]
    return sample.evaluate(model, byte_tokenizer(), tasks.get_task(name), test, style="toy", batch_size=256,
                           gen_length=sampler["gen_length"], steps=sampler["diffusion_steps"],
                           block_length=sampler["block_length"])


def item_scores(model, name, test):
    """The model's score on each held-out item, in order; their mean is the row's accuracy."""
    return [score for _, score in held_out(model, name, test)[1]]


SHARED = ("tasks", "rows", "seeds", "out", "device")  # options that do not change one task-seed's result


def task_settings(name, cfg):
    """The options that decide one task's result: all but SHARED and the other tasks' own options."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in SHARED and not any(k.startswith(f"{other}_") for other in tasks.TASKS if other != name)}


def cached_task(name, seed, cfg, out, rows):
    """(result of each row, minutes) for one task and seed. An earlier run with the same settings
    (out/name/seedS/result.json) gives the rows it has; only the others are trained, and added to
    it: an interrupted reproduction continues at the first unfinished task and seed, and a new row
    costs only its own run. The minutes are those of every row of the file."""
    path, settings = out / name / f"seed{seed}" / "result.json", task_settings(name, cfg)
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    if earlier.get("settings") != settings or "minutes" not in earlier:
        earlier = dict(settings=settings, result={}, minutes=0.0)
    earlier.setdefault("items", {})
    missing = [row for row in rows if row not in earlier["result"]]
    if not missing:
        print(f"{name} seed {seed}: the result of an earlier run with these settings, {path}")
    else:
        t0 = time.time()
        for row, scores in run_task(name, seed, cfg, out, missing, earlier["result"]).items():
            earlier["result"][row], earlier["items"][row] = sum(scores) / len(scores), scores
        earlier["minutes"] += (time.time() - t0) / 60
        path.write_text(result_text(earlier))
    return {row: earlier["result"][row] for row in rows}, earlier["minutes"]


def result_text(stored):
    """result.json's text: indented JSON, with each row's per-item scores on one line."""
    head = json.dumps({k: v for k, v in stored.items() if k != "items"}, indent=2)[:-2]
    rows = ",\n".join(f"    {json.dumps(row)}: {json.dumps(scores)}" for row, scores in stored["items"].items())
    return head + ',\n  "items": {\n' + rows + "\n  }\n}\n"


def stored_items(out, name, seed, cfg, rows):
    """Each row's per-item scores of one task and seed, from result.json (cached_task's file). A row
    stored without them (result.json from before they were kept) is scored again from its checkpoint,
    which gives its stored accuracy back (greedy decoding, fixed items), and the scores are added."""
    path = out / name / f"seed{seed}" / "result.json"
    stored = json.loads(path.read_text())
    items = stored.setdefault("items", {})
    again = [row for row in rows if row not in items and (path.parent / row / "model.safetensors").is_file()]
    if again:
        test = distributions(name, cfg, seed)[-1]
        for row in again:
            items[row] = item_scores(load(path.parent / row), name, test)
        path.write_text(result_text(stored))
    return items


def mean_se(values):
    """Mean and standard error of the mean (nan for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def table(results):
    """Markdown table: accuracy mean +- standard error over seeds, per task and row."""
    lines = ["| row | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for row in next(iter(results.values()))[0]:
        cells = []
        for per_seed in results.values():
            mean, se = mean_se([r[row] * 100 for r in per_seed])
            cells.append(f"{mean:.1f} ± {se:.1f}" if len(per_seed) > 1 else f"{mean:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


ORDERINGS = (("d1", "sft"), ("diffu-grpo", "base"), ("d1", "diffu-grpo"), ("diffu-grpo", "sft"))


def compared(have):
    """The pairs (a, b) to report a - b for: d1's claimed orderings, and each row beyond d1 against d1 and SFT."""
    pairs = [(a, b) for a, b in ORDERINGS if a in have and b in have]
    return pairs + [(row, other) for row in have if row in BEYOND for other in ("d1", "sft") if other in have]


def orderings(results):
    """For each of d1's claimed orderings and task (and each row beyond d1 against d1 and SFT): the
    mean paired difference in points over seeds, its paired standard error, how many seeds it holds on."""
    lines = []
    for name, per_seed in results.items():
        for a, b in compared(per_seed[0]):
            diffs = [(r[a] - r[b]) * 100 for r in per_seed]
            mean, se = mean_se(diffs)
            z = f", {mean / se:.1f} paired SE" if se > 0 else ""
            lines.append(f"{name}: {a} - {b} = {mean:+.1f} points{z}, "
                         f"holds on {sum(d > 0 for d in diffs)} of {len(diffs)} seeds")
    return "\n".join(lines)


def item_orderings(items):
    """The same differences with the trained models held fixed: paired over the held-out items of
    every seed pooled (items: {task: [{row: per-item scores} per seed]}), so that training noise is not
    in the standard error; the stricter yardstick for rows whose seed-to-seed spread is small."""
    lines = []
    for name, per_seed in items.items():
        for a, b in compared([row for row in per_seed[0] if all(row in s for s in per_seed)]):
            diffs = [(x - y) * 100 for s in per_seed for x, y in zip(s[a], s[b])]
            mean, se = mean_se(diffs)
            z = f", {mean / se:.1f} item-paired SE" if se > 0 else ""
            lines.append(f"{name}: {a} - {b} = {mean:+.2f} points{z} over {len(diffs)} items")
    return "\n".join(lines)


def costs(out, names, seeds, rows, cfg):
    """Markdown table of what each RL row spent, mean over tasks and seeds: forward passes of one
    log-likelihood estimate (the update's budget, per task where the tasks' samplers differ; the
    rollouts, the same for every row, dominate) and seconds per run in rollouts, in the old policy's
    estimates, and in the updates (from log.jsonl)."""
    lines = ["| row | passes per estimate | rollouts (s) | old log-probs (s) | updates (s) |", "|---|---|---|---|---|"]
    for row in rows:
        change = RL_ROWS[row][1]
        per_task = [diffu_grpo.GRPOConfig(mc_samples=cfg.mc_samples, **SAMPLERS[name], **change) for name in names]
        passes = " / ".join(dict.fromkeys(str(diffu_grpo.ESTIMATORS[c.estimator].passes(c)) for c in per_task))
        runs = [rollouts for name in names for rollouts, _ in rl_logs(out, name, seeds, row)]
        spent = [sum(sum(r[k] for r in rollouts) for rollouts in runs) / len(runs)
                 for k in ("gen_s", "logp_s", "update_s")]
        lines.append(f"| {row} | {passes} | " + " | ".join(f"{s:.0f}" for s in spent) + " |")
    return "\n".join(lines)


def moving_average(values, window):
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def noise_band(values, window):
    """The noise band of a moving average of per-step rollout rewards: the standard deviation of
    the rewards about their moving average (prompt sampling, rollout noise), over sqrt(window)."""
    avg = moving_average(values, window)
    resid = [v - m for v, m in zip(values, avg)]
    return (sum(r * r for r in resid) / max(len(resid) - 1, 1)) ** 0.5 / window ** 0.5


def rl_logs(out, name, seeds, row):
    """Per seed, the diffu-GRPO run's log records as (rollout records, evaluation records)."""
    logs = []
    for seed in seeds:
        log = [json.loads(line) for line in open(out / name / f"seed{seed}" / row / "log.jsonl")]
        logs.append(([r for r in log if "reward" in r], [r for r in log if "val_reward" in r]))
    return logs


def seed_mean(rollouts, key, scale=1.0):
    """Per RL step, the mean over seeds of one rollout figure (rollouts: each seed's rollout records)."""
    return [sum(c) / len(c) / scale for c in zip(*[[r[key] for r in rl] for rl in rollouts])]


COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def plot(out, names, seeds, rows=("diffu-grpo", "d1"), file="rewards.png", window=10):
    """One column per task. Top: validation accuracy (greedy) and validation reward (sampled) of the
    RL rows over the run, mean over seeds, and the rollout reward's moving average with its noise
    band. Middle: the fraction of groups whose G rewards are all equal (no learning signal). Bottom:
    the rollouts' answers (plot_answers)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no rewards.png (pip install matplotlib)")
        return
    fig, axes = plt.subplots(3, len(names), figsize=(5.5 * len(names), 9), squeeze=False,
                             gridspec_kw=dict(height_ratios=[2, 1, 1]))
    for col, name in enumerate(names):
        top, bottom, runs = axes[0][col], axes[1][col], {}
        for row, color in zip(rows, COLORS):
            logs = rl_logs(out, name, seeds, row)
            runs[row] = [rollouts for rollouts, _ in logs]
            evals = [e for _, e in logs]
            steps = [r["step"] for r in evals[0]]
            for key, style in (("accuracy", "-o"), ("val_reward", "--s")):
                mean = [sum(e[i][key] for e in evals) / len(evals) for i in range(len(steps))]
                top.plot(steps, mean, style, color=color, ms=3, label=f"{row}: validation {key.replace('val_', '')}")
            mean = seed_mean(runs[row], "reward")
            avg, band = moving_average(mean, window), noise_band(mean, window)
            x = [r["step"] for r in logs[0][0]]
            top.plot(x, avg, ":", color=color, lw=1, label=f"{row}: rollout reward ({window}-step mean)")
            top.fill_between(x, [a - band for a in avg], [a + band for a in avg], color=color, alpha=0.12)
            bottom.plot(x, moving_average(seed_mean(runs[row], "zero_std_groups"), window), color=color, label=row)
        top.set(title=f"toy {name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})", ylabel="accuracy / reward")
        top.legend(fontsize=7)
        bottom.set(ylabel="groups without variance", ylim=(0, 1))
        bottom.legend(fontsize=7)
        plot_answers(axes[2][col], tasks.get_task(name), runs, window)
    fig.tight_layout()
    fig.savefig(out / file, dpi=120)


def plot_answers(ax, task, runs, window):
    """The rollouts' answers during RL (runs: each row's per-seed rollout records), moving averages of
    the mean over seeds: their length in tokens (solid) and, for a task with a layout reward (Chains:
    steps, then '#### n'), the fraction of answers with that layout (dashed, right axis)."""
    layout = next((f for f in task.toy_rewards if f.endswith("_format")), None)
    right = ax.twinx() if layout else None
    for (row, rollouts), color in zip(runs.items(), COLORS):
        x = [r["step"] for r in rollouts[0]]
        length = seed_mean(rollouts, "answer_len")
        ax.plot(x, moving_average(length, window), color=color, label=f"{row}: answer tokens")
        if layout:
            share = seed_mean(rollouts, layout, getattr(task, layout).max_value)
            right.plot(x, moving_average(share, window), "--", color=color, label=f"{row}: answers with the layout")
    ax.set(xlabel="diffu-GRPO step", ylabel="answer tokens")
    ax.legend(fontsize=7, loc="lower left")
    if layout:
        right.set(ylabel="answers with the layout", ylim=(0, 1.05))
        right.legend(fontsize=7, loc="lower right")


def main(argv=None):
    cfg = parse_config(ReproConfig, argv, __doc__.split("\n\n")[0])
    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    out, names = Path(cfg.out), cfg.tasks.split(",")
    seeds = [int(s) for s in cfg.seeds.split(",")]
    results, minutes = {name: [] for name in names}, {name: [] for name in names}
    rows = cfg.rows.split(",")
    for name in names:  # a task without toy distributions or an unknown row fails before any training
        if name not in TOY_TASKS:
            raise ValueError(f"reproduce.py has toy distributions for {', '.join(TOY_TASKS)}, not {name!r}")
    for row in rows:
        if row not in ROWS and row not in BEYOND:
            raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS + tuple(BEYOND))}")
    for seed in seeds:
        for name in names:
            result, took = cached_task(name, seed, cfg, out, rows)
            results[name].append(result)
            minutes[name].append(took)
            print(f"{name} seed {seed} ({took:.1f} min): " + ", ".join(f"{k} {v:.1%}" for k, v in result.items()))
    total = sum(map(sum, minutes.values()))  # the compute of every task-seed, also of those reused from earlier runs
    print(f"\nheld-out accuracy (%), {cfg.n_test} instances per task, {len(seeds)} seed(s), {total:.1f} min\n")
    print(table(results))
    paired = orderings(results)
    print(f"\nd1's orderings, paired over seeds:\n{paired}")
    items = {name: [stored_items(out, name, seed, cfg, rows) for seed in seeds] for name in names}
    by_item = item_orderings(items)
    print(f"\nthe same with the models fixed, paired over items:\n{by_item}")
    (out / "results.json").write_text(json.dumps(dict(config=asdict(cfg), results=results, minutes=total,
                                                      task_minutes=minutes, orderings=paired.splitlines(),
                                                      item_orderings=by_item.splitlines()), indent=2))
    if "diffu-grpo" in rows and "d1" in rows:
        plot(out, names, seeds)
    beyond = [row for row in rows if row in BEYOND]
    if beyond:
        spent = costs(out, names, seeds, [row for row in rows if row in RL_ROWS], cfg)
        print(f"\nwhat each RL row spent (mean per run):\n{spent}")
        plot(out, names, seeds, rows=["d1"] * ("d1" in rows) + beyond, file="estimators.png")
    return results


if __name__ == "__main__":
    run_command(main, "the --out folder")
