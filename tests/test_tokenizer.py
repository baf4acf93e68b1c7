"""LLaDA's tokenizer (tokenizers library) and chat template, read from the checkpoint folder."""
import json

import pytest

import model
import model_files
from conftest import LLADA_8B, SPECIALS, need



def test_special_ids_are_read_by_name_from_tokenizer_config():
    special = model_files.special_tokens(need(LLADA_8B))
    assert [special[t] for t in SPECIALS] == [126080, 126081, 126346, 126347, 126348, 126336]


def test_chat_template_is_the_checkpoints_template():
    jinja2 = pytest.importorskip("jinja2")
    config = json.loads((need(LLADA_8B) / "tokenizer_config.json").read_text())
    template = jinja2.Environment().from_string(config["chat_template"])
    content = "  What is 7 * 8?\n"
    rendered = template.render(messages=[{"role": "user", "content": content}], bos_token=config["bos_token"])
    tok = model_files.Tokenizer(None, None, {"<|mdm_mask|>": 0, "<|endoftext|>": 1}, model_files.LLADA_CHAT)
    assert tok.chat(content) == rendered
    assert rendered == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 7 * 8?<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llada_tokenizer_encodes_decodes_and_stops(small_llada_folder):
    tok = model_files.hf_tokenizer(small_llada_folder)
    ids = {t: tok.special[t] for t in SPECIALS}
    assert (tok.mask_id, tok.eos_id, tok.eot_id) == (ids["<|mdm_mask|>"], ids["<|endoftext|>"], ids["<|eot_id|>"])
    prompt = tok.encode(tok.chat("hi"))
    assert prompt[:2] == [ids["<|startoftext|>"], ids["<|start_header_id|>"]]  # specials are single tokens
    assert prompt[-3:] == [ids["<|end_header_id|>"], tok.encode("\n")[0], tok.encode("\n")[0]]
    answer = tok.encode("42") + [ids["<|eot_id|>"]] + tok.encode("junk") + [tok.eos_id]
    assert tok.decode(answer) == "42"  # stops at end-of-turn
    assert tok.decode(tok.encode("a") + [tok.mask_id] + tok.encode("b") + [tok.eos_id, 5]) == "ab"


def test_llada_checkpoint_loads_with_its_tokenizer_and_saves_it(small_llada_folder, tmp_path):
    net, tok = model.load_model(str(small_llada_folder))
    assert net.config.tokenizer == "llada" and tok.chat_template == model_files.LLADA_CHAT
    model.save(net, tmp_path / "copy", tok)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "copy").iterdir()}
    net2, tok2 = model.load_model(str(tmp_path / "copy"))
    assert tok2.special == tok.special


def test_missing_tokenizer_json_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        model_files.hf_tokenizer(tmp_path)


def test_chat_evaluation_uses_d1s_eval_prompt_and_prefill(small_llada_folder):
    import sample
    import tasks
    tok = model_files.hf_tokenizer(small_llada_folder)
    task = tasks.get_task("countdown")
    ex = task.generate(1, seed=0)[0]
    train_ids = sample.encode_prompt(tok, task, ex, "chat")
    eval_ids = sample.encode_prompt(tok, task, ex, "chat", for_eval=True)
    assert eval_ids[-len("<reasoning>"):] == tok.encode("<reasoning>")  # the answer is pre-filled
    assert eval_ids[-len("<reasoning>") - 3] == tok.special["<|end_header_id|>"]  # right after the template
    assert eval_ids[:-len("<reasoning>")] == tok.encode(tok.chat(task.prompt(ex, "chat_eval")))
    assert train_ids == tok.encode(tok.chat(task.prompt(ex, "chat")))
    assert sample.encode_prompt(model_files.byte_tokenizer(), task, ex, "toy", for_eval=True) == \
        model_files.byte_tokenizer().encode(task.prompt(ex, "toy"))  # the toy format has no prefill
