"""LoRA adapters and gradient checkpointing (the 8B training path), on the tiny-llada fixture."""
import torch

import model


def ids_for(seed=0):
    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(seed))


def perturb(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    for layer in model.lora_layers(m):
        layer.lora_B.data = 0.05 * torch.randn(layer.lora_B.shape, generator=g)


def test_lora_at_init_leaves_logits_unchanged(tiny_path):
    base = model.load(tiny_path)
    with torch.no_grad():
        before = base(ids_for())
        after = model.apply_lora(model.load(tiny_path), r=4, alpha=8)(ids_for())
    assert torch.equal(before, after)


def test_adapters_off_equals_the_base_and_merge_equals_unmerged(tiny_path):
    base = model.load(tiny_path)
    m = model.apply_lora(model.load(tiny_path), r=4, alpha=8)
    perturb(m)
    x = ids_for()
    with torch.no_grad():
        adapted = m(x)
        with model.lora_disabled(m):
            off = m(x)
        plain = base(x)
    assert torch.equal(off, plain)
    assert (adapted - plain).abs().max() > 1e-3  # the adapters do change the model
    with torch.no_grad():
        merged = model.merge_lora(m)(x)
    assert not model.lora_layers(m)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)


def test_lora_adapts_every_projection_but_the_output_head_in_float32(tiny_path):
    m = model.apply_lora(model.load(tiny_path), r=4, alpha=8)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert len(names) == 2 * 7 * 2  # A and B for 7 projections in each of 2 blocks
    assert all(".lora_A" in n or ".lora_B" in n for n in names)
    assert all(p.dtype == torch.float32 for n, p in m.named_parameters() if p.requires_grad)
    assert not isinstance(m.transformer.ff_out, model.LoRALinear)  # the output head is not adapted


def test_only_lora_parameters_receive_gradients(tiny_path):
    m = model.apply_lora(model.load(tiny_path), r=4, alpha=8)
    perturb(m)
    m(ids_for()).logsumexp(-1).mean().backward()
    for n, p in m.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n
    assert all(layer.lora_A.grad.abs().sum() > 0 for layer in model.lora_layers(m))


def test_saving_a_lora_model_writes_the_merged_plain_checkpoint(tiny_path, tmp_path):
    m = model.apply_lora(model.load(tiny_path), r=4, alpha=8)
    perturb(m)
    model.save(m, tmp_path / "merged")
    back = model.load(tmp_path / "merged")
    assert not model.lora_layers(back)
    x = ids_for(3)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x), atol=1e-4, rtol=1e-4)  # float32 rounding of W + BA


def test_gradient_checkpointing_gives_the_same_gradients(tiny_path):
    def grads(ckpt):
        m = model.apply_lora(model.load(tiny_path), r=4, alpha=8)
        perturb(m)
        m.gradient_checkpointing = ckpt
        m.train()
        m(ids_for(5), logits_at=slice(8, 16)).logsumexp(-1).mean().backward()
        return {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], atol=1e-6, rtol=1e-5)
