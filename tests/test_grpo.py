"""diffu_grpo.py: the one-step log-prob estimator, advantages and the diffu-GRPO loss."""
import math

import pytest
import torch
import torch.nn.functional as F

import diffu_grpo as dg

MASK = 300


def test_prompt_masking_rate_is_p_mask():
    prompt = torch.randint(0, 300, (200, 100))
    g = torch.Generator().manual_seed(0)
    draw = lambda: dg.mask_prompt(prompt, 0.15, MASK, torch.rand(prompt.shape, generator=g))
    rates = [(draw() == MASK).float().mean().item() for _ in range(10)]
    assert abs(sum(rates) / 10 - 0.15) < 0.005  # 200,000 draws: ~6 standard errors
    a, b = draw(), draw()
    assert not torch.equal(a, b)  # a fresh pattern each inner step
    kept = a != MASK
    assert torch.equal(a[kept], prompt[kept])


def test_log_probs_equal_a_hand_computation(tiny):
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 300, (2, 7), generator=g)
    completion = torch.randint(0, 300, (2, 5), generator=g)
    masked_prompt = dg.mask_prompt(prompt, 0.3, MASK, torch.rand(prompt.shape, generator=g))
    logp = dg.per_token_logps(tiny, masked_prompt, completion, MASK)
    x = torch.cat([masked_prompt, torch.full((2, 5), MASK)], 1)  # the answer is fully masked
    with torch.no_grad():
        full = F.log_softmax(tiny(x), -1)  # (2, 12, V)
    expected = torch.tensor([[full[b, 7 + k, completion[b, k]].item() for k in range(5)] for b in range(2)])
    torch.testing.assert_close(logp.detach(), expected, atol=1e-5, rtol=1e-5)


