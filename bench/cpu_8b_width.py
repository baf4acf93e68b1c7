"""LLaDA-8B's widths on a CPU: one full diffu-GRPO step through the command a user runs, and its peak
host memory against `--dry-run`'s plan for the same flags (issue 15).

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
3. prints the step's phase seconds (its log.jsonl) and the process's peak resident memory
   (getrusage) beside the plan's items. The plan counts GPU tensors; the process also holds the
   Python interpreter and torch's libraries, measured as a process that imports them and stops.
The figures go to --out as JSON.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from model import PRESETS, build, save  # noqa: E402
import tasks  # noqa: E402

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


def run(cmd):
    """Run a command to its end: its output, and the largest peak resident memory of this script's
    children so far, in bytes (Linux: ru_maxrss in KiB), which is this command's when it is the largest."""
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd[:3])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


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
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "llada-width", Path(tmp) / "grpo"
        params, build_s = write_checkpoint(folder, args)
        print(f"checkpoint: {params / 1e9:.2f}B parameters, {args.layers} layers, written in {build_s:.0f} s")
        flags = ["--model", str(folder), "--task", "sudoku", "--steps", "1", "--mu", str(args.mu),
                 "--prompts_per_step", "1", "--num_generations", str(args.num_generations),
                 "--micro_batch", str(args.num_generations), "--gen_length", str(args.gen_length),
                 "--block_length", str(args.gen_length), "--diffusion_steps", str(args.diffusion_steps),
                 "--n_train", "16", "--n_eval", "1", "--eval_every", "0", "--save_every", "0", "--device", "cpu",
                 "--out", str(out)]
        longest = max(len(s.split()) + 8 for s in [tasks.get_task("sudoku").prompt(ex, "chat")
                                                   for ex in tasks.get_task("sudoku").generate(16, 0, "train")])
        _, base = run([sys.executable, "-c", "import torch, diffu_grpo"])  # the smallest child first
        plan_out, _ = run([sys.executable, "diffu_grpo.py", *flags, "--dry-run", "--prompt_length", str(longest)])
        t0 = time.perf_counter()
        _, peak = run([sys.executable, "diffu_grpo.py", *flags])
        wall = time.perf_counter() - t0
        step = [json.loads(line) for line in open(out / "log.jsonl") if '"gen_s"' in line][-1]
    plan = plan_items(plan_out)
    planned = dict(plan)
    estimate = [v for k, v in plan if k.startswith("estimated peak")][0]
    measured = (peak - base) / GiB
    result = dict(params=params, layers=args.layers, d_model=args.d_model, vocab=args.vocab, wall_s=wall,
                  gen_s=step["gen_s"], logp_s=step["logp_s"], update_s=step["update_s"], peak_rss_gib=peak / GiB,
                  interpreter_gib=base / GiB, measured_gib=measured, plan=planned, plan_peak_gib=estimate,
                  ratio=measured / estimate)
    print(plan_out.rstrip())
    print(f"\none step on the CPU: rollout {step['gen_s']:.1f} s, old/reference log-probs {step['logp_s']:.1f} s, "
          f"update {step['update_s']:.1f} s; the whole command {wall:.0f} s (loading, evaluation, saving)")
    print(f"peak resident memory {peak / GiB:.2f} GiB, of which the interpreter and torch {base / GiB:.2f} GiB: "
          f"{measured:.2f} GiB against the plan's {estimate:.2f} GiB (ratio {measured / estimate:.2f})")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
