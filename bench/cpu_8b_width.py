"""LLaDA-8B's widths on a CPU: one full diffu-GRPO step through the command a user runs, and its peak
host memory against `--dry-run`'s plan for the same flags.

    python bench/cpu_8b_width.py                               # 2 layers at LLaDA-8B's widths: 1.5B parameters
    python bench/cpu_8b_width.py --layers 1 --d_model 256 --mlp_hidden 512 --vocab 4096   # the path in seconds

Much of what can go wrong at 8B is not about the GPU: shapes at width 4096 and a 126,464-token
vocabulary, bf16 weights with fp32 LoRA adapters, gradient checkpointing, the answer-only logits, the
memory plan's arithmetic. This script
1. writes a random checkpoint folder in LLaDA's format with LLaDA-8B's widths (d_model 4096, 32
   heads, MLP 12288, vocabulary 126,464, LLaDA's special-token ids) and --layers layers, in bf16,
   with a word-level tokenizer.json (short prompts; the real one is BPE);
2. runs `python diffu_grpo.py --model FOLDER --dry-run` and then the same command without --dry-run:
   one outer step on one Sudoku prompt with G answers, under the llada-8b defaults that a LLaDA-format
   folder takes (LoRA r 128 / alpha 64 on q, k, v, up; gradient checkpointing; p_mask 0.15, beta 0.04)
   and --mu inner updates;
3. prints the step's phase seconds (its log.jsonl) and the process's peak resident memory, until the
   step's log line (sampled from /proc) and over the whole command (os.wait4's rusage), beside the
   plan's items. The plan counts GPU tensors; the process also holds the
   Python interpreter and torch's libraries, measured as a process that imports them and stops.
The figures go to --out as JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402  (pure Python: this process stays small, see run())

# LLaDA-8B-Instruct's special tokens and their ids (its tokenizer_config.json)
SPECIAL = {"<|startoftext|>": 126080, "<|endoftext|>": 126081, "<|mdm_mask|>": 126336,
           "<|start_header_id|>": 126346, "<|end_header_id|>": 126347, "<|eot_id|>": 126348}
GiB = 2 ** 30


def write_tokenizer(folder, texts):
    """A word-level tokenizer.json holding the words of `texts`, the characters, and LLaDA's special
    tokens at their real ids, with the tokenizer_config.json that names them."""
    import tokenizers
    words = sorted({w for t in texts for w in t.split()} | {chr(i) for i in range(33, 127)})
    vocab = {w: i for i, w in enumerate(words)} | {"[UNK]": len(words)} | SPECIAL
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIAL])
    tok.save(str(folder / "tokenizer.json"))
    added = {str(i): {"content": t, "special": True} for t, i in SPECIAL.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": added}))


def write_checkpoint(folder, args):
    """A random model with LLaDA-8B's widths (or those given) and --layers layers, saved in bf16."""
    import torch
    from model import PRESETS, build, save
    cfg = replace(PRESETS["llada-8b"], n_layers=args.layers, d_model=args.d_model, mlp_hidden=args.mlp_hidden,
                  vocab_size=max(args.vocab, max(SPECIAL.values()) + 1), max_seq_len=1024)
    t0 = time.perf_counter()
    net = build(cfg, dtype=torch.bfloat16, seed=0)
    save(net, folder)
    sudoku = tasks.get_task("sudoku")
    write_tokenizer(folder, [sudoku.prompt(ex, "chat") for ex in sudoku.generate(64, seed=0, split="train")])
    n = sum(p.numel() for p in net.parameters())
    del net
    return n, time.perf_counter() - t0


