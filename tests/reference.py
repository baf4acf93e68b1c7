"""A straightforward sampler written the way LLaDA's reference generate.py computes it, for parity tests.

It does everything the reference does: logits for the whole sequence at every step, float64
"Gumbel" noise and a float64 softmax over the full vocabulary at every position, confidences
of -inf beyond the current block, and a Python loop over rows around topk. sample.generate must
give the same tokens at temperature 0.
"""
import torch
import torch.nn.functional as F


def reference_schedule(block_mask, steps):
    n = block_mask.sum(dim=1, keepdim=True)  # (B, 1)
    counts = torch.zeros(n.shape[0], steps, dtype=torch.long) + n // steps
    for row in range(n.shape[0]):
        counts[row, : int(n[row] % steps)] += 1
    return counts  # (B, steps)


@torch.no_grad()
def reference_generate(model, prompt, steps, gen_length, block_length, temperature=0.0, cfg_scale=0.0,
                       remasking="low_confidence", mask_id=None, attention_mask=None):
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], dim=1)
    is_prompt = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    per_block = steps // num_blocks
    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        counts = reference_schedule(x[:, start:end] == mask_id, per_block)
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
                x0_p = torch.rand(x0.shape)
            x0_p[:, end:] = -float("inf")
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, x0_p, torch.tensor(-float("inf"), dtype=x0_p.dtype))
            chosen = torch.zeros_like(x0, dtype=torch.bool)
            for row in range(B):
                _, idx = torch.topk(conf[row], k=int(counts[row, i]))
                chosen[row, idx] = True
            x[chosen] = x0[chosen]
    return x
