"""Shared test fixtures. Tests may read ../shared (fixtures and data); the product never does."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
TINY = SHARED / "fixtures" / "tiny-llada"
LLADA_8B = SHARED / "fixtures" / "llada-8b-instruct"

torch.set_num_threads(2)


def need(path):
    """A path under ../shared; skipped where it is absent, but CI (CI=true) always has it."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI runs beside a copy of shared/")
        pytest.skip(f"{path} is not present")
    return path


TRAIN_TINY = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64, max_seq_len=64)


@pytest.fixture
def tiny_folder(tmp_path):
    """A freshly initialised one-layer model saved as a checkpoint folder: the training tests' start."""
    import model
    path = tmp_path / "tiny"
    model.save(model.build(model.ModelConfig(**TRAIN_TINY), seed=0), path)
    return path


def read_log(folder):
    """The records of a run's log.jsonl."""
    return [json.loads(line) for line in open(folder / "log.jsonl")]


@pytest.fixture(scope="session")
def tiny_path():
    return need(TINY)


@pytest.fixture(scope="session")
def tiny(tiny_path):
    import model
    return model.load(tiny_path)


SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|mdm_mask|>"]


@pytest.fixture
def small_llada_folder(tmp_path):
    """A checkpoint folder with a small tokenizer.json in LLaDA's format (built with `tokenizers`)
    and tokenizer_config.json naming the special tokens, plus the tiny-llada weights."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {chr(i): i - 32 for i in range(32, 127)}
    vocab["\n"], vocab["[UNK]"] = len(vocab), len(vocab) + 1
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    tok.decoder = tokenizers.decoders.Fuse()
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIALS])
    folder = tmp_path / "llada-small"
    shutil.copytree(need(TINY), folder)
    tok.save(str(folder / "tokenizer.json"))
    added = {str(i): {"content": t.content, "special": True} for i, t in tok.get_added_tokens_decoder().items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": added}))
    return folder