def run(cmd, mark=None):
    """Run a command to its end: its output; its own peak resident memory in bytes (os.wait4's rusage of
    that child; Linux counts ru_maxrss in KiB); and, when `mark` is given, the peak of its resident
    memory sampled every 0.1 s (/proc) until the first output line holding `mark`. A child's peak starts
    at this process's size when it forks (it survives exec), so this process imports no torch."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        sampled, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024
                    sampled[-1] = max(sampled[-1], rss)
                except (OSError, StopIteration):
                    pass
                time.sleep(0.1)
        threading.Thread(target=sample, daemon=True).start()
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if mark and mark in line and len(sampled) == 1:
                sampled.append(0)  # the peak so far is the one until the mark
        stop.set()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"error: {' '.join(cmd[:3])} ... failed:\n{err.read()[-3000:]}")
    return "".join(lines), usage.ru_maxrss * 1024, sampled[0]


def plan_items(stdout):
    """(name, GiB) of each line of the --dry-run plan."""
    items = []
    for line in stdout.splitlines():
        parts = line.split("GiB  ", 1)
        if len(parts) == 2:
            items.append((parts[1], float(parts[0])))
    return items


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d_model", type=int, default=4096)
    p.add_argument("--mlp_hidden", type=int, default=12288)
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--num_generations", type=int, default=2)
    p.add_argument("--gen_length", type=int, default=32)
    p.add_argument("--diffusion_steps", type=int, default=8)
    p.add_argument("--mu", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "bench" / "cpu_8b_width.json"))
    p.add_argument("--write", help=argparse.SUPPRESS)  # the child that writes the checkpoint folder
    args = p.parse_args(argv)
    for name in ("layers", "d_model", "mlp_hidden", "vocab", "num_generations", "gen_length", "diffusion_steps", "mu"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name} must be >= 1, not {getattr(args, name)}")
    if args.write:
        print(json.dumps(write_checkpoint(Path(args.write), args)))
        return None
    widths = ["--layers", str(args.layers), "--d_model", str(args.d_model), "--mlp_hidden", str(args.mlp_hidden),
              "--vocab", str(args.vocab)]
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "llada-width", Path(tmp) / "grpo"
        _, base, _ = run([sys.executable, "-c", "import torch, diffu_grpo"])  # the interpreter and libraries
        written, _, _ = run([sys.executable, __file__, "--write", str(folder), *widths])
        params, build_s = json.loads(written.splitlines()[-1])
        print(f"checkpoint: {params / 1e9:.2f}B parameters, {args.layers} layers, written in {build_s:.0f} s")
        flags = ["--model", str(folder), "--task", "sudoku", "--steps", "1", "--mu", str(args.mu),
                 "--prompts_per_step", "1", "--num_generations", str(args.num_generations),
                 "--micro_batch", str(args.num_generations), "--gen_length", str(args.gen_length),
                 "--block_length", str(args.gen_length), "--diffusion_steps", str(args.diffusion_steps),
                 "--n_train", "16", "--n_eval", "1", "--eval_every", "0", "--save_every", "0", "--device", "cpu",
                 "--out", str(out)]
        longest = max(len(s.split()) + 8 for s in [tasks.get_task("sudoku").prompt(ex, "chat")
                                                   for ex in tasks.get_task("sudoku").generate(16, 0, "train")])
        plan_out, _, _ = run([sys.executable, "diffu_grpo.py", *flags, "--dry-run", "--prompt_length", str(longest)])
        t0 = time.perf_counter()
        _, peak, step_peak = run([sys.executable, "-u", "diffu_grpo.py", *flags], mark="| reward ")
        wall = time.perf_counter() - t0
        step = [json.loads(line) for line in open(out / "log.jsonl") if '"gen_s"' in line][-1]
    plan = plan_items(plan_out)
    estimate = [v for k, v in plan if k.startswith("estimated peak")][0]
    in_step, whole = (step_peak - base) / GiB, (peak - base) / GiB
    result = dict(params=params, layers=args.layers, d_model=args.d_model, vocab=args.vocab, wall_s=wall,
                  gen_s=step["gen_s"], logp_s=step["logp_s"], update_s=step["update_s"], interpreter_gib=base / GiB,
                  peak_rss_gib=peak / GiB, step_peak_rss_gib=step_peak / GiB, plan=dict(plan),
                  plan_peak_gib=estimate, ratio_step=in_step / estimate, ratio_whole=whole / estimate)
    print(plan_out.rstrip())
    print(f"\none step on the CPU: rollout {step['gen_s']:.1f} s, old/reference log-probs {step['logp_s']:.1f} s, "
          f"update {step['update_s']:.1f} s; the whole command {wall:.0f} s (loading, evaluation, saving)")
    print(f"peak resident memory less the interpreter and torch ({base / GiB:.2f} GiB), against the plan's "
          f"{estimate:.2f} GiB:\n  loading, first evaluation and the step  {in_step:.2f} GiB "
          f"(ratio {in_step / estimate:.2f})"
          f"\n  the whole command, with the final evaluation and the save  {whole:.2f} GiB "
          f"(ratio {whole / estimate:.2f})")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
