"""diffu_grpo.py's command line on a test task, with rollouts that do not depend on how the prompts
are split over processes: each prompt's G answers come from noise seeded by the prompt's text.

tests/test_distributed.py runs it under torchrun (2 processes, gloo) and in one process, and compares
the updates, which diffu-GRPO makes exact given the same rollouts. (The real rollouts draw each
process's noise from its own generator, so they differ between 1 and 2 processes.)

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/grpo_worker.py --model ... --task even
"""
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffu_grpo as dg  # noqa: E402
import tasks  # noqa: E402

ROLLOUT = dg.rollout


class EvenTask:
    """Prompts "a\\n" ... "z\\n"; the reward is the fraction of answer characters with an even code
    point, which varies among a random model's answers, so that the advantages are not all zero."""
    name = "even"

    def generate(self, n, seed, split="train"):
        return [chr(97 + (seed + i) % 26) + "\n" for i in range(n)]

    def prompt(self, ex, style):
        return ex

    def reward_funcs(self, style):
        def even(completion, ex):
            return sum(ord(c) % 2 == 0 for c in completion) / 16
        return [even]

    def score(self, completion, ex, style):
        return (self.reward_funcs(style)[0](completion, ex),)


def rollout_by_prompt(policy, tokenizer, task, examples, cfg, style, generator):
    """dg.rollout one prompt at a time, each with noise seeded by its text (prompts of equal length)."""
    parts = [ROLLOUT(policy, tokenizer, task, [ex], cfg, style,
                     torch.Generator(cfg.device).manual_seed(zlib.crc32(ex.encode()))) for ex in examples]
    return {k: torch.cat([p[k] for p in parts]) if torch.is_tensor(v) else
            sum((p[k] for p in parts), []) if k == "texts" else v for k, v in parts[0].items()}


def patch():
    tasks.TASKS["even"] = EvenTask()
    dg.rollout = rollout_by_prompt


if __name__ == "__main__":
    patch()
    dg.main()
