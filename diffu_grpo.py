"""diffu-GRPO: d1's second stage, policy-gradient RL for a masked diffusion LM.

d1 (arXiv 2504.12216) Sec. 3.1-3.2, Eq. 2-4 and Algorithm 1. Each outer step samples G answers
per prompt with LLaDA's sampler, scores them with the task's reward, and takes mu gradient steps
on the clipped GRPO objective. A dLLM has no cheap sequence log-likelihood, so d1 estimates the
per-token log-probabilities with ONE forward pass (Sec. 3.1): the prompt with each token masked
with probability p_mask, followed by the answer fully masked; log pi(o^k | q) is read off at each
answer position. Each inner step draws a fresh prompt mask, a perturbed view of the same
(prompt, answer) pair that regularises reuse of the rollouts (Sec. 3.2).

    python sft.py && python diffu_grpo.py            # the toy d1 pipeline on a CPU (SFT, then RL)
    python diffu_grpo.py --model runs/sft-toy --task countdown
    python diffu_grpo.py --model llada-8b            # d1's published settings (needs the weights)
    torchrun --standalone --nproc_per_node 8 diffu_grpo.py --model runs/sft-llada-8b --task gsm8k --data ...
    python diffu_grpo.py --resume                    # continue runs/grpo-toy from its newest checkpoint

Departures from d1's code (README.md lists the project's others):
1. The toy default averages the loss over all answer tokens of the batch (`--loss_norm token`).
   d1's code took a token mean within each micro-batch, one prompt's G answers, and averaged the
   micro-batches (`--loss_norm group`, the llada-8b default); the paper's 1/|o_i| per sequence then
   mean over sequences is `--loss_norm sequence`. Each normaliser is the whole batch's, so
   micro-batching does not change the gradient.
2. The mu prompt masks are drawn once per batch of rollouts from a seeded torch.Generator; the
   current, old and reference policies see the same mask at inner step n. d1 reseeds the global
   RNG, and with gradient accumulation some buffered micro-batches see only mu/2 masks.
3. Prompts are left-padded with an attention mask, so padding is neither seen nor masked into
   the estimate (d1 passes no attention mask).
4. Advantages are r - mean(r) (Eq. 2, as d1); `--scale_rewards` divides by the group std as
   the original GRPO does.
5. Rollouts with Fast-dLLM's parallel decoding and KV cache (`--threshold`, `--cache`; see
   sample.fast_generate): the toy default decodes rollouts with threshold 0.9 (about 3x faster, the
   same gain on validation); `--model llada-8b` keeps LLaDA's sampler. Held-out evaluation always
   uses LLaDA's exact sampler.
6. The toy defaults are the toy protocol chosen on validation (LOG.md, 2026-12-01, "the toy RL
   protocol: what makes diffu-GRPO learn"): 32 prompts x 8
   answers, mu 1, lr 5e-5, temperature 1.0, and the one-step estimator without prompt masking or KL
   (p_mask 0, beta 0), which each cost about 5 points on a toy prompt that is all information.
   `--model llada-8b` keeps d1's values (mu 12, p_mask 0.15, beta 0.04).

Beyond d1 (--estimator, --loss; docs/estimators.md): its successors' log-likelihood estimates, each
an equation function, a named noise and terms function and one row of the ESTIMATORS table (LLaDA's
Monte-Carlo ELBO as VRPO and ESPO use it, coupled-GRPO's complementary masks, SPG's sandwich of
bounds), and wd1's ratio-free loss. d1's one-step estimate is the default; the rest of the loop is
the same for all.

Several processes (torchrun, one GPU each): each process rolls out, scores and computes the
advantages of all G answers of its own prompts (so group statistics need no communication); the
prompt masks are drawn for the whole batch and the loss is normalised over the whole batch, so an
update equals one process's update on the same rollouts. The plumbing lives in distributed.py (the
gradient sum), checkpoints.py (checkpoints of every generator's state, the folder's lock) and runs.py
(--resume, Ctrl-C and SIGTERM, the log, and the GPU memory plan that `--dry_run` prints).

Shapes: N = prompts x G sequences, P prompt length, L answer length, V vocabulary.
"""
import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

import tasks
from model import (LORA_TARGETS, PRESETS, config_and_tokenizer, default_device, lora_disabled,
                   read_config)
from distributed import (all_gather, all_reduce_sum, check_world, over_processes, rank_world, share,
                         whole_batch)
from runs import (Run, apply_gradients, autocast, check_prompt_room, clock, option, parse_config, print_plan,
                  run_command)
from sample import (PathRecorder, check_fast_settings, check_settings, decode, encode_prompt, held_out_accuracy, pick,
                    prompt_batch, prompt_style)


