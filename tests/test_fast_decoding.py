"""Opt-in Fast-dLLM decoding (sample.fast_generate's threshold and cache): exact where it must be,
valid completions and fewer computed positions where it approximates."""
import pytest
import torch

import model
import sample
from test_sample import MASK, NeverMask, prompt_ids, trace


def count_positions(m):
    """Attach a counter of the positions each forward pass computes: returns the list it fills."""
    seen = []
    m.register_forward_pre_hook(lambda mod, args, kw: seen.append(args[0].numel()), with_kwargs=True)
    return seen


def test_a_partial_pass_over_an_unchanged_sequence_equals_the_full_pass(tiny):
    """With the cache filled from the same tokens, every cached key and value is exact, so the
    logits of a span computed against the cache equal those of the full forward pass."""
    x = prompt_ids(2, 20, seed=3)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, :4] = 0  # a padded row
    with torch.no_grad():
        full = tiny(x, attention_mask=mask)  # (B, T, V)
        kv = model.KVCache()
        filled = tiny(x, attention_mask=mask, cache=kv)
        assert len(kv.layers) == tiny.config.n_layers
        assert kv.layers[0][0].shape == (2, tiny.config.n_kv_heads, 20, tiny.config.d_model // tiny.config.n_heads)
        part = tiny(x[:, 8:14], attention_mask=mask, cache=kv, start=8)  # (B, 6, V)
    torch.testing.assert_close(filled, full)
    torch.testing.assert_close(part, full[:, 8:14], atol=1e-5, rtol=1e-5)


def test_a_partial_pass_writes_its_own_keys_and_values(tiny):
    x = prompt_ids(1, 12, seed=5)
    y = x.clone()
    y[:, 4:8] = MASK
    with torch.no_grad():
        kv = model.KVCache()
        tiny(x, cache=kv)
        k0 = kv.layers[0][0].clone()
        tiny(y[:, 4:8], cache=kv, start=4)
        fresh = model.KVCache()
        tiny(y, cache=fresh)
    # layer 0's keys depend on the token alone: the span's are now those of y, the rest still x's
    torch.testing.assert_close(kv.layers[0][0][:, :, 4:8], fresh.layers[0][0][:, :, 4:8])
    assert torch.equal(kv.layers[0][0][:, :, :4], k0[:, :, :4])


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_one_step_per_block_with_a_cache_is_exact(tiny, cache):
    """Each block's first step is a full pass, so with one step per block the cache changes nothing."""
    prompt = prompt_ids(3, 6, seed=7)
    kw = dict(gen_length=24, steps=3, block_length=8, mask_id=MASK)
    assert torch.equal(sample.fast_generate(tiny, prompt, cache=cache, **kw), sample.generate(tiny, prompt, **kw))


def test_a_threshold_no_candidate_reaches_commits_the_schedule(tiny):
    """threshold 1.0 is met by no candidate of a random model: exactly LLaDA's k per step."""
    prompt = prompt_ids(3, 6, seed=8)
    kw = dict(gen_length=24, steps=12, block_length=8, mask_id=MASK)
    assert torch.equal(sample.fast_generate(tiny, prompt, threshold=1.0, **kw), sample.generate(tiny, prompt, **kw))


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_threshold_decoding_gives_valid_completions_in_fewer_steps(tiny, cache):
    P, gen_length, block_length = 6, 24, 8
    prompt = prompt_ids(2, P, seed=9)
    out, states = trace(NeverMask(tiny), prompt, gen_length=gen_length, steps=gen_length, block_length=block_length,
                        mask_id=MASK, threshold=0.02, cache=cache, decode=sample.fast_generate)
    assert torch.equal(out[:, :P], prompt)  # the prompt never changes
    assert not (out == MASK).any() and out.max() < tiny.config.vocab_size  # every answer token is a real token
    assert len(states) < gen_length  # several tokens in some steps (a random model's top-1 is ~1/V likely)
    prev = torch.cat([prompt, torch.full((2, gen_length), MASK)], 1)
    for x in states:
        newly = (prev == MASK) & (x != MASK)
        open_ = (prev[:, P:].view(2, -1, block_length) == MASK).any(-1)  # (B, blocks) still masked
        b = int(open_.any(0).int().argmax())  # the current block: the first one some row has not filled
        assert torch.all(newly.sum(1)[open_[:, b]] >= 1)  # at least one token per step in an unfilled block
        assert not newly[:, P + (b + 1) * block_length:].any()  # nothing beyond the current block
        assert torch.equal(x[prev != MASK], prev[prev != MASK])  # never remasked
        prev = x


@pytest.mark.parametrize("cache,per_step", [("prefix", lambda P, L, G, b: G - b * L), ("dual", lambda P, L, G, b: L)])
def test_the_cache_computes_only_the_block_after_its_first_step(tiny, cache, per_step):
    P, L, G, steps = 6, 8, 24, 12
    m = NeverMask(tiny)
    seen = count_positions(m)
    sample.fast_generate(m, prompt_ids(1, P, seed=2), gen_length=G, steps=steps, block_length=L, mask_id=MASK,
                         cache=cache)
    per_block = steps // (G // L)
    expected = []
    for b in range(G // L):
        expected += [P + G] + [per_step(P, L, G, b)] * (per_block - 1)
    assert seen == expected


def test_bad_fast_decoding_settings_fail_clearly(tiny):
    kw = dict(gen_length=8, steps=8, block_length=8, mask_id=MASK)
    with pytest.raises(ValueError, match="unknown cache"):
        sample.fast_generate(tiny, prompt_ids(1, 4), cache="full", **kw)
    with pytest.raises(ValueError, match="threshold"):
        sample.fast_generate(tiny, prompt_ids(1, 4), threshold=1.5, **kw)
    with pytest.raises(ValueError, match="threshold"):
        sample.fast_generate(tiny, prompt_ids(1, 4), threshold=0.9, remasking="random", **kw)
    with pytest.raises(ValueError, match="classifier-free guidance"):
        sample.fast_generate(tiny, prompt_ids(1, 4), cache="dual", cfg_scale=1.0, **kw)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_rows_that_fill_their_block_early_do_not_change_the_others(tiny, cache):
    """With a threshold, rows finish a block at different steps and only unfinished rows are
    computed; each row's answer is the one it gets alone."""
    prompt = prompt_ids(4, 6, seed=11)
    kw = dict(gen_length=16, steps=16, block_length=8, mask_id=MASK, threshold=0.02, cache=cache)
    m = NeverMask(tiny)
    seen = count_positions(m)
    batch = sample.fast_generate(m, prompt, **kw)
    assert len(set(seen[1:])) > 1  # some steps computed fewer rows
    for i in range(4):
        assert torch.equal(batch[i], sample.fast_generate(NeverMask(tiny), prompt[i:i + 1], **kw)[0])
