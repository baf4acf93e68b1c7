"""A model's files on disk: the folder in LLaDA's Hugging Face layout, its tokenizer, its download.

Plumbing that a reader of the papers never needs: model.py builds the network and calls in here
for the file handling. A checkpoint folder holds
    config.json                          LLaDA's config (its key names, mapped onto model.ModelConfig)
    model.safetensors                    the weights, tensor names prefixed with "model."; or shards
    model.safetensors.index.json           listed by this index (LLaDA-8B-Instruct: 6 shards)
    tokenizer.json, tokenizer_config.json  LLaDA's tokenizer (the `tokenizers` package reads it)
    configuration_llada.py, modeling_llada.py   LLaDA's remote code (config.json's auto_map names it)
    generation_config.json               generation defaults (for Hugging Face's loaders; unread here)
Our own checkpoints use the same layout; the toy model's config.json says "tokenizer": "bytes"
(a byte-level tiktoken encoding built locally) and the folder holds config.json and
model.safetensors alone. A folder written from a LLaDA checkpoint keeps that checkpoint's
config.json keys (auto_map, architectures, ...; ours overwrite the ones our config sets) and
carries over its remote code, generation_config.json and tokenizer files, never its weights, so
that LLaDA's own Hugging Face code loads it: AutoModel.from_pretrained(folder,
trust_remote_code=True). `--model llada-8b` finds GSAI-ML/LLaDA-8B-Instruct in the Hugging Face
cache or downloads it (huggingface_hub, optional). Nothing here imports model.py: configs travel
as plain dicts of ModelConfig's fields.
"""
import json
import os
import shutil
from pathlib import Path

import torch

PREFIX = "model."  # LLaDA's tensor names are "model." + ours
# config.json keys (LLaDA's names) <-> ModelConfig fields
HF_KEYS = dict(d_model="d_model", n_layers="n_layers", n_heads="n_heads", n_kv_heads="n_kv_heads",
               mlp_hidden="mlp_hidden_size", vocab_size="embedding_size", max_seq_len="max_sequence_length",
               rope_theta="rope_theta", rms_norm_eps="rms_norm_eps", mask_id="mask_token_id",
               eos_id="eos_token_id")
# LLaDA config options whose other values this implementation does not build
SUPPORTED = dict(block_type="llama", activation_type="silu", layer_norm_type="rms", rope=True,
                 alibi=False, include_bias=False, include_qkv_bias=False, weight_tying=False,
                 scale_logits=False, input_emb_norm=False, attention_layer_norm=False)
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


class CheckpointError(ValueError):
    pass


# ----------------------------------------------------------------------------- durable writes

def fsync_path(path):
    """Flush a file, or a folder's files and the folder itself, to disk."""
    path = Path(path)
    for p in ([path] if path.is_file() else [*sorted(q for q in path.rglob("*") if q.is_file()), path]):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_durably(tmp, final):
    """Make a written file or folder visible under its final name only once its bytes are on disk:
    fsync it, rename it over `final` (atomic), fsync the parent folder (the rename itself). A power
    loss then leaves the old version or the new one, never a visible but empty one."""
    fsync_path(tmp)
    os.replace(tmp, final)
    _fsync_dir(Path(final).parent)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- config.json

def config_from_hf(d, folder=None):
    """ModelConfig's fields (a dict) from a LLaDA config.json dict (and the folder's tokenizer_config.json)."""
    for key, want in SUPPORTED.items():
        if key in d and d[key] != want:
            raise CheckpointError(f"config.json sets {key} = {d[key]!r}; this implementation supports only {want!r}")
    d = dict(d)
    d.setdefault("embedding_size", d.get("vocab_size"))
    d.setdefault("n_kv_heads", d.get("n_heads"))
    missing = [hf for hf in HF_KEYS.values() if d.get(hf) is None]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}")
    kw = {ours: d[hf] for ours, hf in HF_KEYS.items()}
    kw["eot_id"] = d.get("eot_token_id", special_tokens(folder).get("<|eot_id|>"))
    kw["tokenizer"] = d.get("tokenizer", "llada")
    return kw


def config_to_hf(fields):
    """A LLaDA config.json dict from ModelConfig's fields (a dict)."""
    d = {hf: fields[ours] for ours, hf in HF_KEYS.items()}
    d.update(SUPPORTED, model_type="llada", vocab_size=fields["vocab_size"], pad_token_id=fields["eos_id"],
             eot_token_id=fields["eot_id"], tokenizer=fields["tokenizer"])
    return d


def merged_config(fields, source=None):
    """The config.json dict to write for ModelConfig's fields: config_to_hf's keys over those of the
    source checkpoint's config.json (so auto_map, architectures, torch_dtype ... carry over), if any."""
    kept = json.loads((Path(source) / "config.json").read_text()) if source else {}
    return {**kept, **config_to_hf(fields)}


