"""sample.py --task: d1's evaluation as one resumable command. Every test item at each
answer length, one JSONL per length that tasks.py score reads, a summary, and a run that continues
where a killed one stopped."""
import json

import pytest

import sample
import tasks
from conftest import SHARED, need


def run_eval(folder, out, *extra, task="sudoku", lengths="8,16"):
    sample.main(["--task", task, "--model", str(folder), "--lengths", lengths, "--block_length", "8",
                 "--steps_per_token", "1", "--limit", "10", "--batch_size", "4", "--out", str(out), "--device", "cpu",
                 *extra])


def printed_accuracy(out, length):
    """The accuracy of one length in the printed summary table."""
    row = [line for line in out.splitlines() if line.startswith(f"| {length} |")][0]
    return row.split(" | ")[2]


def scored_by_tasks_py(task, path, capsys):
    tasks.main(["score", "--task", task, "--file", str(path)])
    return capsys.readouterr().out.split(": ")[1].split(" ")[0]


def test_a_killed_run_continues_to_the_same_files(tiny_folder, tmp_path, monkeypatch, capsys):
    run_eval(tiny_folder, tmp_path / "whole", "--temperature", "1.0")  # sampled: each batch's noise is its own
    real, calls = sample.answer_batch, []

    def killed_after_four(*a, **k):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(sample, "answer_batch", killed_after_four)
    with pytest.raises(SystemExit) as e:
        run_eval(tiny_folder, tmp_path / "cut", "--temperature", "1.0")
    assert e.value.code == 130 and "the same command continues" in capsys.readouterr().err
    parts = tmp_path / "cut" / ".parts"
    assert sorted(p.name for p in (parts / "sudoku-8").iterdir()) == ["000000.jsonl", "000001.jsonl", "000002.jsonl"]
    assert [p.name for p in (parts / "sudoku-16").iterdir()] == ["000000.jsonl"]
    again = []
    monkeypatch.setattr(sample, "answer_batch", lambda *a, **k: again.append(1) or real(*a, **k))
    run_eval(tiny_folder, tmp_path / "cut", "--temperature", "1.0")
    assert len(again) == 2  # only the missing batches: 3 batches of 4, 4, 2 items per length, 4 done
    for n in (8, 16):
        whole, cut = ((tmp_path / d / f"sudoku-{n}.jsonl").read_bytes() for d in ("whole", "cut"))
        assert whole == cut and len(whole.splitlines()) == 10
    assert not parts.exists()
    with pytest.raises(SystemExit, match="holds an evaluation with other settings"):
        run_eval(tiny_folder, tmp_path / "cut", "--temperature", "0.5")


def test_the_printed_accuracy_is_what_tasks_py_scores_on_the_file(tiny_folder, tmp_path, capsys):
    run_eval(tiny_folder, tmp_path / "toy", "--temperature", "1.0")
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "toy" / "sudoku-8.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10))
    assert {"question", "ground_truth", "generation", "score", "extracted", "forward_passes"} <= set(rows[0])
    assert rows[0]["forward_passes"] == 8  # LLaDA's sampler: one pass per step, steps = 8 tokens x 1
    for n in (8, 16):
        assert printed_accuracy(out, n) == scored_by_tasks_py("sudoku", tmp_path / "toy" / f"sudoku-{n}.jsonl", capsys)
    summary = json.loads((tmp_path / "toy" / "summary.json").read_text())
    assert summary["accuracy"]["8"]["forward_passes_per_answer"] == 8.0


def test_a_llada_format_model_is_evaluated_with_d1s_prompt_and_scorer(small_llada_folder, tmp_path, capsys):
    config = json.loads((small_llada_folder / "config.json").read_text())
    config["max_sequence_length"] = 2048  # d1's evaluation prompt in a character-level tokenizer
    (small_llada_folder / "config.json").write_text(json.dumps(config))
    data = need(SHARED / "data" / "countdown" / "test.jsonl")
    run_eval(small_llada_folder, tmp_path / "chat", "--data", str(data), "--threshold", "0.5", task="countdown",
             lengths="16")
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "chat" / "countdown-16.jsonl").read_text().splitlines()]
    first = tasks.get_task("countdown").load(data)[0]
    assert rows[0]["question"] == first.question and rows[0]["ground_truth"] == [first.nums, first.target]
    assert rows[0]["style"] == "chat" and 2 <= rows[0]["forward_passes"] <= 16  # Fast-dLLM: at most one per token
    assert printed_accuracy(out, 16) == scored_by_tasks_py("countdown", tmp_path / "chat" / "countdown-16.jsonl",
                                                           capsys)


@pytest.mark.parametrize("flags, expected", [
    (["--lengths", "8,x"], "--lengths must be whole numbers"),
    (["--lengths", "12"], "block_length 8 must divide gen_length 12"),
    (["--batch_size", "0"], "--batch_size must be > 0, not 0"),
    (["--limit", "-3"], "--limit must be > 0, not -3"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--task", "gsm8k"], "task gsm8k has no generator: pass --data"),
    (["--data", "no/such/file.jsonl"], "no data file at no/such/file.jsonl"),
])
def test_bad_evaluation_flags_are_one_line_before_loading(flags, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(SystemExit) as e:
        run_eval("no/such/model", tmp_path / "out", *flags)
    assert str(e.value.code).startswith("error: ") and expected in str(e.value.code)
