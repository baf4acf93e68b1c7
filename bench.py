"""Benchmark: our sampler against a straightforward one written as the reference code computes.

Issue 7's first slice. Prints, for the toy preset and a mid-size model (d_model 512, 8 layers) on
whatever device is present: the device's measured matmul peak (a large matmul in the same run), and
the sampler's tokens/s for sample.generate and for the baseline below, median of --repeats runs,
with their ratio, after checking that both give the same tokens at temperature 0.

    python bench.py                 # both presets, 5 repeats each
    python bench.py --presets toy --repeats 3

The baseline does what LLaDA's generate.py does: logits for the whole sequence at every step,
float64 "Gumbel" noise and a float64 softmax over the full vocabulary at every position,
confidences of -inf beyond the current block, and a Python loop over rows around topk.
tests/reference.py uses it for the parity tests of sample.generate.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import model as model_lib
import sample

MID = model_lib.ModelConfig(d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, mlp_hidden=1408)


def baseline_schedule(block_mask, steps):
    n = block_mask.sum(dim=1, keepdim=True)  # (B, 1)
    counts = torch.zeros(n.shape[0], steps, dtype=torch.long) + n // steps
    for row in range(n.shape[0]):
        counts[row, : int(n[row] % steps)] += 1
    return counts  # (B, steps)


@torch.no_grad()
def baseline_generate(model, prompt, steps, gen_length, block_length, temperature=0.0, cfg_scale=0.0,
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


def matmul_peak(device, n=2048, repeats=5):
    """FLOP/s of a large float32 matmul on this device (median of repeats)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times[1:])


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats, device):
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_sampler(cfg, device, repeats, batch=16, prompt=32, gen_length=64, block_length=16, steps=64):
    """tokens/s of sample.generate and of the baseline at temperature 0, and whether they agree."""
    net = model_lib.build(cfg, device=device).eval()
    ids = torch.randint(0, 256, (batch, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    kw = dict(steps=steps, gen_length=gen_length, block_length=block_length, mask_id=cfg.mask_id)
    ours_s, ours = timed(lambda: sample.generate(net, ids, **kw), repeats, device)
    base_s, base = timed(lambda: baseline_generate(net, ids, **kw), repeats, device)
    tokens = batch * gen_length
    return dict(ours_tok_s=tokens / ours_s, baseline_tok_s=tokens / base_s, ratio=base_s / ours_s,
                same_tokens=bool(torch.equal(ours, base)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="toy,mid", help="toy and/or mid (d_model 512, 8 layers)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is shown)")
    p.add_argument("--device", default=model_lib.default_device())
    args = p.parse_args(argv)
    peak = matmul_peak(args.device)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32, 2048^3)")
    results = {}
    for name in args.presets.split(","):
        cfg = model_lib.PRESETS["toy"] if name == "toy" else MID
        r = results[name] = bench_sampler(cfg, args.device, args.repeats)
        print(f"{name:4s} sampler: ours {r['ours_tok_s']:8.1f} tok/s | baseline {r['baseline_tok_s']:8.1f} tok/s | "
              f"ours/baseline {r['ratio']:.2f}x | same tokens at temperature 0: {r['same_tokens']}")
    return results


if __name__ == "__main__":
    main()