def read_config(folder):
    """ModelConfig's fields (a dict) from a checkpoint folder's config.json; clear errors otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    path = folder / "config.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return config_from_hf(d, folder)


# ----------------------------------------------------------------------------- safetensors weights

def read_header(path):
    """The JSON header of a safetensors file ({name: {dtype, shape, data_offsets}}) and where its data starts."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        for name, info in header.items():
            info["dtype"], info["shape"], info["data_offsets"]  # every entry has all three
        return header, 8 + n
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def weight_files(folder):
    """{tensor name: file path} from model.safetensors.index.json, or every name of model.safetensors."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (weight_map): {e}") from None
        files = {name: folder / file for name, file in weight_map.items()}
        absent = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if absent:
            raise CheckpointError(f"{index} lists shards that are not in the folder: {', '.join(absent)}")
        return files
    single = folder / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{folder} has neither model.safetensors nor model.safetensors.index.json")
    return {name: single for name in read_header(single)[0]}


def names_list(names, most=8):
    names = sorted(names)
    return ", ".join(names[:most]) + (f" ... ({len(names)} in all)" if len(names) > most else "")


def check_tensor_names(expected, stored):
    """Fail before reading any weight if the stored tensor names are not the expected ones."""
    missing, unexpected = set(expected) - set(stored), set(stored) - set(expected)
    if missing or unexpected:
        parts = [f"missing tensors: {names_list(missing)}"] if missing else []
        parts += [f"unexpected tensors: {names_list(unexpected)}"] if unexpected else []
        raise CheckpointError("checkpoint does not match the config: " + "; ".join(parts))


def read_headers(folder, shapes):
    """({file: (header, data start)}, the stored dtype) of a folder's weights, after checking every
    stored tensor's name, shape and dtype against shapes ({LLaDA tensor name: shape}); no weight is
    read yet. The stored dtype is that of the first tensor named (the dtype a model loads in by default)."""
    files = weight_files(folder)
    check_tensor_names(shapes, files)
    headers = {file: read_header(file) for file in set(files.values())}
    for file, (header, _) in headers.items():
        for name, info in header.items():
            if name not in shapes:
                raise CheckpointError(f"{file.name} holds tensor {name}, which the config has no place for")
            if tuple(info["shape"]) != tuple(shapes[name]):
                raise CheckpointError(f"tensor {name} in {file.name} has shape {tuple(info['shape'])}, "
                                      f"the config needs {tuple(shapes[name])}")
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"tensor {name} in {file.name} has dtype {info['dtype']}, "
                                      f"which is not a float type")
    name, file = next(iter(files.items()))
    return headers, SAFETENSORS_DTYPES[headers[file][0][name]["dtype"]]


@torch.no_grad()
def fill_from_file(path, header, data_start, params):
    """Read each tensor of one safetensors file into its parameter (params: {LLaDA name: tensor}):
    directly into the parameter's memory when it is on the CPU in the stored dtype, else through one
    temporary tensor. Peak host memory is the weights themselves (plus one tensor for a GPU)."""
    with open(path, "rb") as fh:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            p = params[name]
            begin, end = info["data_offsets"]
            stored = SAFETENSORS_DTYPES[info["dtype"]]
            fh.seek(data_start + begin)
            direct = p.device.type == "cpu" and p.dtype == stored and p.is_contiguous()
            buf = p.view(-1).view(torch.uint8).numpy() if direct else bytearray(end - begin)
            if fh.readinto(buf) != end - begin:
                raise CheckpointError(f"{path} is truncated: tensor {name} is incomplete")
            if not direct:
                p.copy_(torch.frombuffer(buf, dtype=stored).view(p.shape))


# files of a LLaDA checkpoint that a folder written from it carries over (config.json is merged,
# the weights are ours): the tokenizer, LLaDA's remote code, the generation defaults
CARRIED = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "*.py"]


def carried_files(source):
    """The files of the checkpoint folder `source` that a folder written from it carries over."""
    if source is None:
        return []
    return sorted({f for pattern in CARRIED for f in Path(source).glob(pattern) if f.is_file()})


def write_folder(path, tensors, config, tokenizer=None):
    """Write a whole checkpoint into the folder `path`: model.safetensors ({LLaDA name: tensor}),
    config.json (from ModelConfig's fields, merged into the source checkpoint's; see merged_config)
    and the files carried over from the folder the tokenizer was read from (tokenizer.source; none
    for the byte tokenizer). Each file is written under a temporary name and replaced durably."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    source = getattr(tokenizer, "source", None)
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    replace_durably(tmp, path / "model.safetensors")
    tmp = path / "config.json.tmp"
    tmp.write_text(json.dumps(merged_config(config, source), indent=2) + "\n")
    replace_durably(tmp, path / "config.json")
    for f in carried_files(source):
        if f.resolve() != (path / f.name).resolve():  # writing into the source folder: already there
            tmp = path / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            replace_durably(tmp, path / f.name)


# ----------------------------------------------------------------------------- published weights