def test_log_probs_ignore_left_padding(tiny):
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(0, 300, (1, 6), generator=g)
    completion = torch.randint(0, 300, (1, 4), generator=g)
    padded = torch.cat([torch.randint(0, 300, (1, 3), generator=g), prompt], 1)
    am = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    a = dg.per_token_logps(tiny, prompt, completion, MASK)
    b = dg.per_token_logps(tiny, padded, completion, MASK, attention_mask=am)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_advantages_are_centred_per_group():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    assert dg.group_advantages(r, 4).tolist() == [0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    scaled = dg.group_advantages(r, 4, scale=True)
    torch.testing.assert_close(scaled[:4], torch.tensor([0.5, -0.5, 0, 0]) / (r[:4].std() + 1e-4))


def test_completion_mask_runs_through_the_first_stop_token():
    c = torch.tensor([[5, 6, 1, 7, 1], [5, 5, 5, 5, 5], [2, 1, 1, 1, 1]])
    assert dg.completion_mask(c, [1, 2]).tolist() == [[True, True, True, False, False], [True] * 5,
                                                      [True, False, False, False, False]]


def test_loss_equals_a_hand_computation():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    old = torch.tensor([[-1.5, -2.0], [-0.2, -2.0]])
    ref = torch.tensor([[-1.0, -1.0], [-1.0, -3.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    eps, beta = 0.2, 0.1
    tok, kl, clipped = dg.grpo_token_loss(logp, old, ref, adv, eps, beta)
    import math
    expected = []
    for i in range(2):
        for k in range(2):
            rho = math.exp(logp[i, k] - old[i, k])
            a = adv[i].item()
            d = (ref[i, k] - logp[i, k]).item()
            expected.append(-min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a) + beta * (math.exp(d) - d - 1))
    torch.testing.assert_close(tok.flatten(), torch.tensor(expected))
    loss = dg.reduce_loss(tok, mask, "token", mask.sum(), 2)
    torch.testing.assert_close(loss, torch.tensor((expected[0] + expected[1] + expected[2]) / 3))
    seq = dg.reduce_loss(tok, mask, "sequence", mask.sum(), 2)
    torch.testing.assert_close(seq, torch.tensor(((expected[0] + expected[1]) / 2 + expected[2]) / 2))
    # A > 0 clips rho > 1 + eps: (0,0) rho = e^0.5; A < 0 clips rho < 1 - eps: (1,0) e^-0.3, (1,1) e^-1
    assert clipped.tolist() == [[True, False], [True, True]]


def test_mu_1_beta_0_gradient_is_the_policy_gradient(tiny):
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(0, 300, (4, 6), generator=g)
    completion = torch.randint(0, 300, (4, 3), generator=g)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    mp = dg.mask_prompt(prompt, 0.15, MASK, torch.rand(prompt.shape, generator=g))

    def grads(loss_fn):
        tiny.zero_grad()
        loss_fn(dg.per_token_logps(tiny, mp, completion, MASK)).backward()
        return [p.grad.clone() for p in tiny.parameters()]

    def grpo(logp):
        tok, _, _ = dg.grpo_token_loss(logp, logp.detach(), logp.detach(), adv, 0.2, 0.0)
        return dg.reduce_loss(tok, mask, "token", mask.sum(), 4)

    plain = grads(lambda logp: -(adv[:, None] * logp * mask).sum() / mask.sum())
    for a, b in zip(grads(grpo), plain):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    tiny.zero_grad()


def test_clipping_zeroes_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[0.5, -0.5, 0.5, -0.5, 0.0]], requires_grad=True)
    old = torch.zeros(1, 5)
    for a, zero in [(1.0, [True, False, False, False, False]), (-1.0, [False, True, False, False, False])]:
        logp.grad = None
        tok, _, _ = dg.grpo_token_loss(logp, old, old, torch.tensor([a]), 0.2, 0.0)
        tok.sum().backward()
        # A > 0: rho = e^0.5 > 1.2 is clipped (no gradient), rho = e^-0.5 < 0.8 is not; A < 0 the opposite
        assert [bool(x == 0) for x in logp.grad[0]][:2] == zero[:2]
        assert logp.grad[0, 4] != 0


def test_micro_batching_does_not_change_the_loss():
    torch.manual_seed(0)
    tok = torch.rand(6, 4)
    mask = (torch.rand(6, 4) > 0.3).float()
    group_tokens = mask.sum(1).view(2, 3).sum(1).repeat_interleave(3)  # G = 3: two prompts
    for norm in ("token", "sequence", "group"):
        whole = dg.reduce_loss(tok, mask, norm, mask.sum(), 6, group_tokens, 3)
        parts = sum(dg.reduce_loss(tok[c], mask[c], norm, mask.sum(), 6, group_tokens[c], 3)
                    for c in (slice(0, 4), slice(4, 6)))  # a micro-batch boundary inside a group
        torch.testing.assert_close(whole, parts)


def test_group_norm_is_d1s_mean_of_per_prompt_token_means():
    """d1's code: a token mean over each micro-batch of one prompt's G answers, then the mean of those."""
    tok = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [10.0, 11.0, 12.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # G = 2: 2 prompts
    group_tokens = torch.tensor([3.0, 3.0, 4.0, 4.0])
    expected = ((1 + 2 + 4) / 3 + (7 + 8 + 9 + 10) / 4) / 2
    assert dg.reduce_loss(tok, mask, "group", mask.sum(), 4, group_tokens, 2).item() == pytest.approx(expected)
    assert dg.reduce_loss(tok, mask, "token", mask.sum(), 4).item() == pytest.approx(41 / 7)  # not the same


def test_the_exact_elbo_weights_sum_to_one_per_position():
    # every position is masked in C(L-1, l-1) of the masks of size l: sum_l C(L-1, l-1) w(l) = 1, so where
    # log p(o^k | ...) does not depend on the mask (a uniform model: log 1/V) the bound is exactly sum_k log p
    from math import comb
    for L in (1, 4, 9):
        assert abs(sum(comb(L - 1, l - 1) * dg.elbo_mask_weight(l, L) for l in range(1, L + 1)) - 1) < 1e-12


def test_exact_elbo_equals_a_hand_sum_over_masks(tiny):
    g = torch.Generator().manual_seed(5)
    prompt, completion = torch.randint(0, 300, (1, 5), generator=g), torch.randint(0, 300, (1, 2), generator=g)
    def logp(masked):  # log p(o^k | q, o with `masked` replaced), every k
        x = torch.cat([prompt, completion.masked_fill(torch.tensor([masked]), MASK)], 1)
        with torch.no_grad():
            return F.log_softmax(tiny(x), -1)[0, 5:].gather(1, completion[0][:, None])[:, 0]
    # L = 2: masks {0}, {1} weigh 0! 1! / 2! = 1/2, {0, 1} weighs 1! 0! / 2! = 1/2
    both = logp([True, True])
    expected = 0.5 * logp([True, False])[0] + 0.5 * logp([False, True])[1] + 0.5 * both.sum()
    torch.testing.assert_close(dg.exact_elbo(tiny, prompt, completion, MASK), expected[None], atol=1e-5, rtol=1e-5)


def test_mc_elbo_is_unbiased_and_shares_its_noise(tiny):
    g = torch.Generator().manual_seed(6)
    prompt, completion = torch.randint(0, 300, (1, 5), generator=g), torch.randint(0, 300, (1, 4), generator=g)
    exact = dg.exact_elbo(tiny, prompt, completion, MASK).item()
    n = 4000  # one K = 2 estimate per row
    noise = dg.elbo_noise(dg.uniforms(g, n), 4, 2)
    assert torch.equal(noise["masked"].sum(-1), (noise["t"] * 4).round().long())  # exactly l = t L masked (Eq. 6)
    assert set((noise["t"] * 4).round().long().unique().tolist()) == {1, 2, 3, 4}
    with torch.no_grad():
        est = dg.mc_elbo_terms(tiny, prompt.expand(n, 5), completion.expand(n, 4), MASK, noise).sum(1)
    assert abs(est.mean().item() - exact) < 4 * est.std().item() / n ** 0.5  # unbiased
    assert est.std().item() > 0.05  # and random: the test above could not pass by accident
    # hand computation of one copy: (1/t) sum over masked positions of log p at those positions
    one = {k: v[:1, :1] for k, v in noise.items()}
    with torch.no_grad():
        lp = dg.answer_logps(tiny, prompt, completion, one["masked"][:, 0], MASK)
        terms = dg.mc_elbo_terms(tiny, prompt, completion, MASK, one)
    torch.testing.assert_close(terms, lp * one["masked"][:, 0] / one["t"][0, 0])


def _logp(model, prompt, completion, masked):
    """log p(o^k | q, o with `masked` (1, L) replaced by [MASK]) at every k, by hand. (L,)"""
    x = torch.cat([prompt, completion.masked_fill(masked, MASK)], 1)
    with torch.no_grad():
        return F.log_softmax(model(x), -1)[0, prompt.shape[1]:].gather(1, completion[0][:, None])[:, 0]


def test_coupled_estimate_equals_a_hand_computation(tiny):
    g = torch.Generator().manual_seed(7)
    prompt, completion = torch.randint(0, 300, (1, 5), generator=g), torch.randint(0, 300, (1, 6), generator=g)
    noise = dg.coupled_noise(dg.uniforms(g, 1), 6)
    t, m = noise["t"].item(), noise["masked"]
    assert 0.2 <= t <= 0.8 and 0 < m.sum() < 6  # (this seed masks some of the answer in each half of the pair)
    full, first, second = (_logp(tiny, prompt, completion, x) for x in (torch.ones_like(m), m, ~m))
    pair = torch.where(m[0], first / t, second / (1 - t))  # every token from the one pass that masks it
    with torch.no_grad():
        terms = dg.coupled_terms(tiny, prompt, completion, MASK, noise)
    torch.testing.assert_close(terms[0], 0.5 * (full + pair), atol=1e-5, rtol=1e-5)


def test_spg_block_masks_keep_earlier_blocks_clean_and_later_ones_masked():
    g = torch.Generator().manual_seed(8)
    answer = torch.arange(16)[None, :] < torch.tensor([[10], [16], [3]])  # |o| = 10, 16, 3
    masked = dg.spg_noise(dg.uniforms(g, 3), answer, 4, 200)["masked"]  # (3, 200, 16)
    for i, length in enumerate((10, 16, 3)):
        for row in masked[i]:
            first = int(row.float().argmax())  # the first masked position lies in the chosen block
            start = first // 4 * 4
            end = min(start + 4, length)
            assert not row[:start].any() and row[end:].all()  # earlier blocks clean, later masked
            assert 1 <= row[start:end].sum() <= end - start
        blocks = {int(row.float().argmax()) // 4 for row in masked[i]}
        assert blocks == set(range((length + 3) // 4))  # every block that holds the answer is drawn


def test_spg_sandwich_equals_a_hand_computation(tiny):
    g = torch.Generator().manual_seed(9)
    prompt = torch.randint(0, 300, (2, 5), generator=g)
    completion = torch.randint(0, 300, (1, 8), generator=g).expand(2, 8)
    answer = torch.arange(8)[None, :].expand(2, 8) < 6  # |o| = 6
    noise = dg.spg_noise(dg.uniforms(g, 2), answer, 4, 2)
    adv = torch.tensor([0.5, -0.5])
    with torch.no_grad():
        terms = dg.spg_terms(tiny, prompt, completion, MASK, noise, adv, answer, omega=0.5, beta=1.5)
    for i in range(2):
        lp = [_logp(tiny, prompt[i:i + 1], completion[i:i + 1], noise["masked"][i, k][None]) for k in range(2)]
        m = [noise["masked"][i, k] & answer[i] for k in range(2)]
        inv_t = [6 / m[k].sum() for k in range(2)]  # |o| / masked answer tokens
        elbo = sum(lp[k] * m[k] * inv_t[k] for k in range(2)) / 2
        inner = sum(torch.exp(1.5 * lp[k]) * m[k] * inv_t[k] for k in range(2)) / 2
        eubo = torch.where(inner > 0, inner.clamp(min=1e-30).log() / 1.5, torch.zeros(8))
        expected = elbo if adv[i] >= 0 else 0.5 * eubo + 0.5 * elbo
        torch.testing.assert_close(terms[i], expected, atol=1e-4, rtol=1e-4)


def test_wd1_weights_push_the_better_answers_up_and_the_worse_down():
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])  # two groups of G = 4; the second has equal rewards
    seq = torch.tensor([-2.0, -3.0, -1.0, -4.0, -1.0, -2.0, -3.0, -4.0])
    loss = dg.wd1_loss(seq, adv, 4)
    e = torch.exp(torch.tensor([1.0, -1.0, 0.0, 0.0]))  # exp(psi A), psi = 1
    w = e / e.sum() - (1 / e) / (1 / e).sum()  # softmax(A) - softmax(-A), by hand
    torch.testing.assert_close(loss[:4], -w * seq[:4])
    assert torch.all(loss[4:] == 0)  # a group without reward variance gives no gradient
    assert w[0] > 0 > w[1]  # descending the loss raises log p of the best answer and lowers the worst's


def test_sequence_level_ratio_is_one_per_answer_and_clipped_as_a_whole():
    length = torch.tensor([4.0, 4.0, 2.0])
    adv = torch.tensor([1.0, 1.0, -1.0])
    old = torch.tensor([-8.0, -8.0, -3.0])
    seq = old + torch.tensor([0.0, 4 * math.log(1.5), 2 * math.log(0.5)])  # ratios 1, 1.5, 0.5
    ref = old - 2.0
    loss, kl, clipped = dg.grpo_sequence_loss(seq, old, ref, length, adv, 0.2, 0.1)
    torch.testing.assert_close(kl, 0.5 * (seq - ref) ** 2 / length)  # ESPO's k2
    torch.testing.assert_close(loss, torch.tensor([-1.0, -1.2, 0.8]) + 0.1 * kl)  # min(rho A, clip(rho) A)
    assert clipped.tolist() == [False, True, True]


def sampled_path(model, prompt, temperature=1.0, seed=0, **settings):
    """An answer sampled with LLaDA's sampler, the recorded path, and the probability the sampler gave each
    token as it committed it ({(row, answer position): p}, from its confidence scores)."""
    import sample
    seen, windows = {}, []
    real_window, real_commit = sample.exact_window, sample.commit

    def window(x, end, mask_id):
        windows.append(real_window(x, end, mask_id))
        return windows[-1]

    def commit(xw, x0, score, k, mask_id):
        was = xw == mask_id
        real_commit(xw, x0, score, k, mask_id)
        for r, j in ((was & (xw != mask_id)).nonzero()).tolist():
            seen[(r, windows[-1].start + j - prompt.shape[1])] = score[r, j].item()
    path = sample.PathRecorder(prompt.shape[1], MASK)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sample, "exact_window", window)
        m.setattr(sample, "commit", commit)
        out = sample.generate(model, prompt, mask_id=MASK, temperature=temperature, on_step=path,
                              generator=torch.Generator().manual_seed(seed), **settings)
    return out[:, prompt.shape[1]:], path.order, seen


def test_replaying_the_recorded_path_gives_the_probabilities_the_sampler_saw(tiny):
    prompt = torch.randint(0, 300, (3, 6), generator=torch.Generator().manual_seed(5))
    completion, order, seen = sampled_path(tiny, prompt, gen_length=8, steps=8, block_length=4)
    assert (order >= 0).all() and sorted(order[0].tolist()) == list(range(8))  # one commit per step here
    terms = dg.trajectory_terms(tiny, prompt, completion, order, MASK)  # (3, 8), one pass per step
    assert len(seen) == 24
    for (r, k), p in seen.items():
        assert math.exp(terms[r, k].item()) == pytest.approx(p, rel=1e-5)


def test_merged_steps_condition_each_group_on_the_state_before_it(tiny):
    prompt = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(6))
    completion, order, _ = sampled_path(tiny, prompt, gen_length=8, steps=8, block_length=8)
    one_group = dg.trajectory_terms(tiny, prompt, completion, order, MASK, merge_steps=8)
    torch.testing.assert_close(one_group, dg.per_token_logps(tiny, prompt, completion, MASK))  # all masked: d1
    pairs = dg.trajectory_terms(tiny, prompt, completion, order, MASK, merge_steps=2)
    for b in range(2):  # by hand: the tokens of steps 2g, 2g+1 see the answer as it was before step 2g
        for k in range(8):
            before = order[b:b + 1] >= 2 * (order[b, k] // 2)
            expected = _logp(tiny, prompt[b:b + 1], completion[b:b + 1], before)[k]
            assert pairs[b, k].item() == pytest.approx(expected.item(), abs=1e-5)


def test_ar_order_rollouts_make_the_trajectory_the_exact_sequence_likelihood(tiny):
    """One token per step, left to right: the path's likelihood is the chain rule's, prod_k p(o^k | q, o^<k)."""
    cfg = dg.GRPOConfig(gen_length=6, ar_order=True)
    prompt = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(7))
    completion, order, _ = sampled_path(tiny, prompt, **dg.rollout_settings(cfg))
    assert order.tolist() == [list(range(6))] * 2
    seq = dg.trajectory_terms(tiny, prompt, completion, order, MASK).sum(1)
    for b in range(2):
        by_hand = sum(_logp(tiny, prompt[b:b + 1], completion[b:b + 1], torch.arange(6)[None] >= k)[k] for k in range(6))
        assert seq[b].item() == pytest.approx(by_hand.item(), abs=1e-4)
    assert dg.ESTIMATORS["trajectory"].passes(cfg) == 6
    assert dg.ESTIMATORS["trajectory"].passes(dg.GRPOConfig(diffusion_steps=16, merge_steps=4)) == 4
