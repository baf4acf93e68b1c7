"""sample.py: parity with LLaDA's reference sampler, and the invariants of the reverse process. Each
holds for generate (LLaDA's algorithm) and for fast_generate with Fast-dLLM's options off."""
import pytest
import torch

import sample
from reference_sampler import baseline_generate as reference_generate

MASK = 300  # tiny-llada's mask id


DECODERS = pytest.mark.parametrize("decode", [sample.generate, sample.fast_generate], ids=["generate", "fast"])


def prompt_ids(B, P, seed=0):
    return torch.randint(0, MASK, (B, P), generator=torch.Generator().manual_seed(seed))


def test_transfer_schedule_is_even_with_the_remainder_first():
    assert sample.transfer_schedule(32, 4) == [8, 8, 8, 8]
    assert sample.transfer_schedule(32, 12) == [3] * 8 + [2] * 4
    assert sample.transfer_schedule(8, 5) == [2, 2, 2, 1, 1]
    assert sample.transfer_schedule(3, 5) == [1, 1, 1, 0, 0]
    assert all(sum(sample.transfer_schedule(n, s)) == n for n in range(1, 40) for s in range(1, 40))


SETTINGS = [  # gen_length, steps, block_length, cfg_scale
    (16, 16, 16, 0.0),   # one block, one token per step
    (24, 12, 8, 0.0),    # three blocks, 2 tokens per step
    (32, 20, 8, 0.0),    # 5 steps per block of 8: 2, 2, 2, 1, 1
    (24, 9, 24, 0.0),    # 24 tokens over 9 steps: 3 x 6, 2 x 3
    (16, 8, 4, 1.5),     # classifier-free guidance
    (12, 12, 12, 0.5),
]


@DECODERS
@pytest.mark.parametrize("gen_length,steps,block_length,cfg_scale", SETTINGS)
def test_greedy_tokens_equal_the_reference_sampler(tiny, decode, gen_length, steps, block_length, cfg_scale):
    prompt = prompt_ids(3, 7, seed=gen_length + steps)
    kw = dict(steps=steps, gen_length=gen_length, block_length=block_length, cfg_scale=cfg_scale, mask_id=MASK)
    ours = decode(tiny, prompt, **kw)
    assert torch.equal(ours, reference_generate(tiny, prompt, **kw))


@DECODERS
def test_masks_inside_the_prompt_are_filled_as_the_reference_does(tiny, decode):
    prompt = prompt_ids(2, 9, seed=4)
    prompt[:, [2, 5]] = MASK
    kw = dict(steps=8, gen_length=16, block_length=8, cfg_scale=1.0, mask_id=MASK)
    assert torch.equal(decode(tiny, prompt, **kw), reference_generate(tiny, prompt, **kw))


@DECODERS
def test_padded_batch_equals_the_reference_with_attention_mask(tiny, decode):
    rows = [prompt_ids(1, n, seed=n)[0].tolist() for n in (4, 9, 6)]
    ids, mask = sample.left_pad(rows, pad_id=301)
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=MASK, attention_mask=mask)
    assert torch.equal(decode(tiny, ids, **kw), reference_generate(tiny, ids, **kw))


@DECODERS
def test_padded_batch_equals_each_row_alone(tiny, decode):
    rows = [prompt_ids(1, n, seed=10 + n)[0].tolist() for n in (3, 11, 7, 5)]
    ids, mask = sample.left_pad(rows, pad_id=301)
    kw = dict(steps=12, gen_length=24, block_length=8, mask_id=MASK)
    batch = decode(tiny, ids, attention_mask=mask, **kw)
    P = ids.shape[1]
    for i, r in enumerate(rows):
        alone = decode(tiny, torch.tensor([r]), **kw)
        assert torch.equal(batch[i, P:], alone[0, len(r):])


