"""Shared test fixtures. Tests may read ../shared (fixtures and data); the product never does."""
import json
import os
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