HF_REPOS = {"llada-8b": "GSAI-ML/LLaDA-8B-Instruct"}  # presets with published weights
WEIGHT_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", *CARRIED]


def hf_cache_snapshot(repo):
    """The folder of `repo` in the local Hugging Face cache (HF_HUB_CACHE, HF_HOME), or None."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = os.environ.get("HF_HUB_CACHE") or home / "hub"
    root = Path(hub) / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / "main"
    candidates = [root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    candidates += sorted((root / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if (root / "snapshots").is_dir() else []
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def resolve_checkpoint(name):
    """The checkpoint folder for a preset with published weights: the Hugging Face cache, else a
    download through huggingface_hub (optional dependency), else an error that says what to do."""
    repo = HF_REPOS[name]
    cached = hf_cache_snapshot(repo)
    if cached:
        return cached
    how = (f"download {repo} (about 16 GB), e.g. `huggingface-cli download {repo} --local-dir LLaDA-8B-Instruct`, "
           f"and pass --model path/to/LLaDA-8B-Instruct")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"--model {name} needs the weights of {repo}: they are not in the Hugging Face cache "
                                f"and huggingface_hub is not installed. Either `pip install huggingface_hub` and run "
                                f"again (it downloads them), or {how}") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=WEIGHT_FILES))
    except Exception as e:  # network, authentication, disk: say which, and the way around it
        raise FileNotFoundError(f"--model {name}: downloading {repo} failed ({type(e).__name__}: {e}). "
                                f"Alternatively {how}") from None


# ----------------------------------------------------------------------------- tokenizers

BYTE_SPECIALS = {"<|endoftext|>": 256, "<|mdm_mask|>": 257, "<|eot_id|>": 258, "<|startoftext|>": 259}


class Tokenizer:
    """encode / decode with named special tokens; decode stops at end-of-text or end-of-turn."""

    def __init__(self, encode, decode_ids, special, chat_template=None, source=None):
        self._encode, self._decode_ids, self.special = encode, decode_ids, special
        self.chat_template = chat_template
        self.source = source  # the folder it was read from; a checkpoint written with it carries that folder's files
        self.mask_id = special["<|mdm_mask|>"]
        self.eos_id = special["<|endoftext|>"]
        self.eot_id = special.get("<|eot_id|>")

    def encode(self, text):
        return self._encode(text)

    def chat(self, content):
        """A user turn rendered with the model's chat template (the toy model has none)."""
        return self.chat_template.format(content=content.strip()) if self.chat_template else content

    def decode(self, ids):
        ids = list(ids)
        stops = [i for i, t in enumerate(ids) if t in (self.eos_id, self.eot_id)]
        ids = ids[:stops[0]] if stops else ids
        specials = set(self.special.values())
        return self._decode_ids([t for t in ids if t not in specials])


def byte_tokenizer():
    """The toy tokenizer: a tiktoken Encoding built locally, one token per byte plus specials."""
    import tiktoken
    enc = tiktoken.Encoding(name="d1-toy-bytes", pat_str=r"[\s\S]",
                            mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens=BYTE_SPECIALS)
    return Tokenizer(lambda s: enc.encode(s, allowed_special="all"),
                     lambda ids: enc.decode(ids, errors="replace"), dict(BYTE_SPECIALS))


# LLaDA-8B-Instruct's chat template (tokenizer_config.json) for one user turn, generation prompt added
LLADA_CHAT = ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")


def special_tokens(folder):
    """{name: id} of the special tokens in a folder's tokenizer_config.json ({} without one)."""
    path = folder and Path(folder) / "tokenizer_config.json"
    if not path or not path.is_file():
        return {}
    added = json.loads(path.read_text()).get("added_tokens_decoder", {})
    return {t["content"]: int(i) for i, t in added.items() if t.get("special", True)}


def hf_tokenizer(folder):
    """LLaDA's tokenizer from tokenizer.json (the `tokenizers` library); special tokens by name from
    tokenizer_config.json (else from tokenizer.json's added tokens)."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise ImportError("LLaDA's tokenizer needs the tokenizers package: pip install tokenizers") from None
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: LLaDA checkpoints ship their tokenizer.json")
    tok = HFTokenizer.from_file(str(path))
    special = special_tokens(folder) or {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for name in ("<|mdm_mask|>", "<|endoftext|>"):
        if name not in special:
            raise ValueError(f"{folder} names no special token {name}")
    return Tokenizer(lambda s: tok.encode(s, add_special_tokens=False).ids,
                     lambda ids: tok.decode(ids, skip_special_tokens=True), special, LLADA_CHAT, source=folder)


def get_tokenizer(kind, folder=None):
    """The tokenizer a model's config names: "bytes" (toy) or "llada" (the folder's tokenizer.json)."""
    if kind == "bytes":
        return byte_tokenizer()
    if folder is None:
        raise ValueError("LLaDA's tokenizer is read from a checkpoint folder (tokenizer.json)")
    return hf_tokenizer(folder)
