"""model.py: parity with the original LLaDA code, the 8B shape, masking, checkpoints, errors."""
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
import model_files
from conftest import LLADA_8B, need


def test_tiny_llada_logits_match_the_original_code(tiny, tiny_path):
    ref = load_file(tiny_path / "reference.safetensors")
    with torch.no_grad():
        logits = tiny(ref["input_ids"])
    assert logits.shape == ref["logits"].shape == (3, 24, 320)
    torch.testing.assert_close(logits, ref["logits"], atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(-1), ref["logits"].argmax(-1))


def test_logits_at_selects_positions(tiny, tiny_path):
    ids = load_file(tiny_path / "reference.safetensors")["input_ids"]
    with torch.no_grad():
        full = tiny(ids)
        part = tiny(ids, logits_at=slice(16, 24))
        picked = tiny(ids, logits_at=torch.tensor([0, 5, 23]))
        where = ids % 3 == 0
        flat = tiny(ids, logits_at=where)
    assert flat.shape == (int(where.sum()), 320)
    torch.testing.assert_close(flat, full[where], atol=1e-6, rtol=0)
    assert part.shape == (3, 8, 320) and picked.shape == (3, 3, 320)
    torch.testing.assert_close(part, full[:, 16:24], atol=1e-6, rtol=0)
    torch.testing.assert_close(picked, full[:, [0, 5, 23]], atol=1e-6, rtol=0)


def test_padded_keys_are_invisible(tiny):
    g = torch.Generator().manual_seed(0)
    row = torch.randint(0, 300, (1, 10), generator=g)
    pads = [torch.full((1, 6), 301), torch.randint(0, 300, (1, 6), generator=g)]
    mask = torch.tensor([[0] * 6 + [1] * 10])
    with torch.no_grad():
        alone = tiny(row)
        a, b = (tiny(torch.cat([p, row], 1), attention_mask=mask)[:, 6:] for p in pads)
    assert torch.equal(a, b)  # whatever the padding holds, it cannot be seen
    torch.testing.assert_close(a, alone, atol=1e-5, rtol=1e-5)  # RoPE is relative: the shift is invisible
    with torch.no_grad():
        unmasked = tiny(torch.cat([pads[1], row], 1))[:, 6:]
    assert (unmasked - alone).abs().max() > 1e-2  # without the mask the padding does leak in


def test_all_ones_mask_equals_no_mask(tiny, tiny_path):
    ids = load_file(tiny_path / "reference.safetensors")["input_ids"]
    with torch.no_grad():
        assert torch.equal(tiny(ids), tiny(ids, attention_mask=torch.ones_like(ids)))


