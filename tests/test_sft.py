"""sft.py: LLaDA's SFT forward process and loss (Eq. 5, Alg. 2)."""
import pytest
import torch
import torch.nn.functional as F

import sft

MASK = 300


def test_forward_process_masks_only_the_answer_at_rate_t():
    B, T = 64, 2000
    ids = torch.randint(0, 300, (B, T))
    prompt_len = torch.randint(1, 50, (B,))
    noisy, masked, t = sft.forward_process(ids, prompt_len, MASK, generator=torch.Generator().manual_seed(0))
    answer = torch.arange(T)[None] >= prompt_len[:, None]
    assert not masked[~answer].any()  # the prompt is never masked
    assert torch.equal(noisy[~masked], ids[~masked]) and (noisy[masked] == MASK).all()
    rate = masked.sum(1) / answer.sum(1)
    assert (rate - t).abs().max() < 0.05  # each row is masked at its own rate t
    assert t.min() >= 1e-3 and t.max() <= 1  # t = (1 - eps) U + eps


def test_sft_loss_equals_a_hand_computation(tiny):
    ids = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    prompt_len = torch.tensor([4, 6, 5])
    noisy, masked, t = sft.forward_process(ids, prompt_len, MASK, generator=torch.Generator().manual_seed(7))
    answer_len = (12 - prompt_len).float()
    loss, unscaled, n = sft.sft_loss(tiny, ids, noisy, masked, t, answer_len)
    with torch.no_grad():
        logp = F.log_softmax(tiny(noisy), -1)  # (B, T, V), the whole sequence
    per_row = []
    for b in range(3):
        nll = [-logp[b, i, ids[b, i]] for i in range(12) if masked[b, i]]
        per_row.append(sum(nll) / t[b] / (12 - prompt_len[b]))
    torch.testing.assert_close(loss, torch.stack(per_row).mean(), atol=1e-5, rtol=1e-5)
    all_nll = torch.stack([-logp[b, i, ids[b, i]] for b in range(3) for i in range(12) if masked[b, i]])
    torch.testing.assert_close(unscaled, all_nll.mean(), atol=1e-5, rtol=1e-5)
    assert n == int(masked.sum())
    batch_loss, _, _ = sft.sft_loss(tiny, ids, noisy, masked, t, answer_len, norm="batch")
    expected = sum(per_row[b] * (12 - prompt_len[b]) for b in range(3)) / (36 - prompt_len.sum())
    torch.testing.assert_close(batch_loss, expected, atol=1e-5, rtol=1e-5)


def test_the_losses_of_a_batch_split_in_shares_add_up_to_the_batch_loss(tiny):
    """What torchrun relies on: each share's loss over the whole batch's normaliser (`whole`)."""
    ids = torch.randint(0, 300, (5, 12), generator=torch.Generator().manual_seed(2))
    prompt_len = torch.tensor([4, 6, 5, 3, 7])
    noisy, masked, t = sft.forward_process(ids, prompt_len, MASK, generator=torch.Generator().manual_seed(3))
    answer_len = (12 - prompt_len).float()
    for norm, whole in (("sequence", 5), ("batch", answer_len.sum())):
        full, _, _ = sft.sft_loss(tiny, ids, noisy, masked, t, answer_len, norm)
        parts = [sft.sft_loss(tiny, ids[r], noisy[r], masked[r], t[r], answer_len[r], norm, whole)[0]
                 for r in (slice(0, 2), slice(2, 5))]
        torch.testing.assert_close(sum(parts), full, atol=1e-6, rtol=1e-6)


class Tok:
    eos_id = 99


def test_answers_are_padded_with_end_of_text_that_counts_as_answer():
    ids, prompt_len = sft.pad_answers(Tok, [([1, 2, 3], [7, 8]), ([4], [9, 9, 9, 9, 9, 9])], gen_length=4)
    assert ids.tolist() == [[1, 2, 3, 7, 8, 99, 99], [4, 9, 9, 9, 9, 99, 99]]  # answer cut to 4, then row padding
    assert prompt_len.tolist() == [3, 1]


def test_rows_are_cut_at_the_models_maximum_length():
    pairs = [([1, 2, 3], [7, 8, 9, 9]), ([4], [5])]
    ids, prompt_len = sft.pad_answers(Tok, pairs, gen_length=4, max_len=5)
    assert ids.tolist() == [[1, 2, 3, 7, 8], [4, 5, 99, 99, 99]]  # the first answer loses its end, as d1's max_length
    assert prompt_len.tolist() == [3, 1]


def test_learning_rate_warms_up_then_stays_or_decays_linearly_to_zero():
    cfg = sft.SFTConfig(lr=1.0, warmup=10, steps=110)
    assert [sft.lr_at(s, cfg) for s in (1, 5, 10, 11, 110)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cfg = sft.SFTConfig(lr=1.0, warmup=10, steps=110, schedule="linear")
    assert [sft.lr_at(s, cfg) for s in (5, 10, 11, 60, 110)] == [0.5, 1.0, 1.0, 0.51, 0.01]  # (111 - step) / 100
    with pytest.raises(ValueError, match="--schedule must be"):
        sft.setup(sft.SFTConfig(schedule="cosine"))


@pytest.mark.parametrize("norm", ["sequence", "batch"])
def test_gradient_accumulation_gives_the_unaccumulated_gradient(norm, monkeypatch):
    """--micro_batch 3 on a batch of 8 (micro-batches of 3, 3, 2) gives the gradient of one pass over all 8."""
    import model
    import model_files
    tok = model_files.byte_tokenizer()
    pairs = [(list(range(1, 2 + i % 4)), list(range(40, 44 + i % 5))) for i in range(20)]
    grads, records = [], []
    monkeypatch.setattr(sft, "apply_gradients", lambda opt, params, clip, loss: grads.append(
        [p.grad.clone() for p in params]))
    for micro in (0, 3):
        net = model.build(model.ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64), seed=0)
        cfg = sft.SFTConfig(batch_size=8, micro_batch=micro, norm=norm, answer_length=6, device="cpu")
        opt = torch.optim.AdamW(net.parameters())
        records.append(sft.sft_step(net, opt, list(net.parameters()), tok, pairs, cfg, torch.Generator().manual_seed(0),
                                    1)[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], rel=1e-5)
    assert records[0]["unscaled"] == pytest.approx(records[1]["unscaled"], rel=1e-5)
    assert any(g.abs().sum() > 0 for g in grads[0])