@dataclass
class GRPOConfig:
    model: str = option("runs/sft-toy", "checkpoint folder to start from (python sft.py writes runs/sft-toy), "
                                        "or a preset")
    task: str = option("sudoku", f"one of {', '.join(tasks.TASKS)}")
    data: str = option(None, "prompts file (default: the task's seeded generator)")
    test_data: str = option(None, "held-out file (default: the task's generator, test split)")
    n_train: int = option(20000, "training prompts drawn from the generator", must=">= 1")
    n_eval: int = option(256, "held-out examples evaluated every eval_every steps", must=">= 1")
    steps: int = option(60, "outer steps (each: one batch of rollouts, then mu updates)", must=">= 1")
    prompts_per_step: int = option(32, "prompts per outer step", must=">= 1")
    num_generations: int = option(8, "G, answers per prompt", must=">= 2")
    mu: int = option(1, "inner updates per batch of rollouts (d1: 12 for GSM8K and MATH, 8 for Countdown and Sudoku)",
                     must=">= 1")
    p_mask: float = option(0.0, "one-step: probability of masking each prompt token in the estimate (d1: 0.15)",
                           must="in [0, 1]")
    beta: float = option(0.0, "weight of the k3 KL to the reference policy (d1: 0.04)", must=">= 0")
    epsilon: float = option(0.2, "clip range of the ratio", must="> 0")
    estimator: str = option("one-step", "log-likelihood estimate: one-step (d1), mc-elbo (VRPO/ESPO), coupled "
                                        "(coupled-GRPO), spg (SPG's sandwich), trajectory (d2, TraceRL: the path the "
                                        "sampler took); docs/estimators.md")
    loss: str = option("grpo", "grpo (clipped ratio, Eq. 4) or wd1 (wd1's ratio-free weighted likelihood)")
    mc_samples: int = option(2, "mc-elbo and spg: masked copies of each answer (forward passes per estimate)",
                             must=">= 1")
    spg_omega: float = option(0.5, "spg: weight of the upper bound (EUBO) for answers with negative advantage",
                              must="in [0, 1]")
    spg_beta: float = option(1.5, "spg: the EUBO's beta (>= 1; SPG: 1.0 for Sudoku, 1.5 otherwise)", must=">= 1")
    merge_steps: int = option(1, "trajectory: consecutive sampler steps scored by one forward pass (d2's "
                                 "StepMerge; 1: the exact path likelihood)", must=">= 1")
    ar_order: bool = option(False, "rollouts decode one token per step, left to right (JustGRPO): the trajectory "
                                   "estimate is then the exact sequence log-likelihood")
    lr: float = option(5e-5, "learning rate (constant)", must="> 0")
    weight_decay: float = option(0.1, "AdamW weight decay", must=">= 0")
    grad_clip: float = option(0.2, "gradient-norm clip", must="> 0")
    temperature: float = option(1.0, "rollout temperature (Gumbel-max)", must=">= 0")
    gen_length: int = option(16, "answer length", must=">= 1")
    block_length: int = option(16, "sampler block length", must=">= 1")
    diffusion_steps: int = option(16, "sampler steps", must=">= 1")
    threshold: float = option(0.9, "rollouts only: Fast-dLLM parallel decoding, also commit every candidate this "
                                   "confident (0: off, LLaDA's sampler)", must="in [0, 1]")
    cache: str = option("none", "rollouts only: Fast-dLLM approximate KV cache, none, prefix or dual")
    loss_norm: str = option("token", "token: mean over the batch's answer tokens; sequence: 1/|o_i| (the "
                                     "paper's Eq. 4); group: a token mean per prompt's G answers, then over "
                                     "prompts (d1's code)")
    scale_rewards: bool = option(False, "divide advantages by the group std (d1 does not)")
    micro_batch: int = option(0, "sequences per forward/backward in the update (0: all at once)", must=">= 0")
    lora_r: int = option(0, "LoRA rank (0: train every parameter; the reference is then a frozen copy)", must=">= 0")
    lora_alpha: float = option(16.0, "LoRA alpha (the update is scaled by alpha / r)", must="> 0")
    lora_dropout: float = option(0.0, "dropout on the LoRA input", must="in [0, 1)")
    lora_targets: str = option(",".join(LORA_TARGETS), "projections that get adapters")
    grad_ckpt: bool = option(False, "gradient checkpointing per block")
    prompt_length: int = option(200, "longest prompt in tokens, for --dry_run's plan (d1 truncates at 200)",
                                must=">= 0")
    dry_run: bool = option(False, "print the GPU memory plan for these settings and exit, loading nothing")
    eval_every: int = option(10, "evaluate every this many outer steps (0: only at the start and end)", must=">= 0")
    out: str = option("runs/grpo-toy", "folder for the model, its checkpoints and log.jsonl")
    save_every: int = option(10, "write a resumable checkpoint every this many steps (also at the end, on "
                             "Ctrl-C or SIGTERM)", must=">= 0")
    resume: bool = option(False, "continue the run in --out from its newest checkpoint (--steps may grow)")
    overwrite: bool = option(False, "replace an earlier run in --out (its checkpoints and log) instead of stopping")
    seed: int = option(0, "seed of the prompt order, the rollouts and the prompt masks", must=">= 0")
    device: str = option(default_device(), "cuda, mps or cpu")


# d1's settings as its released code ran them (d1 Sec. 4; slurm_scripts/*.sbatch and train.yaml, with the
# pinned peft 0.15.1 and TRL; docs/d1-as-ran.md). mu None: d1's NUM_ITER for the task (D1_MU). Where the
# scripts read differently: Sudoku's --temperature 0.3 never reached the program (0.9 ran); LoRA on all
# seven projections matched only q, k, v and up in LLaDA's names (--lora_targets as below).
MODEL_DEFAULTS = {"llada-8b": dict(model="llada-8b", mu=None, p_mask=0.15, beta=0.04, epsilon=0.5, lr=3e-6,
                                   threshold=0.0, weight_decay=0.1, grad_clip=0.2, num_generations=6,
                                   prompts_per_step=16, gen_length=256, diffusion_steps=128, block_length=32,
                                   temperature=0.9, loss_norm="group", steps=5000, micro_batch=6, n_eval=256,
                                   eval_every=100, save_every=100, lora_r=128, lora_alpha=64.0, lora_dropout=0.05,
                                   lora_targets="q_proj,k_proj,v_proj,up_proj", grad_ckpt=True,
                                   out="runs/grpo-llada-8b")}

TASK_DEFAULTS = {name: t.toy_sampler for name, t in tasks.TASKS.items()}  # a toy run's sampler for each task

D1_MU = {"gsm8k": 12, "math500": 12, "countdown": 8, "sudoku": 8}  # NUM_ITER of d1's sbatch scripts

# Settings that --resume lets differ from the checkpoint's: none of them changes the training itself.
RESUME_MAY_CHANGE = ("steps", "resume", "overwrite", "device", "out", "eval_every", "save_every", "n_eval",
                     "test_data", "prompt_length", "dry_run")


# ----------------------------------------------------------------------------- Eq. 2-4

def group_advantages(rewards, G, scale=False):
    """A_i = r_i - mean_j r_j over the G answers of the same prompt (Eq. 2); rewards (N,) grouped
    as consecutive runs of G. With scale, divide by the group std (original GRPO)."""
    r = rewards.view(-1, G)  # (N/G, G)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)  # (N,)


