"""LLaDA's sampler written the way its reference generate.py computes, and the reference code's
forward pass: the independent baseline that the parity tests (tests/test_sample.py,
tests/test_fast_decoding.py) check sample.generate against and that bench.py measures it against.

It shares no code with sample.py and imports nothing from the project. It computes what LLaDA's
generate.py computes (LLaDA, arXiv 2502.09992, App. A.3 Alg. 5 and App. B): logits for the whole
sequence at every step, float64 "Gumbel" noise and a float64 softmax over the full vocabulary at
every position, confidences of -inf beyond the current block, and a Python loop over rows around
topk; the transfer schedule per row (get_num_transfer_tokens).

Shapes: B batch, P prompt length, T sequence length, V vocabulary.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def baseline_schedule(block_mask, steps):
    """Tokens to commit at each step, per row: (B, steps), n // steps each and one more for the first
    n % steps steps, n the row's masked tokens in the block (LLaDA's get_num_transfer_tokens)."""
    n = block_mask.sum(dim=1, keepdim=True)  # (B, 1)
    counts = torch.zeros(n.shape[0], steps, dtype=torch.long) + n // steps
    for row in range(n.shape[0]):
        counts[row, : int(n[row] % steps)] += 1
    return counts  # (B, steps)


@torch.no_grad()
def baseline_generate(model, prompt, steps, gen_length, block_length, temperature=0.0, cfg_scale=0.0,
                      remasking="low_confidence", mask_id=None, attention_mask=None, **unused):
    """LLaDA's generate.py: prompt (B, P) -> (B, P + gen_length). Keyword arguments it has no use for
    (a generator, Fast-dLLM's settings) are ignored; its noise comes from torch's global RNG."""
    device = prompt.device
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    if attention_mask is not None:
        ones = torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)
        attention_mask = torch.cat([attention_mask, ones], dim=1)
    is_prompt = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    per_block = steps // num_blocks
    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        counts = baseline_schedule(x[:, start:end] == mask_id, per_block)
        for i in range(per_block):
            masked = x == mask_id
            if cfg_scale > 0:
                uncond = x.clone()
                uncond[is_prompt] = mask_id
                am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both = model(torch.cat([x, uncond]), attention_mask=am)
                cond, unc = both.chunk(2)
                logits = unc + (cfg_scale + 1) * (cond - unc)
            else:
                logits = model(x, attention_mask=attention_mask)
            wide = logits.to(torch.float64)
            noise = torch.rand_like(wide)
            x0 = torch.argmax(wide.exp() / (-torch.log(noise)) ** temperature, dim=-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
            else:
                x0_p = torch.rand(x0.shape, device=device)
            x0_p[:, end:] = -float("inf")
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, x0_p, torch.tensor(-float("inf"), dtype=x0_p.dtype, device=device))
            chosen = torch.zeros_like(x0, dtype=torch.bool)
            for row in range(B):
                _, idx = torch.topk(conf[row], k=int(counts[row, i]))
                chosen[row, idx] = True
            x[chosen] = x0[chosen]
    return x


class FullLogits(nn.Module):
    """The reference code's forward pass: logits for the whole sequence, then the caller's positions."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, idx, attention_mask=None, logits_at=None):
        logits = self.inner(idx, attention_mask=attention_mask)  # (B, T, V)
        if logits_at is None:
            return logits
        if isinstance(logits_at, torch.Tensor) and logits_at.dtype == torch.bool:
            return logits[logits_at]  # (N, V)
        return logits[:, logits_at]  # (B, K, V)
