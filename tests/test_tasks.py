"""Tests for tasks.py: d1 parity on published generations, safety fuzzing, data, rewards, CLI.

The `d1_*` helpers below restate d1's original regexes (facts from its eval and reward code) and
serve as oracles for tasks.py's linear-time re-expressions on short strings.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
NAMES = ["gsm8k", "math500", "countdown", "sudoku"]
D1_ACCURACY = {"gsm8k": 76.37, "math500": 32.4, "countdown": 19.53, "sudoku": 6.69}
# items (0-based lines) where corrected=True differs from d1, and the corrected accuracies
CORRECTED = {"gsm8k": ([34, 127, 129, 596, 673, 822, 829, 957, 966, 972], 77.26),  # "\boxed{6,277}" read as 6
             "math500": ([], 32.4), "countdown": ([], 19.53),
             "sudoku": ([15, 20, 82, 100, 112, 192, 212, 233], 7.37)}  # closer to an unlisted valid solution


@pytest.fixture(scope="module")
def data():
    """../shared/data: skipped where absent, but CI (CI=true) must have it (as in conftest.need)."""
    if not DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DATA} is missing: CI runs beside a copy of shared/")
        pytest.skip(f"{DATA} is not present")
    return DATA


def generations(name):
    with open(DATA / "d1_generations" / f"{name}_256.jsonl") as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- parity with d1
@pytest.mark.parametrize("name", NAMES)
def test_d1_parity_item_by_item(name, data):
    rows, task = generations(name), tasks.get_task(name)
    acc, results = task.score_rows(rows)
    for i, (row, res) in enumerate(zip(rows, results)):
        if name == "sudoku":
            got = (res["correct_cells"], res["empty_cells"], res["extracted"])
            assert got == (row["d1_correct_cells"], row["d1_empty_cells"], row["d1_extracted"]), i
        else:
            assert (res["score"] == 1.0, res["extracted"]) == (row["d1_correct"], row["d1_extracted"]), i
    assert round(acc, 2) == D1_ACCURACY[name]


@pytest.mark.parametrize("name", NAMES)
def test_corrected_verdicts(name, data):
    rows, task = generations(name), tasks.get_task(name)
    _, d1 = task.score_rows(rows)
    acc, fixed = task.score_rows(rows, corrected=True)
    assert [i for i, (a, b) in enumerate(zip(d1, fixed)) if a["score"] != b["score"]] == CORRECTED[name][0]
    assert round(acc, 2) == CORRECTED[name][1]


@pytest.mark.parametrize("name", NAMES)
def test_loaded_examples_are_d1s_questions(name, data):
    """Our loaders rebuild d1's question text and ground truth, so score(gen, example) = d1's verdict."""
    task = tasks.get_task(name)
    by_question = {ex.question: ex for ex in task.load(data / name, "test")}
    for row in generations(name):
        ex = by_question[row["question"]]
        truth = task.truth(ex.answer) if name == "gsm8k" else ex.answer
        assert truth == row["ground_truth"]
        assert task.score(row["generation"], ex) == task.score(row["generation"], row["ground_truth"], False,
                                                               row["question"])


def test_sudoku_corrected_accepts_alternative_solution():
    sudoku = tasks.TASKS["sudoku"]
    puzzle = "0034300143100040"  # two solutions; d1's file lists the second
    listed, other = "2134342143121243", "1234342143122143"
    assert tasks.sudoku_solutions(puzzle) == [other, listed]
    gen = f"<reasoning>\n...\n</reasoning>\n<answer>\n{other}\n</answer><|eot_id|>"
    q = f"Solve the following Sudoku puzzle: {puzzle}\n"
    assert sudoku.cells(gen, listed, question=q)[:2] == (4, 8)
    assert sudoku.cells(gen, listed, corrected=True, question=q)[:2] == (8, 8)


def test_gsm8k_truth_quirks():
    g = tasks.TASKS["gsm8k"]
    assert g.truth("1,000") == 1000.0 and g.truth("-3") is None and g.truth("-3", corrected=True) == -3.0
    assert g.score("<answer>\n-3\n</answer>", "-3") == (0.0, -3.0)  # d1: negative truths are unwinnable
    assert g.score("<answer>\n-3\n</answer>", "-3", corrected=True) == (1.0, -3.0)
    assert g.score("so \\boxed{...} then \\boxed{x = 18}", 18.0) == (1.0, 18.0)  # first numeric \boxed


# ----------------------------------------------------------------------------- oracles: d1's regexes
def d1_sudoku_answer(s):
    for p in [r"<answer>.*?```\s*([\d\s]+)```", r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
              r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", r".*?(\d{16})\s*</answer>", r"\b(\d{16})\b"]:
        m = re.search(p, s, re.DOTALL)
        if m and m.group(1).strip():
            return re.sub(r"\s", "", m.group(1).strip())
    return ""


def d1_gsm8k(s):
    for c in re.findall(r"\\boxed{(.*?)}", s):
        c = c.strip()
        if c and c != "..." and not re.match(r"^\.+$", c):
            try:
                return float(c)
            except ValueError:
                nums = re.findall(r"-?\d+\.?\d*", c)
                if nums:
                    return float(nums[0])
    m = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)
    if m and m.group(1).strip():
        try:
            return float(m.group(1).strip())
        except ValueError:
            nums = re.findall(r"-?\d+\.?\d*", m.group(1).strip())
            return float(nums[-1]) if nums else None
    return None


def d1_last_boxed(s):
    idx = s.rfind("\\boxed")
    if "\\boxed " in s:
        return "\\boxed " + s.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = s.rfind("\\fbox")
        if idx < 0:
            return s
    depth = 0
    for i in range(idx, len(s)):
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        if s[i] == "}" and depth == 0:
            return s[idx:i + 1]
    return None


TOKENS = ["<answer>", "</answer>", "<reasoning>", "</reasoning>", "\n", " ", "\t", "```", "\\boxed{", "\\boxed ",
          "\\fbox{", "{", "}", "$", "1", "12", "9", "0", "1234123412341234", "<|eot_id|>", "<|endoftext|>", "=", "+",
          "-", "*", "/", "(", ")", ".", "x", ",", "\u00a0", "\u0663", "\\frac", "\\sqrt", "\\text{ ", "\x08oxed"]
token_text = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
ORACLE = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@ORACLE
@given(token_text)
def test_linear_scans_match_d1_regexes(s):
    assert tasks._answer_tags(s) == re.findall(r"<answer>(.*?)</answer>", s, re.DOTALL)
    for dotall in (False, True):
        flags = re.DOTALL if dotall else 0
        soft = re.match(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", s, flags)
        strict = re.match(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", s, flags)
        assert tasks._soft_format(s, dotall) == bool(soft)
        assert tasks._strict_format(s, dotall) == bool(strict)
    assert tasks._sudoku_d1_answer(s) == d1_sudoku_answer(s)
    got, want = tasks.TASKS["gsm8k"].extract(s), d1_gsm8k(s)
    assert got == want or (got != got and want != want)  # nan
    assert tasks.last_boxed_only_string(s) == d1_last_boxed(s)
    m = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", s)
    assert tasks._equation_lhs(s) == (m.group(1).strip() if m else None)
    assert tasks._xml_answer(s) == s.split("<answer>")[-1].split("</answer>")[0].strip()
    assert tasks._count_xml(s) == d1_count_xml(s)
    fmt = tasks.TASKS["math500"].reward_funcs("chat")[1]
    part = s.split("<answer>")[1].split("</answer>")[0] if "<answer>" in s else s
    assert fmt(s, None) == 0.5 * (("<answer>" in s) + (1.0 if "\boxed" in part else 0.5))  # sic "\b"


def d1_count_xml(s):
    count = 0.0
    if s.count("<reasoning>\n") == 1:
        count += 0.125
    if s.count("\n</reasoning>\n") == 1:
        count += 0.125
    if s.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(s.split("\n</answer>\n")[-1]) * 0.001
    if s.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(s.split("\n</answer>")[-1]) - 1) * 0.001
    return count


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@ORACLE
@given(st.lists(st.sampled_from(["1", "2", "9", "10", "0", "+", "-", "*", "/", "(", ")", " ", ".", "\n"]),
                max_size=14).map("".join))
def test_safe_eval_agrees_with_python_eval(s):
    if "**" in s:  # powers are checked separately; eval here only runs test-generated arithmetic
        return
    try:
        want = eval(s.strip(), {"__builtins__": None}, {})
    except Exception:
        want = None
    want = want if isinstance(want, (int, float, complex)) else None
    got = tasks.safe_eval(s)
    assert got == want or (got != got and want != want), s
    assert type(got) is type(want)


# ----------------------------------------------------------------------------- fuzz: never raise, never hang
def examples():
    return {
        "gsm8k": tasks.Example(question="q", answer="18", rationale="9*2=18"),
        "math500": tasks.Example(question="q", answer="\\frac{1}{2}", rationale="so \\boxed{\\frac12}."),
        "countdown": tasks.Countdown.make([9, 9, 9], 90),
        "sudoku": tasks.Sudoku.make("3102200002100320", "3142243142131324"),
    }


def check_all(name, s, limit=3.0):  # catastrophic backtracking takes minutes; a busy machine can stall ~1 s
    task, ex = tasks.get_task(name), examples()[name]
    for style in ("chat", "toy"):
        for f in task.reward_funcs(style) + (task.reward_funcs(style, d1_quirks=False) if style == "chat" else []):
            t0 = time.perf_counter()
            r = f(s, ex)
            assert time.perf_counter() - t0 < limit, (f.__name__, len(s))
            lo = -0.001 * len(s) - 1 if f.min_value < 0 else 0.0  # xml count: -0.001 per trailing char
            assert isinstance(r, float) and lo <= r <= f.max_value, (f.__name__, r)
    truths = {"gsm8k": [ex, 18.0, None], "math500": [ex, "0.5"], "countdown": [ex, [[9, 9, 9], 90]], "sudoku": [ex]}
    for truth in truths[name]:
        for corrected in (False, True):
            t0 = time.perf_counter()
            score, _ = task.score(s, truth, corrected)
            assert time.perf_counter() - t0 < limit, len(s)
            assert 0.0 <= score <= 1.0
    assert 0.0 <= task.score(s, ex, style="toy")[0] <= 1.0


FUZZ = settings(max_examples=10_000, deadline=2000, database=None, suppress_health_check=list(HealthCheck))
fuzz_text = st.one_of(token_text, st.text(max_size=200),
                      st.lists(st.sampled_from(TOKENS + ["**", "9**9", "\\boxed{\\boxed{", "<answer>9**9**9</answer>"]),
                               max_size=12).map("".join))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(s=fuzz_text)
def test_fuzz_rewards_and_scorers(name, s):
    check_all(name, s)


MEGA = [
    "1" * 10**6, "<answer>" * 125_000, "\\boxed{" * 150_000, "\\boxed" + "{" * 10**6, "(" * 10**6,
    "<reasoning>" + "</reasoning><answer>" * 50_000, "-" * 10**6 + "1", "```" + " " * 10**6 + "1",
    "1" * 16 + " " * 10**6, "</answer>" + " " * 10**6, "<answer>" + "9**" * 300_000 + "9</answer>",
    "\\boxed{" + "1+" * 500_000 + "1}", "\\frac" * 200_000, "1 " * 500_000 + "=", "\u00e9\u4e2d\U0001f600" * 300_000,
    "<answer>" + "1234" * 250_000 + "</answer>", "\\boxed{" * 10_000 + "1" + "}" * 10_000, "<|endoftext|>" * 80_000,
]


@pytest.mark.parametrize("name", NAMES)
def test_megabyte_strings(name):
    for s in MEGA:
        check_all(name, s, limit=3.0)


def test_power_tower_is_rejected_fast():
    t0 = time.perf_counter()
    assert tasks.safe_eval("9**9**9") is None
    cd, ex = tasks.TASKS["countdown"], tasks.Countdown.make([9, 9, 9], 81)
    assert cd.reward_funcs("chat")[0]("<answer>9**9**9</answer>", ex) == 0.1
    assert cd.score("\\boxed{9**9**9}", [[9, 9, 9], 81]) == (0.0, "9**9**9")
    assert time.perf_counter() - t0 < 0.5
    assert tasks.safe_eval("2**3*1") == 8 and tasks.safe_eval("2**3", strict=True) is None  # d1 allows **
    assert tasks.safe_eval("__import__('os')") is None and tasks.safe_eval("(1).real") is None


def test_math_equivalence_follows_d1():
    eq = tasks.is_equiv
    assert eq("\\frac12", "\\frac{1}{2}") and eq("0.5", "\\dfrac{1}{2}") and eq("1/2", "\\frac{1}{2}")
    assert eq("x = 5", "5") and eq("10^\\circ", "10") and eq("\\$5", "5") and eq("\\left( 3, 4 \\right)", "(3,4)")
    assert not eq("a/b", "\\frac{a}{b}")  # int("a") raises: d1 falls back to comparing raw strings
    assert eq("\\sqrt", "\\sqrt") and not eq("\\sqrt", "\\sqrt ")  # fix_sqrt raises on both sides
    assert eq(None, None) and not eq(None, "1")
    assert tasks.last_boxed_only_string("a \\boxed{x{y}} b \\boxed{z") is None
    assert tasks.last_boxed_only_string("\\boxed 5$ and \\boxed{6}") == "\\boxed 5"


# ----------------------------------------------------------------------------- data
def test_loaders_read_shared_data(data):
    assert len(tasks.TASKS["gsm8k"].load(DATA / "gsm8k", "train")) == 7473
    gsm = tasks.TASKS["gsm8k"].load(DATA / "gsm8k/test.jsonl")
    assert len(gsm) == 1319 and gsm[0].answer == "18" and "<<" not in gsm[0].rationale
    math = tasks.TASKS["math500"].load(DATA / "math500")
    assert len(math) == 500 and math[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    cd = tasks.TASKS["countdown"].load(DATA / "countdown/test.jsonl")
    assert len(cd) == 256 and (cd[0].nums, cd[0].target) == ([30, 100, 93], 23)
    assert cd[0].question == "Numbers: [30, 100, 93]\nTarget: 23"
    assert len(tasks.TASKS["countdown"].load(DATA / "countdown/train_subset.jsonl")) == 5583  # 3-number rows
    sd = tasks.TASKS["sudoku"].load(DATA / "sudoku/test.csv")
    assert len(sd) == 500 and sd[0].puzzle == "3102200002100320" and sum(e.puzzle[0] == "0" for e in sd) == 249
    assert sum(len(tasks.sudoku_solutions(e.puzzle)) > 1 for e in sd) == 124
    for ex in cd:  # every d1 test item is solvable, and the toy target is a valid answer
        assert tasks.TASKS["countdown"].toy_reward(tasks.TASKS["countdown"].target(ex, "toy"), ex) == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_loader_errors(name, tmp_path):
    task = tasks.get_task(name)
    with pytest.raises(FileNotFoundError, match="no data file"):
        task.load(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.txt"
    empty.write_text("Puzzle,Solution\n" if name == "sudoku" else "\n")
    with pytest.raises(ValueError, match="empty"):
        task.load(empty)
    bad = tmp_path / "bad.txt"
    good = {"gsm8k": '{"question": "q", "answer": "a\\n#### 3"}', "math500": '{"problem": "p", "answer": "1"}',
            "countdown": '{"input": "1,2,3", "output": "6"}', "sudoku": "3102200002100320,3142243142131324"}[name]
    header = "Puzzle,Solution\n" if name == "sudoku" else ""
    bad.write_text(header + good + "\n" + good.replace("3", "x", 1)[:-3] + "\n")
    with pytest.raises(ValueError, match=rf"bad.txt:{3 if name == 'sudoku' else 2}:"):
        task.load(bad)


def test_unknown_task():
    with pytest.raises(ValueError, match="gsm8k, math500, countdown, sudoku"):
        tasks.get_task("mbpp")
    assert list(tasks.TASKS) == NAMES


def test_sudoku_generator():
    sd = tasks.TASKS["sudoku"]
    assert len(tasks.SUDOKU_GRIDS) == 288 and len(tasks.SUDOKU_TEST_GRIDS) == 48
    train, test = sd.generate(100, seed=0), sd.generate(60, seed=0, split="test")
    assert [e.puzzle for e in train] == [e.puzzle for e in sd.generate(100, seed=0)]
    assert [e.puzzle for e in train] != [e.puzzle for e in sd.generate(100, seed=1)]
    assert not {e.solution for e in train} & {e.solution for e in test}
    assert all(e.solution in tasks.SUDOKU_TEST_GRIDS for e in test)
    for e in train + test:
        assert e.puzzle.count("0") == 8 and tasks.sudoku_solutions(e.puzzle) == [e.solution]
    assert len({e.puzzle for e in train}) == 100


def test_countdown_generator():
    cd = tasks.TASKS["countdown"]
    train, test = cd.generate(300, seed=0), cd.generate(50, seed=0, split="test")
    assert [e.answer for e in train] == [e.answer for e in cd.generate(300, seed=0)]
    assert not {(tuple(sorted(e.nums)), e.target) for e in train} & {(tuple(sorted(e.nums)), e.target) for e in test}
    for e in train + test:
        assert len(e.nums) == 3 and all(1 <= n <= 100 for n in e.nums) and 1 <= e.target <= 100
        assert tasks._uses_numbers(e.expression, e.nums) and tasks.safe_eval(e.expression, strict=True) == e.target


# ----------------------------------------------------------------------------- prompts and rewards
def test_prompts():
    gsm, ex = tasks.TASKS["gsm8k"], tasks.Example(question="What is 9*2?", answer="18", rationale="9*2=18")
    assert gsm.prompt(ex) == ("\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n"
                              "</answer>\n\n\nWhat is 9*2?")
    assert gsm.prompt(ex, "chat_eval").startswith("You are a math expert.")
    assert gsm.prompt(ex, "chat_eval").endswith("</answer>\n\nWhat is 9*2?")
    assert tasks.EVAL_PREFILL == "<reasoning>" and gsm.prompt(ex, "toy") == "gsm8k What is 9*2?\n"
    assert gsm.target(ex) == "<reasoning>\n9*2=18\n</reasoning>\n<answer>\n18\n</answer>"
    sd = tasks.Sudoku.make("3102200002100320", "3142243142131324")
    assert tasks.TASKS["sudoku"].prompt(sd, "toy") == "sudoku 3102200002100320\n"
    assert tasks.TASKS["sudoku"].prompt(sd).endswith("</answer>\n\n\nSolve the following Sudoku puzzle: "
                                                     "3102200002100320\n")
    cd = tasks.Countdown.make([30, 100, 93], 23)
    assert tasks.TASKS["countdown"].prompt(cd, "toy") == "countdown 30 100 93 -> 23\n"
    assert "Using only the numbers [30, 100, 93], create" in tasks.TASKS["countdown"].prompt(cd)
    assert tasks.TASKS["countdown"].prompt(cd, "chat_eval").endswith("</answer>\n\nNumbers: [30, 100, 93]\nTarget: 23")
    for name in NAMES:
        with pytest.raises(ValueError):
            tasks.get_task(name).prompt(ex, "bogus")


def test_gsm8k_rewards_exact():
    fs, ex = tasks.TASKS["gsm8k"].reward_funcs("chat"), tasks.Example(question="q", answer="18")
    assert [f.__name__ for f in fs] == ["xmlcount_reward", "soft_format_reward", "strict_format_reward", "int_reward",
                                        "correctness_reward"]
    perfect = "<reasoning>\n9*2=18\n</reasoning>\n<answer>\n18\n</answer>\n"
    # d1 quirk: without re.DOTALL the soft format only matches a one-line "<reasoning>..</reasoning>"
    assert [f(perfect, ex) for f in fs] == [0.5, 0.0, 0.5, 0.5, 2.0]
    assert [f("<reasoning>ok</reasoning> <answer>18</answer>", ex) for f in fs] == [0.0, 0.5, 0.0, 0.5, 2.0]
    fixed = tasks.TASKS["gsm8k"].reward_funcs("chat", d1_quirks=False)
    assert sum(f(perfect + "<|eot_id|><|endoftext|>", ex) for f in fixed) == 4.0 == tasks.TASKS["gsm8k"].max_reward()
    multiline = "<reasoning>\n9*2\n=18\n</reasoning>\n<answer>\n18\n</answer>\n"
    assert [f(multiline, ex) for f in fs] == [0.5, 0.0, 0.0, 0.5, 2.0]
    assert [f(multiline, ex) for f in fixed] == [0.5] * 4 + [2.0]
    assert fs[0](perfect + "xyz", ex) == pytest.approx(0.5 - 0.006)  # d1 charges trailing text twice
    assert [f("<answer>1,8</answer>", ex) for f in fs] == [0.0, 0.0, 0.0, 0.0, 0.0]


def test_math_countdown_sudoku_rewards_exact():
    fs = tasks.TASKS["math500"].reward_funcs("chat")
    ex = tasks.Example(question="q", answer="1/2", rationale="\\boxed{\\frac12}")
    good = "<reasoning>\nhalf\n</reasoning>\n<answer>\n\\boxed{\\dfrac{1}{2}}\n</answer>"
    assert [f(good, ex) for f in fs] == [2.0, 0.75]  # d1 quirk: "\boxed" is a backspace, 1.0 is unreachable
    assert [f(good, ex) for f in tasks.TASKS["math500"].reward_funcs("chat", d1_quirks=False)] == [2.0, 1.0]
    assert [f("the answer is 0.5", ex) for f in fs] == [0.0, 0.25]
    cd, ex = tasks.TASKS["countdown"].reward_funcs("chat")[0], tasks.Countdown.make([30, 100, 93], 23)
    assert [cd(s, ex) for s in ["<answer>30-(100-93)</answer>", "<answer>30+100-93</answer>",
                                "<answer>30-100</answer>", "<answer>1</answer><answer> 93 - 100 + 30 </answer>",
                                "no answer", "<answer>30-(100-93)"]] == [1.0, 0.1, 0.1, 1.0, 0.0, 0.0]
    toy = tasks.TASKS["countdown"].toy_reward
    assert [toy(s, ex) for s in ["30-100+93\n", "30+100+93", "30-(100-", "hello", "30**1", "30-100+93.0"]] == [
        1.0, 0.1, 0.0, 0.0, 0.0, 0.0]
    sd, ex = tasks.TASKS["sudoku"].reward_funcs("chat")[0], tasks.Sudoku.make("3102200002100320", "3142243142131324")
    assert sd("<answer>\n3142243142131324\n</answer>", ex) == 1.0
    assert sd("<answer>3142 2431 4213 1324</answer>", ex) == 1.0 and sd("<answer>31</answer>", ex) == 0.0
    assert sd("<answer>3142243142131111</answer>", ex) == 7 / 8 and sd("3142243142131324", ex) == 0.0
    assert tasks.TASKS["sudoku"].toy_reward("3142243142131324\nmore", ex) == 1.0


def test_toy_scores():
    for name, ex in examples().items():
        task = tasks.get_task(name)
        target = task.target(ex, "toy")
        assert task.score(target + "<|endoftext|><|endoftext|>", ex, style="toy") == (1.0, target)
        assert task.toy_reward(task.prompt(ex, "toy"), ex) < 1.0
    cd, ex = tasks.TASKS["countdown"], examples()["countdown"]
    assert cd.toy_reward("9+9+9", ex) == 0.1 and cd.score("9+9+9", ex, style="toy") == (0.0, "9+9+9")
    assert tasks.TASKS["sudoku"].score("3142243142131111", examples()["sudoku"], style="toy")[0] == 7 / 8


# ----------------------------------------------------------------------------- CLI
def test_cli_score(tmp_path, capsys, data):
    out = tmp_path / "scored.jsonl"
    gen = DATA / "d1_generations"
    tasks.main(["score", "--task", "sudoku", "--file", str(gen / "sudoku_256.jsonl"), "--out", str(out)])
    assert capsys.readouterr().out.startswith("sudoku: 6.69")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 256 and {"score", "extracted", "correct_cells", "empty_cells"} <= set(lines[0])
    proc = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "score", "--task", "countdown", "--file",
                           str(gen / "countdown_256.jsonl")], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("countdown: 19.53")


def test_cli_show(capsys):
    tasks.main(["show", "--task", "sudoku", "-n", "3"])
    out = capsys.readouterr().out
    assert out.count("=== sudoku example") == 3 and "'sudoku " in out and "Solve the following Sudoku puzzle" in out


def test_import_is_pure_stdlib():
    code = "import sys, tasks; assert not {'torch', 'numpy', 'pandas'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