def completion_mask(completion, stop_ids):
    """(N, L) bool: the answer up to and including its first end-of-text / end-of-turn token."""
    stop = torch.isin(completion, torch.tensor(stop_ids, device=completion.device))
    before = stop.long().cumsum(dim=1) - stop.long()  # stops strictly before each position
    return before == 0


def mask_prompt(prompt, p_mask, mask_id, u):
    """q' (Sec. 3.1): each prompt token replaced by [MASK] independently with probability p_mask,
    where its uniform draw u (N, P) falls below p_mask. prompt (N, P) -> (N, P)."""
    return prompt.masked_fill((u < p_mask).to(prompt.device), mask_id)


def answer_logps(model, prompt, completion, masked, mask_id, attention_mask=None):
    """log p_theta(o^k | q, o_t) at every answer position k, where o_t is the answer with the positions
    where masked (N, L) is True replaced by [MASK]: one forward pass on [q | o_t]. (N, L); the
    values at unmasked positions are computed too, but no estimator below uses them."""
    N, P = prompt.shape
    L = completion.shape[1]
    x = torch.cat([prompt, completion.masked_fill(masked.to(completion.device), mask_id)], dim=1)  # (N, P + L)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(N, L)], dim=1)
    logits = model(x, attention_mask=attention_mask, logits_at=slice(P, P + L))  # (N, L, V)
    return -F.cross_entropy(logits.float().flatten(0, 1), completion.flatten(), reduction="none").view(N, L)


def per_token_logps(model, masked_prompt, completion, mask_id, attention_mask=None):
    """The one-step estimate of log pi(o^k | q) (Sec. 3.1): one forward pass on
    [q' | M ... M], log-softmax at the answer positions gathered at the sampled tokens. (N, L)."""
    every = torch.ones_like(completion, dtype=torch.bool)  # the answer fully masked
    return answer_logps(model, masked_prompt, completion, every, mask_id, attention_mask)


# ----------------------------------------------------------------------------- beyond d1: ELBO estimators

def elbo_mask_weight(n_masked, L):
    """The weight of one mask of the answer, with l = n_masked of its L positions masked, in LLaDA's
    bound (arXiv 2502.09992, Eq. 5; Eq. 12 conditioned on the prompt): E_t[(1/t) P(that mask | t)] over
    t ~ U(0,1], each position masked with probability t, = int_0^1 t^(l-1) (1-t)^(L-l) dt
    = (l-1)! (L-l)! / L!."""
    return math.factorial(n_masked - 1) * math.factorial(L - n_masked) / math.factorial(L)


@torch.no_grad()
def exact_elbo(model, prompt, completion, mask_id, attention_mask=None):
    """LLaDA's lower bound on log p(o | q) (Eq. 5), computed exactly for a short answer: the sum over all
    2^L - 1 non-empty masks S of elbo_mask_weight(|S|, L) sum_{k in S} log p(o^k | q, o with S masked).
    (N,). It costs 2^L - 1 forward passes: the reference that the estimators' bias and variance are
    measured against (bench.py, tests), not a training estimator."""
    N, L = completion.shape
    total = torch.zeros(N)
    for bits in range(1, 2 ** L):
        masked = torch.tensor([(bits >> k) & 1 for k in range(L)], dtype=torch.bool).expand(N, L)  # (N, L)
        logp = answer_logps(model, prompt, completion, masked, mask_id, attention_mask)
        total += elbo_mask_weight(int(masked[0].sum()), L) * (logp * masked.to(logp.device)).sum(1).cpu()
    return total


def uniforms(g, n, rows=slice(None)):
    """rand(*shape): U[0,1) draws of shape (n, *shape) from g, cut to this process's rows. Every noise
    function below draws through it, for the whole batch alike on every process (torchrun), so that
    the noise of a row does not depend on the number of processes."""
    return lambda *shape: torch.rand(n, *shape, generator=g)[rows]


def elbo_noise(rand, L, K):
    """The randomness of the K-sample Monte-Carlo ELBO for answers of length L, in LLaDA's lower-variance
    form (Eq. 6): per copy l ~ U{1..L} positions masked, chosen uniformly, so t = l / L (n, K) and the
    masks (n, K, L). (Drawing t ~ U(0,1] and masking each position with probability t, Eq. 5, has the
    same mean but an infinite variance: the weight 1/t of a rare masked token at small t; bench.py.)
    Drawn once per inner update and shared by the current, old and reference policies, so that their
    estimates differ by the policy and not by the noise (VRPO, arXiv 2505.19223, which also uses Eq. 6)."""
    l = 1 + (rand(K) * L).long()  # (n, K) in 1..L
    order = rand(K, L).argsort(-1).argsort(-1)  # a uniformly random rank of each position
    return dict(t=l / L, masked=order < l[..., None])


def mc_elbo_terms(model, prompt, completion, mask_id, noise, attention_mask=None):
    """LLaDA's bound estimated with K masked copies of the answer, per answer position: (N, L) terms
    (1/K) sum_k 1[o^k masked in copy k] (1/t_k) log p(o^k | q, o_{t_k}), t_k = l_k / L (Eq. 6). Their
    sum over the positions is an unbiased estimate of exact_elbo (the estimator of VRPO and ESPO).
    K forward passes."""
    t, masked = noise["t"].to(completion.device), noise["masked"].to(completion.device)  # (N, K), (N, K, L)
    K = t.shape[1]
    terms = torch.zeros(completion.shape, device=completion.device)
    for k in range(K):
        logp = answer_logps(model, prompt, completion, masked[:, k], mask_id, attention_mask)  # (N, L)
        terms = terms + logp * masked[:, k] / t[:, k, None]
    return terms / K


def coupled_noise(rand, L, t_range=(0.2, 0.8)):
    """coupled-GRPO's randomness (DiffuCoder, arXiv 2506.20639, Sec. 5, App. A.3): per answer a mask
    ratio t ~ U(0.2, 0.8) (n,), and a mask (n, L) with each position masked with probability t; its
    complement, masked at ratio 1 - t, is the other half of the pair."""
    t = t_range[0] + (t_range[1] - t_range[0]) * rand()
    return dict(t=t, masked=rand(L) < t[:, None])


