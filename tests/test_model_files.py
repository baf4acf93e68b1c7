"""model_files.write_folder: a folder written from a LLaDA checkpoint stays loadable by LLaDA's own
Hugging Face code (its config keys, auto_map, remote code and generation_config.json carried over),
and every file is written under a temporary name and replaced durably."""
import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
import model_files

REMOTE_CODE = {"configuration_llada.py": "class LLaDAConfig:  # stands in for LLaDA's remote code\n    pass\n",
               "modeling_llada.py": "class LLaDAModelLM:  # stands in for LLaDA's remote code\n    pass\n"}
AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}


@pytest.fixture
def llada_source(small_llada_folder):
    """The tiny LLaDA checkpoint with a tokenizer, LLaDA's config.json (auto_map included), a
    generation_config.json and stand-ins for the two remote-code files."""
    config = json.loads((small_llada_folder / "config.json").read_text())
    if "auto_map" not in config:
        config["auto_map"] = AUTO_MAP
        (small_llada_folder / "config.json").write_text(json.dumps(config, indent=2))
    if not (small_llada_folder / "generation_config.json").is_file():
        (small_llada_folder / "generation_config.json").write_text('{"eos_token_id": 301}\n')
    for name, text in REMOTE_CODE.items():
        (small_llada_folder / name).write_text(text)
    return small_llada_folder


def logits(net):
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return net(ids)


def test_a_folder_written_from_a_llada_checkpoint_keeps_its_config_keys_and_remote_code(llada_source, tmp_path):
    net, tok = model.load_model(str(llada_source))
    out = tmp_path / "out"
    model.save(net, out, tok)
    source = json.loads((llada_source / "config.json").read_text())
    written = json.loads((out / "config.json").read_text())
    ours = model_files.config_to_hf(asdict(net.config))
    assert set(written) == set(source) | set(ours)
    for key, value in written.items():
        assert value == (ours[key] if key in ours else source[key]), key
    assert written["auto_map"] == source["auto_map"] and written["architectures"] == ["LLaDAModelLM"]
    carried = [*REMOTE_CODE, "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    for name in carried:
        assert (out / name).read_bytes() == (llada_source / name).read_bytes(), name
    # no weight file of the source (reference.safetensors), no README, no temporary file
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "model.safetensors", *carried])
    assert torch.equal(logits(model.load(out)), logits(net))
    again = tmp_path / "again"  # a folder written from a written folder: the same config.json
    net2, tok2 = model.load_model(str(out))
    model.save(net2, again, tok2)
    assert (again / "config.json").read_bytes() == (out / "config.json").read_bytes()


def test_a_sharded_source_gives_our_single_weight_file_and_no_index(llada_source, tmp_path):
    tensors = load_file(llada_source / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, llada_source / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in halves.items() for k in keys}}
    (llada_source / "model.safetensors.index.json").write_text(json.dumps(index))
    (llada_source / "model.safetensors").unlink()
    net, tok = model.load_model(str(llada_source))
    model.save(net, tmp_path / "out", tok)
    assert [p.name for p in (tmp_path / "out").glob("*.safetensors*")] == ["model.safetensors"]
    assert torch.equal(logits(model.load(tmp_path / "out")), logits(net))


def test_writing_into_the_source_folder_keeps_its_files(llada_source):
    before = {p.name: p.read_bytes() for p in llada_source.iterdir()}
    net, tok = model.load_model(str(llada_source))
    with torch.no_grad():
        net.transformer.ln_f.weight.add_(1.0)  # as if trained
    model.save(net, llada_source, tok)
    after = {p.name: p.read_bytes() for p in llada_source.iterdir()}
    assert set(after) == set(before)
    changed = {name for name in before if after[name] != before[name]}
    assert changed <= {"config.json", "model.safetensors"} and "model.safetensors" in changed
    assert json.loads(after["config.json"])["auto_map"] == json.loads(before["config.json"])["auto_map"]
    assert torch.equal(logits(model.load(llada_source)), logits(net))


def test_a_toy_folder_holds_our_config_alone(tmp_path):
    m = model.build("toy", seed=0)
    model.save(m, tmp_path / "toy", model_files.byte_tokenizer())
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "model.safetensors"]
    text = (tmp_path / "toy" / "config.json").read_text()
    assert text == json.dumps(model_files.config_to_hf(asdict(m.config)), indent=2) + "\n"
    assert "auto_map" not in json.loads(text)


def test_every_file_is_written_under_a_temporary_name_and_replaced_durably(llada_source, tmp_path, monkeypatch):
    replaced = []

    def recording(tmp, final):
        assert tmp.name == final.name + ".tmp" and tmp.is_file()
        replaced.append(final.name)
        real(tmp, final)
    real = model_files.replace_durably
    monkeypatch.setattr(model_files, "replace_durably", recording)
    net, tok = model.load_model(str(llada_source))
    model.save(net, tmp_path / "out", tok)
    assert sorted(replaced) == sorted(p.name for p in (tmp_path / "out").iterdir())