class NeverMask(torch.nn.Module):
    """tiny-llada with the [MASK] logit at -inf. A random model can predict [MASK] itself, which
    LLaDA's sampler then commits (the position stays masked); a trained model never does."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, *args, **kw):
        logits = self.inner(*args, **kw)
        logits[..., MASK] = -float("inf")
        return logits


def trace(m, prompt, decode=sample.generate, **kw):
    """Run a decoder and record the canvas after every step."""
    states = []
    out = decode(m, prompt, on_step=lambda x: states.append(x.clone()), **kw)
    return out, states


@DECODERS
@pytest.mark.parametrize("remasking,temperature", [("low_confidence", 0.0), ("low_confidence", 0.8), ("random", 0.0)])
def test_each_step_commits_the_scheduled_count_block_by_block_and_never_remasks(tiny, decode, remasking, temperature):
    P, gen_length, block_length, steps = 5, 24, 8, 15
    prompt = prompt_ids(2, P, seed=1)
    out, states = trace(NeverMask(tiny), prompt, gen_length=gen_length, steps=steps, block_length=block_length,
                        remasking=remasking, temperature=temperature, mask_id=MASK,
                        generator=torch.Generator().manual_seed(0), decode=decode)
    schedule = sample.transfer_schedule(block_length, steps // (gen_length // block_length))
    assert len(states) == steps
    prev = torch.cat([prompt, torch.full((2, gen_length), MASK)], 1)
    for i, x in enumerate(states):
        assert torch.equal(x[:, :P], prompt)  # the prompt never changes
        newly = (prev == MASK) & (x != MASK)
        assert torch.all(newly.sum(1) == schedule[i % len(schedule)])  # exactly the scheduled count
        assert torch.equal(x[prev != MASK], prev[prev != MASK])  # committed tokens are never remasked
        answer = x[:, P:].view(2, -1, block_length)  # (B, blocks, L)
        started = (answer != MASK).any(-1)  # (B, blocks)
        done = (answer != MASK).all(-1)
        for b in range(1, answer.shape[1]):  # block b is complete before block b+1 gets a token
            assert torch.all(~started[:, b] | done[:, b - 1])
        prev = x
    assert not (out == MASK).any()  # no mask is left at the end
    assert torch.equal(out, states[-1])


@DECODERS
def test_greedy_is_deterministic_and_sampling_follows_the_generator(tiny, decode):
    prompt = prompt_ids(2, 6, seed=2)
    kw = dict(gen_length=16, steps=8, block_length=8, mask_id=MASK)
    assert torch.equal(decode(tiny, prompt, **kw), decode(tiny, prompt, **kw))
    draw = lambda seed: decode(tiny, prompt, temperature=1.0, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_gumbel_max_samples_the_tempered_softmax():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])  # (1, 1, V)
    n, temperature = 20000, 0.7
    g = torch.Generator().manual_seed(0)
    draws = sample.sample_tokens(logits.expand(1, n, 4), temperature, g)[0]
    freq = torch.bincount(draws, minlength=4).double() / n
    expected = torch.softmax(logits[0, 0].double() / temperature, -1)
    assert torch.allclose(freq, expected, atol=0.012)  # ~4 standard errors
    assert torch.equal(sample.sample_tokens(logits, 0.0), torch.tensor([[0]]))


def test_confidence_is_the_untempered_probability_of_the_candidate():
    logits = torch.randn(2, 3, 7)
    x0 = torch.randint(0, 7, (2, 3))
    conf = sample.confidence(logits, x0, "low_confidence")
    assert conf.dtype == torch.float64
    torch.testing.assert_close(conf, torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0])


def test_guided_logits_are_u_plus_scale_plus_one_times_c_minus_u(tiny):
    x = torch.cat([prompt_ids(1, 5), torch.full((1, 4), MASK)], 1)
    prompt_index = x != MASK
    got = sample.predict(tiny, x, None, slice(5, 9), 2.0, prompt_index, MASK)
    with torch.no_grad():
        c = tiny(x)[:, 5:9]
        u = tiny(torch.full_like(x, MASK))[:, 5:9]
    torch.testing.assert_close(got, u + 3.0 * (c - u), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sample.predict(tiny, x, None, slice(5, 9), 0.0, prompt_index, MASK), c)


@pytest.mark.parametrize("kw,message", [
    (dict(gen_length=20, block_length=8, steps=8), "must divide gen_length"),
    (dict(gen_length=16, block_length=8, steps=7), "must be a multiple of the number of blocks"),
    (dict(gen_length=16, block_length=8, steps=8, remasking="top"), "unknown remasking"),
    (dict(gen_length=16, block_length=8, steps=0), "must be positive"),
    (dict(gen_length=256, block_length=256, steps=8), "exceeds the model's maximum"),
])
@DECODERS
def test_bad_settings_fail_clearly(tiny, decode, kw, message):
    with pytest.raises(ValueError, match=message):
        decode(tiny, prompt_ids(1, 4), mask_id=MASK, **kw)


def test_left_pad_puts_padding_on_the_left_and_masks_it_out():
    ids, mask = sample.left_pad([[1, 2], [3, 4, 5]], pad_id=9)
    assert ids.tolist() == [[9, 1, 2], [3, 4, 5]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_cli_prints_an_answer(capsys):
    sample.main(["--model", "toy", "--prompt", "hi", "--gen_length", "8", "--steps", "4",
                 "--block_length", "4", "--show"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("   1 | ")


def test_cli_exits_on_a_model_that_is_neither_a_preset_nor_a_folder(capsys):
    with pytest.raises(SystemExit, match="neither a preset"):
        sample.main(["--model", "missing/folder"])