def coupled_terms(model, prompt, completion, mask_id, noise, attention_mask=None):
    """coupled-GRPO's per-token estimate of log pi(o^k | q) (DiffuCoder Eq. 13 with one pair, lambda = 1):
    the mean of d1's fully masked pass and of the complementary pair, in which every answer token is
    masked, and predicted, exactly once, weighted by 1/(its pass's mask ratio):
        0.5 [log p(o^k | q, M...M) + log p(o^k | q, o masked by m or by not-m) / (t or 1 - t)].
    (N, L); the prompt is not masked. Three forward passes."""
    t, masked = noise["t"].to(completion.device)[:, None], noise["masked"].to(completion.device)  # (N, 1), (N, L)
    full = per_token_logps(model, prompt, completion, mask_id, attention_mask)
    first = answer_logps(model, prompt, completion, masked, mask_id, attention_mask)
    second = answer_logps(model, prompt, completion, ~masked, mask_id, attention_mask)
    return 0.5 * (full + torch.where(masked, first / t, second / (1 - t)))


def spg_noise(rand, answer_mask, block_length, K):
    """SPG's block-wise masks (arXiv 2510.09541, Sec. 3.3), K per answer: pick one of the blocks that hold
    the answer (up to its first end-of-text, answer_mask (n, L)), keep the earlier blocks clean, mask a
    uniform number 1..b of that block's b answer tokens at random, and mask every later position: the
    states the semi-autoregressive sampler passes through. Returns masks (n, K, L)."""
    n, L = answer_mask.shape
    length = answer_mask.sum(1).clamp(min=1)  # (n,) |o|
    n_blocks = (length + block_length - 1) // block_length  # blocks holding the answer
    block = (rand(K) * n_blocks[:, None]).long()  # (n, K)
    start = block * block_length
    b = torch.minimum(start + block_length, length[:, None]) - start  # answer tokens in that block
    count = 1 + (rand(K) * b).long()  # U{1..b}
    pos = torch.arange(L)
    in_block = (pos >= start[..., None]) & (pos < (start + b)[..., None])  # (n, K, L)
    rank = rand(K, L).masked_fill(~in_block, 2.0).argsort(-1).argsort(-1)  # a random order within the block
    return dict(masked=(in_block & (rank < count[..., None])) | (pos >= (start + b)[..., None]))


def spg_terms(model, prompt, completion, mask_id, noise, adv, answer_mask, omega=0.5, beta=1.0,
              attention_mask=None):
    """SPG's sandwich per answer token (Sec. 3, Eq. 5-8), from K block-wise masked copies. Answers with
    A >= 0 get the ELBO, each copy weighted |o| / (masked answer tokens) as SPG's code does;
    answers with A < 0 the mixture omega * EUBO + (1 - omega) * ELBO, where the EUBO (Corollary 1, Eq. 7)
    puts the log outside the average: (1/beta) log mean_k[1[o^k masked] p(o^k | ...)^beta / t_k],
    t_k = masked answer tokens / |o| (tokens never masked add 0). (N, L); K forward passes."""
    state = noise["masked"].to(completion.device)  # (N, K, L) what each copy masks, after the answer too
    masked = state & answer_mask[:, None]  # (N, K, L), within o
    K = masked.shape[1]
    weight = answer_mask.sum(1, keepdim=True) / masked.sum(2).clamp(min=1)  # (N, K): 1 / t_k
    logps = torch.stack([answer_logps(model, prompt, completion, state[:, k], mask_id, attention_mask)
                         for k in range(K)], 1)  # (N, K, L)
    elbo = (logps * masked * weight[..., None]).sum(1) / K  # (N, L)
    inside = (beta * logps + weight.log()[..., None]).masked_fill(~masked, -math.inf)
    eubo = (torch.logsumexp(inside, 1) - math.log(K)) / beta  # (N, L)
    eubo = torch.where(masked.any(1), eubo, torch.zeros_like(eubo))
    negative = (adv < 0)[:, None]
    return torch.where(negative, omega * eubo + (1 - omega) * elbo, elbo)


# ----------------------------------------------------------------------------- beyond d1: the path the sampler took