def test_rmsnorm_normalises_in_float32_then_casts_then_scales():
    g = torch.Generator().manual_seed(0)
    norm = model.RMSNorm(8, 1e-5)
    norm.weight.data = torch.linspace(0.5, 2.0, 8)
    x = torch.randn(3, 8, generator=g) * 5
    xd = x.double()
    expected = (xd / torch.sqrt((xd ** 2).mean(-1, keepdim=True) + 1e-5)) * norm.weight.double()
    torch.testing.assert_close(norm(x).double(), expected, atol=1e-5, rtol=1e-5)
    xb = torch.randn(4, 8, generator=g).bfloat16()
    nb = model.RMSNorm(8, 1e-5).bfloat16()
    nb.weight.data = torch.full((8,), 3.0).bfloat16()
    f = xb.float()
    expected = (f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16() * nb.weight
    assert torch.equal(nb(xb), expected)  # rounded to bf16 before the scale, as LLaDA does


def test_llada_8b_preset_has_the_published_parameter_count():
    cfg = model.PRESETS["llada-8b"]
    with torch.device("meta"):
        m = model.Transformer(cfg)
    assert sum(p.numel() for p in m.parameters()) == 8_015_581_184
    assert (cfg.mask_id, cfg.eos_id, cfg.eot_id) == (126336, 126081, 126348)


def test_llada_8b_config_and_index_map_onto_the_preset():
    folder = need(LLADA_8B)
    cfg = model.read_config(folder)
    assert cfg == model.PRESETS["llada-8b"]  # eot id read from tokenizer_config.json, not typed in
    with torch.device("meta"):
        m = model.Transformer(cfg)
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(weight_map) == 291
    model_files.check_tensor_names([model.PREFIX + n for n, _ in m.named_parameters()], weight_map)


def test_toy_preset_is_a_few_million_parameters():
    m = model.build("toy")
    n = sum(p.numel() for p in m.parameters())
    assert 1_000_000 < n < 10_000_000
    assert torch.equal(m.transformer.wte.weight, model.build("toy").transformer.wte.weight)  # seeded


def test_a_saved_model_loads_back_with_the_same_logits_and_llada_names(tmp_path):
    m = model.build("toy", seed=3)
    model.save(m, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    back = model.load(tmp_path / "ckpt")
    assert back.config == m.config
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.equal(back(ids), m(ids))
    names = load_file(tmp_path / "ckpt" / "model.safetensors").keys()
    assert "model.transformer.blocks.0.q_proj.weight" in names  # LLaDA's names


def test_sharded_checkpoint_loads(tiny_path, tiny, tmp_path):
    tensors = load_file(tiny_path / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in halves.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(tiny_path / "config.json", tmp_path)
    sharded = model.load(tmp_path)
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert torch.equal(sharded(ids), tiny(ids))


def test_loading_in_bfloat16_gives_bfloat16_weights_and_logits(tiny_path):
    m = model.load(tiny_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    assert m(torch.randint(0, 300, (1, 8))).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- bad input

def copy_tiny(tiny_path, dst):
    shutil.copytree(tiny_path, dst)
    return dst


def test_a_missing_model_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.load(tmp_path / "nowhere")


def test_a_missing_or_corrupt_config_json_is_a_checkpoint_error(tiny_path, tmp_path):
    d = copy_tiny(tiny_path, tmp_path / "c")
    (d / "config.json").write_text("{not json")
    with pytest.raises(model_files.CheckpointError, match="config.json is not valid JSON"):
        model.load(d)
    (d / "config.json").unlink()
    with pytest.raises(model_files.CheckpointError, match="config.json is missing"):
        model.load(d)


def test_a_config_lacking_a_key_or_asking_an_unsupported_option_fails(tiny_path, tmp_path):
    d = copy_tiny(tiny_path, tmp_path / "c")
    cfg = json.loads((tiny_path / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "n_layers"}))
    with pytest.raises(model_files.CheckpointError, match="lacks n_layers"):
        model.load(d)
    (d / "config.json").write_text(json.dumps(dict(cfg, weight_tying=True)))
    with pytest.raises(model_files.CheckpointError, match="weight_tying"):
        model.load(d)


def test_missing_unexpected_or_misshaped_tensors_are_named_in_the_error(tiny_path, tmp_path):
    d = copy_tiny(tiny_path, tmp_path / "c")
    tensors = load_file(tiny_path / "model.safetensors")
    gone = "model.transformer.blocks.1.up_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != gone}, d / "model.safetensors")
    with pytest.raises(model_files.CheckpointError, match=f"missing tensors: {gone}"):
        model.load(d)
    save_file(dict(tensors, **{"model.transformer.extra.weight": torch.zeros(2)}), d / "model.safetensors")
    with pytest.raises(model_files.CheckpointError, match="unexpected tensors: model.transformer.extra.weight"):
        model.load(d)
    bad = "model.transformer.blocks.0.k_proj.weight"
    save_file(dict(tensors, **{bad: torch.zeros(64, 32)}), d / "model.safetensors")
    with pytest.raises(model_files.CheckpointError, match=rf"{bad} in model.safetensors has shape \(64, 32\), the config needs \(64, 64\)"):
        model.load(d)


def test_corrupt_or_absent_weights_and_a_missing_shard_are_checkpoint_errors(tiny_path, tmp_path):
    d = copy_tiny(tiny_path, tmp_path / "c")
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(model_files.CheckpointError, match="not a readable safetensors file"):
        model.load(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(model_files.CheckpointError, match="neither model.safetensors"):
        model.load(d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    with pytest.raises(model_files.CheckpointError, match="not in the folder: model-1.safetensors"):
        model.load(d)


def test_an_unknown_preset_or_model_path_says_what_is_known():
    with pytest.raises(ValueError, match="known presets: toy, llada-8b"):
        model.get_config("gpt-9")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        model.load_model("no/such/folder")


def test_inconsistent_config_values_fail_at_construction():
    with pytest.raises(ValueError, match="must split into n_heads"):
        model.ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(ValueError, match="mask_id 999 is outside"):
        model.ModelConfig(mask_id=999)


# ----------------------------------------------------------------------------- tokenizer

def test_byte_tokenizer_round_trips_text_and_stops_at_eos_with_the_toy_ids():
    tok = model_files.byte_tokenizer()
    cfg = model.PRESETS["toy"]
    assert (tok.mask_id, tok.eos_id, tok.eot_id) == (cfg.mask_id, cfg.eos_id, cfg.eot_id)
    ids = tok.encode("sudoku 31é")
    assert ids == list("sudoku 31é".encode())
    assert tok.decode(ids) == "sudoku 31é"
    assert tok.encode("a<|mdm_mask|>") == [97, tok.mask_id]
    assert tok.decode([104, 105, tok.mask_id, 33, tok.eos_id, 65, 66]) == "hi!"  # stops at EOS, drops specials
    assert tok.decode([104, tok.eot_id, 105]) == "h"
    assert tok.chat(" hi ") == " hi "  # the toy model has no chat template
    assert max(model_files.BYTE_SPECIALS.values()) < cfg.vocab_size


# ----------------------------------------------------------------------------- finding LLaDA-8B's weights

def fake_snapshot(cache, revision="abc123"):
    root = cache / "models--GSAI-ML--LLaDA-8B-Instruct"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    return snap


def test_llada_8b_is_found_in_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snap = fake_snapshot(tmp_path / "hub")
    assert model_files.resolve_checkpoint("llada-8b") == snap
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # HF_HUB_CACHE takes precedence
    assert model_files.hf_cache_snapshot("GSAI-ML/LLaDA-8B-Instruct") is None


def test_without_weights_or_huggingface_hub_the_error_says_what_to_do(tmp_path, monkeypatch):
    import sys
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError) as e:
        model.load_model("llada-8b")
    assert "pip install huggingface_hub" in str(e.value) and "--model path/to/LLaDA-8B-Instruct" in str(e.value)


def test_llada_8b_is_downloaded_through_huggingface_hub(tmp_path, monkeypatch):
    import sys
    import types
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    calls = []
    hub = types.ModuleType("huggingface_hub")

    def snapshot_download(repo, allow_patterns):
        calls.append((repo, allow_patterns))
        return str(tmp_path / "downloaded")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    assert model_files.resolve_checkpoint("llada-8b") == tmp_path / "downloaded"
    assert calls[0][0] == "GSAI-ML/LLaDA-8B-Instruct" and "*.safetensors" in calls[0][1]

    def offline(repo, allow_patterns):
        raise OSError("no network")
    hub.snapshot_download = offline
    with pytest.raises(FileNotFoundError, match="downloading GSAI-ML/LLaDA-8B-Instruct failed .OSError: no network"):
        model_files.resolve_checkpoint("llada-8b")


LOAD_PEAK = """
import sys
sys.path.insert(0, sys.argv[1])
import model


def vm(field):  # kB in /proc/self/status; VmHWM is the peak resident size of this process image
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":")) * 1024


model.load(sys.argv[2])  # pays torch's one-off start-up costs
before = vm("VmRSS")
m = model.load(sys.argv[3])
weights = sum(p.numel() * p.element_size() for p in m.parameters())
print(next(m.parameters()).dtype, (vm("VmHWM") - before) / weights)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_sharded_bf16_checkpoint_loads_without_an_fp32_copy(tiny_path, tmp_path):
    import subprocess
    import sys
    cfg = model.ModelConfig(d_model=1024, n_layers=6, n_heads=8, n_kv_heads=8, mlp_hidden=2816, vocab_size=8192,
                            mask_id=8000, eos_id=8001, eot_id=8002, tokenizer="llada")
    state = model.base_state(model.build(cfg, dtype=torch.bfloat16))
    names, k = sorted(state), 4
    weight_map = {}
    for s in range(k):
        shard = f"model-{s + 1:05d}-of-{k:05d}.safetensors"
        save_file({n: state[n] for n in names[s::k]}, tmp_path / shard)
        weight_map.update({n: shard for n in names[s::k]})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(model_files.config_to_hf(asdict(cfg))))
    root = str(Path(model.__file__).parent)
    out = subprocess.run([sys.executable, "-c", LOAD_PEAK, root, str(tiny_path), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "torch.bfloat16"  # the stored dtype, no fp32 detour
    assert float(out[1]) <= 1.2  # peak host memory over the weights' size (bytes read straight into them)