def trajectory_terms(model, prompt, completion, order, mask_id, merge_steps=1, attention_mask=None):
    """The likelihood of the path the sampler took (d2, arXiv 2509.21474, Sec. 3-4; TraceRL, arXiv
    2509.06949), per answer token: log p(o^k | q, the answer as it stood before the step that committed
    o^k), order (N, L) the step of each commit (sample.PathRecorder). With merge_steps m > 1, the steps
    go in groups of m consecutive steps (d2's StepMerge), each group conditioned on the state before
    its first step: one forward pass per group instead of per step. (N, L); a position never
    committed (-1) adds 0. With m = 1 the sum over the answer is the exact path log-likelihood; with
    one group it is d1's fully masked pass without prompt masking."""
    group = torch.where(order >= 0, order // merge_steps, -1).to(completion.device)  # (N, L)
    terms = torch.zeros(completion.shape, device=completion.device)
    for g in group[group >= 0].unique().tolist():
        rows = (group == g).any(1).nonzero()[:, 0]  # (n,) the answers with a commit in group g
        before = group[rows] >= g  # (n, L) what was still masked before group g: its own and later commits
        am = None if attention_mask is None else attention_mask[rows]
        logp = answer_logps(model, prompt[rows], completion[rows], before, mask_id, am)  # (n, L)
        mine = torch.zeros_like(terms).index_copy(0, rows, logp)  # (N, L)
        terms = torch.where(group == g, mine, terms)
    return terms


def grpo_token_loss(logp, old_logp, ref_logp, adv, epsilon, beta):
    """Per-token loss of Eq. 4 (negated, to minimise): -min(rho A, clip(rho, 1-eps, 1+eps) A)
    + beta KL, rho = exp(logp - old_logp), KL by the k3 estimator exp(ref - logp) - (ref - logp) - 1.
    logp, old_logp, ref_logp (N, L); adv (N,). Returns the loss (N, L), the KL (N, L), clipped (N, L)."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    unclipped, clipped = ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a
    loss = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if beta:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    return loss, kl, clipped < unclipped


def reduce_loss(token_loss, mask, norm, n_tokens, n_seqs, group_tokens=None, G=1):
    """Average the per-token loss of (a micro-batch of) the batch with the whole batch's normaliser:
    token: sum / answer tokens of the batch; sequence: sum_i (1/|o_i|) sum_k / N (the paper's Eq. 4);
    group: d1's code as it ran, a token mean within each prompt's G answers (its micro-batch), then the
    mean over the batch's N / G prompts; group_tokens (n,): the answer tokens of each row's group."""
    if norm == "token":
        return (token_loss * mask).sum() / n_tokens
    if norm == "group":
        return ((token_loss * mask).sum(1) / group_tokens.clamp(min=1)).sum() / (n_seqs / G)
    return ((token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs


def grpo_sequence_loss(seq, old_seq, ref_seq, length, adv, epsilon, beta):
    """ESPO's sequence-level GRPO (arXiv 2512.03759): the answer is one action, with one ratio
    rho = exp((S - S_old) / |o|) of its log-likelihood estimates S (N,), normalised by its length |o|
    (N,); the loss -min(rho A, clip(rho, 1-eps, 1+eps) A) + beta * 0.5 (S - S_ref)^2 / |o|, ESPO's k2 KL.
    Returns the loss (N,), the KL (N,) and clipped (N,)."""
    ratio = torch.exp((seq - old_seq) / length)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv
    kl = 0.5 * (seq - ref_seq) ** 2 / length
    return -torch.min(unclipped, clipped) + beta * kl, kl, clipped < unclipped


def wd1_loss(seq, adv, G, psi=1.0):
    """wd1's ratio-free weighted likelihood (arXiv 2507.08838, Eq. 8-9): -(w+_i - w-_i) S_i per answer,
    with w+- = softmax over its group of +-psi A (psi = 1 as in wd1). No old policy, no clipping: answers
    better than their group are pushed up, worse ones down, and a group of equal rewards gives nothing.
    seq (N,) log-likelihood estimates, adv (N,), groups of G consecutive answers. Returns (N,)."""
    a = adv.view(-1, G)
    w = torch.softmax(psi * a, dim=1) - torch.softmax(-psi * a, dim=1)  # (N/G, G)
    return -(w.reshape(-1) * seq)


# ----------------------------------------------------------------------------- the flag table
# Every estimator is two functions, each of one signature for all (the equation functions above take tensors):
#   draws_<name>(rand, batch, cfg, prompt_width) -> its randomness for one inner update, {name: (N, ...)},
#       which the current, old and reference policies share; rand: uniforms() of the whole batch, prompt_width: the
#       widest prompt of the whole batch (under torchrun, of every process's);
#   estimate_<name>(model, rows, noise, cfg, mask_id) -> (n, L) per-token terms of the rows of a (micro-)batch.

def draws_one_step(rand, batch, cfg, prompt_width):
    """d1's prompt mask draws (Sec. 3.1): u (N, P) for the last P of the whole batch's prompt_width columns
    (left-padded prompts end at the last column)."""
    return dict(u=rand(prompt_width)[:, prompt_width - batch["prompt"].shape[1]:])


def estimate_one_step(model, rows, noise, cfg, mask_id):
    """d1's estimate: one pass on [q' | M ... M], q' the prompt masked with probability --p_mask."""
    masked_prompt = mask_prompt(rows["prompt"], cfg.p_mask, mask_id, noise["u"])
    return per_token_logps(model, masked_prompt, rows["completion"], mask_id, rows["attention_mask"])


def draws_mc_elbo(rand, batch, cfg, prompt_width):
    return elbo_noise(rand, batch["completion"].shape[1], cfg.mc_samples)


def estimate_mc_elbo(model, rows, noise, cfg, mask_id):
    """LLaDA's bound with --mc_samples masked copies (VRPO, ESPO)."""
    return mc_elbo_terms(model, rows["prompt"], rows["completion"], mask_id, noise, rows["attention_mask"])


def draws_coupled(rand, batch, cfg, prompt_width):
    return coupled_noise(rand, batch["completion"].shape[1])


def estimate_coupled(model, rows, noise, cfg, mask_id):
    """coupled-GRPO (DiffuCoder): d1's pass and a complementary pair."""
    return coupled_terms(model, rows["prompt"], rows["completion"], mask_id, noise, rows["attention_mask"])


def draws_spg(rand, batch, cfg, prompt_width):
    return spg_noise(rand, batch["mask"], cfg.block_length, cfg.mc_samples)


def estimate_spg(model, rows, noise, cfg, mask_id):
    """SPG's sandwich with its block-wise masks, --mc_samples copies, --spg_omega, --spg_beta."""
    return spg_terms(model, rows["prompt"], rows["completion"], mask_id, noise, rows["adv"], rows["mask"],
                     cfg.spg_omega, cfg.spg_beta, rows["attention_mask"])


def draws_trajectory(rand, batch, cfg, prompt_width):
    return {}  # nothing is drawn: the path is the rollout's own (batch["order"])


def estimate_trajectory(model, rows, noise, cfg, mask_id):
    """d2 / TraceRL: the path the sampler took, --merge_steps steps per forward pass."""
    return trajectory_terms(model, rows["prompt"], rows["completion"], rows["order"], mask_id, cfg.merge_steps,
                            rows["attention_mask"])


def one_pass(cfg):
    return 1


def mc_passes(cfg):
    return cfg.mc_samples


def coupled_passes(cfg):
    return 3


def step_passes(cfg):
    """At most: the rollout's steps over --merge_steps (fewer where Fast-dLLM's threshold ends a block early)."""
    return math.ceil(rollout_settings(cfg)["steps"] / cfg.merge_steps)


@dataclass(frozen=True)
class Estimator:
    """A log-likelihood estimate for the policy loss (--estimator): noise, its draws_ function; terms, its
    estimate_ function (above); level "token": one ratio per answer token (d1's Eq. 4), "sequence": one
    per answer, from the sum of the terms (ESPO); passes(cfg): the forward passes of one estimate."""
    noise: Callable
    terms: Callable
    level: str
    passes: Callable


ESTIMATORS = {
    "one-step": Estimator(draws_one_step, estimate_one_step, "token", one_pass),  # d1, Sec. 3.1
    "mc-elbo": Estimator(draws_mc_elbo, estimate_mc_elbo, "sequence", mc_passes),  # VRPO, ESPO
    "coupled": Estimator(draws_coupled, estimate_coupled, "token", coupled_passes),  # coupled-GRPO
    "spg": Estimator(draws_spg, estimate_spg, "sequence", mc_passes),  # SPG
    "trajectory": Estimator(draws_trajectory, estimate_trajectory, "token", step_passes),  # d2, TraceRL
}
LOSSES = ("grpo", "wd1")


def policy_loss(cfg, logp, old, ref, rows, counts):
    """The loss of one micro-batch under --loss and the estimator's level, with the whole batch's
    normalisers counts = (answer tokens, answers); and its KL and clipped fraction, likewise normalised.
    logp, old, ref: (n, L) terms of the current, old and reference policies (old, ref may be None)."""
    mask, (n_tokens, n_seqs) = rows["mask"].float(), counts
    seq = lambda terms: (terms * mask).sum(1)  # (n,) the answer's estimate, up to its first end-of-text
    if cfg.loss == "wd1":
        loss = wd1_loss(seq(logp), rows["adv"], cfg.num_generations)
        return loss.sum() / (n_seqs / cfg.num_generations), 0.0, 0.0  # mean over the batch's groups
    ref = ref if ref is not None else logp.detach()
    if ESTIMATORS[cfg.estimator].level == "token":
        tok, kl, clipped = grpo_token_loss(logp, old, ref, rows["adv"], cfg.epsilon, cfg.beta)
        loss = reduce_loss(tok, mask, cfg.loss_norm, n_tokens, n_seqs, rows["group_tokens"], cfg.num_generations)
        return (loss, ((kl * mask).sum() / n_tokens).item(),
                ((clipped.float() * mask).sum() / n_tokens).item())
    loss, kl, clipped = grpo_sequence_loss(seq(logp), seq(old), seq(ref), mask.sum(1).clamp(min=1), rows["adv"],
                                           cfg.epsilon, cfg.beta)
    return loss.sum() / n_seqs, kl.sum().item() / n_seqs, clipped.float().sum().item() / n_seqs


# ----------------------------------------------------------------------------- rollouts

def score(task, texts, examples, style):
    """Rewards (N, n_funcs), one column per named reward function of the task."""
    funcs = task.reward_funcs(style)
    rows = [[f(text, ex) for f in funcs] for text, ex in zip(texts, examples)]
    return torch.tensor(rows, dtype=torch.float32), [f.__name__ for f in funcs]


@torch.no_grad()
def rollout(policy, tokenizer, task, examples, cfg, style, generator):
    """G answers per prompt at temperature > 0; their rewards and advantages (Alg. 1, lines 4-6)."""
    G = cfg.num_generations
    prompt, am = prompt_batch(tokenizer, task, examples, style, cfg.device)
    prompt = prompt.repeat_interleave(G, dim=0)  # (N, P), the G copies of a prompt are adjacent
    am = None if am is None else am.repeat_interleave(G, dim=0)
    path = PathRecorder(prompt.shape[1], tokenizer.mask_id)  # the step of each commit, for --estimator trajectory
    out = decode(policy, prompt, temperature=cfg.temperature, mask_id=tokenizer.mask_id, attention_mask=am,
                 generator=generator, on_step=path, **rollout_settings(cfg))  # (N, P + L)
    completion = out[:, prompt.shape[1]:]  # (N, L)
    texts = [tokenizer.decode(row) for row in completion.tolist()]
    repeated = [ex for ex in examples for _ in range(G)]
    rewards, names = score(task, texts, repeated, style)
    total = rewards.sum(dim=1)  # (N,)
    stops = [t for t in (tokenizer.eos_id, tokenizer.eot_id) if t is not None]
    mask = completion_mask(completion, stops)  # (N, L)
    group_tokens = mask.view(-1, G).sum(1).repeat_interleave(G).float()  # (N,) answer tokens of each group
    return dict(prompt=prompt, attention_mask=am, completion=completion, texts=texts, rewards=rewards,
                names=names, total=total, adv=group_advantages(total, G, cfg.scale_rewards).to(cfg.device),
                mask=mask, group_tokens=group_tokens, order=path.order)


def rollout_settings(cfg):
    """The rollouts' decoding: the sampler's steps and blocks, with Fast-dLLM's threshold and cache when
    on; with --ar_order one token per step, left to right (blocks of 1, JustGRPO), LLaDA's sampler."""
    if cfg.ar_order:
        return dict(gen_length=cfg.gen_length, steps=cfg.gen_length, block_length=1)
    return dict(gen_length=cfg.gen_length, steps=cfg.diffusion_steps, block_length=cfg.block_length,
                threshold=cfg.threshold, cache=cfg.cache)


@torch.no_grad()
def validation_reward(policy, tokenizer, task, examples, cfg, style, batch_size=64):
    """The mean reward of one answer per held-out prompt, sampled as the rollouts are (temperature,
    decoding) with noise of a fixed seed, the same at every evaluation: its changes are the policy's,
    not the prompts' or the noise's, unlike the rollout reward of freshly drawn prompts. Returns the
    mean and its standard error over the prompts. Under torchrun each process samples every world-th
    prompt with its own seed and the sums are added."""
    def measure(mine, rank):
        g, total, squares = torch.Generator(cfg.device).manual_seed(cfg.seed + 2_000_000 + rank), 0.0, 0.0
        for i in range(0, len(mine), batch_size):
            r = rollout(policy, tokenizer, task, mine[i:i + batch_size], replace(cfg, num_generations=1), style, g)
            total, squares = total + r["total"].sum().item(), squares + (r["total"] ** 2).sum().item()
        return [total, squares, len(mine)]

    was_training = policy.training
    policy.eval()
    total, squares, n = over_processes(examples, measure)
    policy.train(was_training)
    mean = total / max(n, 1)
    return mean, max(squares / max(n, 1) - mean ** 2, 0.0) ** 0.5 / max(n - 1, 1) ** 0.5


@torch.no_grad()
def fixed_terms(model, noises, batch, cfg, mask_id, chunks):
    """The estimator's terms under a frozen policy (old or reference), for the noise of every inner
    update: [(N, L)] * mu."""
    terms = ESTIMATORS[cfg.estimator].terms
    return [torch.cat([terms(model, rows_of(batch, c), rows_of(noise, c, noise), cfg, mask_id) for c in chunks])
            for noise in noises]


BATCH_TENSORS = ("prompt", "attention_mask", "completion", "adv", "mask", "group_tokens", "order")  # a batch's rows


def rows_of(tensors, c, keys=BATCH_TENSORS):
    """The micro-batch c (a slice of rows) of a batch's tensors, or of a noise's (keys=noise)."""
    return {k: pick(tensors[k], c) for k in keys}


# ----------------------------------------------------------------------------- the loop

def inner_update(policy, opt, batch, noise, old, ref, cfg, mask_id, chunks, counts):
    """One gradient step of Alg. 1 (lines 8-10) on the buffered rollouts, micro-batch by micro-batch,
    with this update's estimator noise (shared with old and ref, (N, L) terms or None).
    counts = (answer tokens, sequences) of the whole batch, over all processes: the normalisers."""
    opt.zero_grad(set_to_none=True)
    stats = dict(loss=0.0, kl=0.0, clip=0.0)
    for c in chunks:
        rows = rows_of(batch, c)
        with autocast(cfg.device):
            logp = ESTIMATORS[cfg.estimator].terms(policy, rows, rows_of(noise, c, noise), cfg, mask_id)  # (n, L)
        loss, kl, clip = policy_loss(cfg, logp, pick(old, c), pick(ref, c), rows, counts)
        loss.backward()
        stats["loss"] += loss.item()
        stats["kl"] += kl
        stats["clip"] += clip
    stats = dict(zip(stats, all_reduce_sum(list(stats.values()))))  # the whole batch's
    apply_gradients(opt, opt.param_groups[0]["params"], cfg.grad_clip, stats["loss"])  # the trainable parameters
    return stats


def train_step(policy, ref_model, opt, tokenizer, task, examples, cfg, style, g, gen):
    """Alg. 1, one iteration of the outer loop: rollouts (noise from gen, on the model's device), then
    mu updates, each with fresh estimator noise (from g, on the CPU; d1: a fresh prompt mask). Under
    torchrun, examples are this process's prompts; the masks, normalisers, gradients and logged
    statistics are the whole batch's. Phase times read a synchronised clock (runs.clock)."""
    t0 = clock(cfg.device)
    policy.eval()
    batch = rollout(policy, tokenizer, task, examples, cfg, style, gen)
    t1 = clock(cfg.device)
    N = batch["completion"].shape[0]
    size = cfg.micro_batch or N
    chunks = [slice(i, i + size) for i in range(0, N, size)]
    noises, n_all = draw_noise(batch, cfg, g)
    old = fixed_terms(policy, noises, batch, cfg, tokenizer.mask_id, chunks) if cfg.loss == "grpo" else [None] * cfg.mu
    ref = fixed_terms(ref_model, noises, batch, cfg, tokenizer.mask_id, chunks) if cfg.beta else None
    t_logp = clock(cfg.device)
    policy.train()
    counts = (max(all_reduce_sum([batch["mask"].sum().item()])[0], 1), n_all)  # the whole batch's normalisers
    inner = [inner_update(policy, opt, batch, noises[n], old[n], ref[n] if ref else None, cfg,
                          tokenizer.mask_id, chunks, counts) for n in range(cfg.mu)]
    t2 = clock(cfg.device)
    record = step_record(batch, inner, cfg.num_generations)
    record.update(gen_s=t1 - t0, logp_s=t_logp - t1, update_s=t2 - t_logp)
    return record, batch


def draw_noise(batch, cfg, g):
    """The estimator's noise for each of the mu inner updates of an outer step, [dict of (n, ...)] * mu,
    and N, the number of rollouts of the whole batch. The uniform draws are made from g for the whole
    batch, alike on every process (torchrun), each of which keeps its rows (and, for d1's prompt masks,
    the last p of the P columns, where its left-padded prompts lie): the noise of a single process."""
    rows, n_all, p_all = whole_batch(batch["prompt"].shape)
    rand = uniforms(g, n_all, rows)
    return [ESTIMATORS[cfg.estimator].noise(rand, batch, cfg, p_all) for _ in range(cfg.mu)], n_all


def step_record(batch, inner, G):
    """The log record of an outer step: the whole batch's rewards (their sum and each reward function's
    mean), the last update's KL, the mean clip fraction and loss of the mu updates, the answer length
    and the fraction of groups whose G rewards are all equal (no learning signal)."""
    gathered = all_gather((batch["rewards"], batch["mask"].float().sum(1).cpu()))  # every process's
    rewards, answer_len = (torch.cat(parts) for parts in zip(*gathered))  # (N, n_funcs), (N,)
    total = rewards.sum(dim=1)  # (N,)
    return dict(reward=total.mean().item(), reward_std=total.std().item(),
                **{n: v.item() for n, v in zip(batch["names"], rewards.mean(0))},
                kl=inner[-1]["kl"], clip_frac=sum(s["clip"] for s in inner) / len(inner),
                loss=sum(s["loss"] for s in inner) / len(inner), answer_len=answer_len.mean().item(),
                zero_std_groups=(total.view(-1, G).std(dim=1) == 0).float().mean().item())


def setup(cfg, world=1):
    """Check the settings before any work, each message saying what to change. Returns the task, the
    model's config and its tokenizer; no weights are read yet."""
    if cfg.mu is None:
        cfg.mu = D1_MU.get(cfg.task, 12)
    if cfg.num_generations < 2:
        raise ValueError(f"--num_generations must be at least 2 (GRPO compares answers within a group), "
                         f"not {cfg.num_generations}")
    if cfg.loss_norm not in ("token", "sequence", "group"):
        raise ValueError(f"--loss_norm must be token, sequence or group, not {cfg.loss_norm!r}")
    if cfg.estimator not in ESTIMATORS:
        raise ValueError(f"--estimator must be one of {', '.join(ESTIMATORS)}, not {cfg.estimator!r}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, not {cfg.loss!r}")
    if cfg.loss == "wd1" and cfg.beta:
        raise ValueError("--loss wd1 has no reference policy (wd1 sets its KL weight to 0): use --beta 0")
    if cfg.loss == "wd1" and cfg.micro_batch % cfg.num_generations:
        raise ValueError(f"--loss wd1 weighs answers within their group: --micro_batch must be a multiple of "
                         f"--num_generations ({cfg.num_generations}), not {cfg.micro_batch}")
    if cfg.mc_samples < 1 or cfg.spg_beta < 1 or not 0 <= cfg.spg_omega <= 1:
        raise ValueError("--mc_samples must be at least 1, --spg_beta at least 1 and --spg_omega in [0, 1]")
    check_settings(cfg.gen_length, cfg.diffusion_steps, cfg.block_length, "low_confidence", cfg.temperature, 0.0)
    check_fast_settings(cfg.threshold, cfg.cache, "low_confidence", 0.0)
    check_world("prompts_per_step", cfg.prompts_per_step, world)
    task = tasks.get_task(cfg.task)
    try:
        mcfg, tokenizer = config_and_tokenizer(cfg.model)
    except FileNotFoundError as e:
        if cfg.model != GRPOConfig().model:
            raise
        raise FileNotFoundError(f"{e} (run `python sft.py` first: it writes {cfg.model})") from None
    return task, mcfg, tokenizer


def check_lengths(tokenizer, task, train_ex, test, style, cfg, max_seq_len):
    """Every prompt, of training and held out, must leave room for gen_length answer tokens."""
    for which, examples, for_eval in (("training", train_ex, False), ("held-out", test, True)):
        prompts = [encode_prompt(tokenizer, task, ex, style, for_eval) for ex in examples]
        check_prompt_room(prompts, cfg.gen_length, "--gen_length", max_seq_len, which)


def reference_policy(policy, lora):
    """pi_ref, the initial model (Alg. 1 line 1): with LoRA, the same network with its adapters
    switched off (no second copy of the weights); otherwise a frozen copy."""
    if lora:
        def adapters_off(*args, **kw):
            with lora_disabled(policy):
                return policy(*args, **kw)
        return adapters_off
    return copy.deepcopy(policy).eval().requires_grad_(False)


def train(cfg, train_examples=None, test_examples=None):
    """Run diffu-GRPO (Alg. 1); returns (policy, held-out accuracy before, after). Example lists, when
    given, replace the task's prompts and held-out set (reproduce.py builds its own distributions).
    Under torchrun, every process calls this. Ctrl-C or SIGTERM stops after the step in progress,
    writes a checkpoint and raises runs.Stopped; a non-finite loss raises FloatingPointError."""
    with Run(cfg, "diffu-grpo", "grpo_config.json", RESUME_MAY_CHANGE) as run:
        task, mcfg, tokenizer = setup(cfg, run.world)
        style = prompt_style(mcfg)
        train_ex, test = tasks.run_examples(task, cfg, train_examples, test_examples)
        check_lengths(tokenizer, task, train_ex, test, style, cfg, mcfg.max_seq_len)
        run.check_resume(mcfg)
        policy, tokenizer, params = run.load_model()  # pi_theta (LoRA and gradient checkpointing as cfg says)
        ref_model = reference_policy(policy, cfg.lora_r > 0) if cfg.beta else None  # pi_ref: the starting weights
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(cfg.seed)  # prompt order and masks: the same on every process
        gen = torch.Generator(cfg.device).manual_seed(cfg.seed + 1_000_000 * run.rank)  # this process's rollout noise

        def evaluate():  # greedy accuracy and the sampled reward on the fixed held-out prompts
            reward, se = validation_reward(policy, tokenizer, task, test, cfg, style)
            return dict(accuracy=held_out_accuracy(policy, tokenizer, task, test, style, cfg), val_reward=reward,
                        val_reward_se=se)

        run.begin(policy, opt, tokenizer, dict(g=g, gen=gen), evaluate, evaluate_first=True)
        for step in run.steps(show="reward"):
            idx = torch.randint(len(train_ex), (cfg.prompts_per_step,), generator=g).tolist()  # the step's prompts
            mine = idx[share(cfg.prompts_per_step, run.rank, run.world)]  # this process's, all G answers of each
            record, _ = train_step(policy, ref_model, opt, tokenizer, task, [train_ex[i] for i in mine], cfg, style,
                                   g, gen)
            run.log(record, f"reward {record['reward']:.3f} ± {record['reward_std']:.3f} | kl {record['kl']:.4f} | "
                            f"clip {record['clip_frac']:.3f} | gen {record['gen_s']:.1f}s logp {record['logp_s']:.1f}s "
                            f"upd {record['update_s']:.1f}s")
    return policy, run.metrics["accuracy_before"], run.metrics["accuracy"]


def main(argv=None):
    cfg = parse_config(GRPOConfig, argv, __doc__.split("\n\n")[0], MODEL_DEFAULTS, TASK_DEFAULTS)
    if cfg.dry_run:
        print_plan(cfg, PRESETS[cfg.model] if cfg.model in PRESETS else read_config(cfg.model),
                   ESTIMATORS[cfg.estimator].passes(cfg))
        return

    def run():
        policy, before, after = train(cfg)
        if rank_world()[0] == 0:
            print(f"diffu-GRPO done: held-out accuracy {before:.2%} -> {after:.2%}; checkpoint in {cfg.out}")

    run_command(run, cfg.out)


if __name__ == "__main__":
    main()
