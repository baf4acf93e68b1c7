"""Tests for tasks.py and d1_parsers.py: d1 parity on published generations, safety fuzzing, data,
rewards (exact values, and per task a property: full reward only for a valid answer), CLI.

The `d1_*` helpers below restate d1's original regexes (facts from its eval and reward code) and
serve as oracles for d1_parsers.py's linear-time re-expressions on short strings.
"""
import ast
import itertools
import json
import operator
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import d1_parsers  # noqa: E402
import tasks  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
NAMES = ["gsm8k", "math500", "countdown", "sudoku"]  # d1's benchmarks
REWARDED = NAMES + ["chains", "toy-s1k"]  # every task with rewards: d1's, the toy GSM8K and the toy s1K
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
def test_scores_equal_d1s_verdicts_item_by_item_on_its_generations(name, data):
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
def test_corrected_scoring_changes_only_the_listed_wrong_d1_verdicts(name, data):
    rows, task = generations(name), tasks.get_task(name)
    _, d1 = task.score_rows(rows)
    acc, fixed = task.score_rows(rows, corrected=True)
    assert [i for i, (a, b) in enumerate(zip(d1, fixed)) if a["score"] != b["score"]] == CORRECTED[name][0]
    assert round(acc, 2) == CORRECTED[name][1]


@pytest.mark.parametrize("name", NAMES)
def test_loaded_examples_rebuild_d1s_questions_and_ground_truths(name, data):
    """Our loaders rebuild d1's question text and ground truth, so score(gen, example) = d1's verdict."""
    task = tasks.get_task(name)
    by_question = {ex.question: ex for ex in task.load(data / name, "test")}
    for row in generations(name):
        ex = by_question[row["question"]]
        truth = task.truth(ex.answer) if name == "gsm8k" else ex.answer
        assert truth == row["ground_truth"]
        assert task.score(row["generation"], ex) == task.score(row["generation"], row["ground_truth"], False,
                                                               row["question"])


def test_sudoku_corrected_scoring_accepts_an_unlisted_valid_solution():
    sudoku = tasks.TASKS["sudoku"]
    puzzle = "0034300143100040"  # two solutions; d1's file lists the second
    listed, other = "2134342143121243", "1234342143122143"
    assert d1_parsers.sudoku_solutions(puzzle) == [other, listed]
    gen = f"<reasoning>\n...\n</reasoning>\n<answer>\n{other}\n</answer><|eot_id|>"
    q = f"Solve the following Sudoku puzzle: {puzzle}\n"
    assert sudoku.cells(gen, listed, question=q)[:2] == (4, 8)
    assert sudoku.cells(gen, listed, corrected=True, question=q)[:2] == (8, 8)


def test_gsm8k_ground_truth_reads_separators_and_drops_minus_signs_as_d1():
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


def d1_gsm8k(s, corrected=False):
    """d1's GSM8K extraction; corrected=True drops thousands separators first, as the corrected scorer does."""
    drop = (lambda c: c.replace(",", "")) if corrected else (lambda c: c)
    for c in re.findall(r"\\boxed{(.*?)}", s):
        c = c.strip()
        if c and c != "..." and not re.match(r"^\.+$", c):
            try:
                return float(drop(c))
            except ValueError:
                nums = re.findall(r"-?\d+\.?\d*", drop(c))
                if nums:
                    return float(nums[0])
    m = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)
    if m and m.group(1).strip():
        try:
            return float(drop(m.group(1).strip()))
        except ValueError:
            nums = re.findall(r"-?\d+\.?\d*", drop(m.group(1).strip()))
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
def test_linear_scans_match_d1s_regexes(s):
    assert d1_parsers.answer_tags(s) == re.findall(r"<answer>(.*?)</answer>", s, re.DOTALL)
    assert list(d1_parsers.boxed_groups(s)) == re.findall(r"\\boxed{(.*?)}", s)
    for dotall in (False, True):
        flags = re.DOTALL if dotall else 0
        soft = re.match(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", s, flags)
        strict = re.match(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", s, flags)
        assert d1_parsers.soft_format(s, dotall) == bool(soft)
        assert d1_parsers.strict_format(s, dotall) == bool(strict)
    assert d1_parsers.sudoku_d1_answer(s) == d1_sudoku_answer(s)
    got, want = tasks.TASKS["gsm8k"].extract(s), d1_gsm8k(s)
    assert got == want or (got != got and want != want)  # nan
    assert d1_parsers.last_boxed_only_string(s) == d1_last_boxed(s)
    m = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", s)
    assert d1_parsers.equation_lhs(s) == (m.group(1).strip() if m else None)
    assert d1_parsers.xml_answer(s) == s.split("<answer>")[-1].split("</answer>")[0].strip()
    assert d1_parsers.count_xml(s) == d1_count_xml(s)
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
    got = d1_parsers.safe_eval(s)
    assert got == want or (got != got and want != want), s
    assert type(got) is type(want)


# ----------------------------------------------------------------------------- fuzz: never raise, never hang
def examples():
    return {
        "gsm8k": tasks.Example(question="q", answer="18", rationale="9*2=18"),
        "math500": tasks.Example(question="q", answer="\\frac{1}{2}", rationale="so \\boxed{\\frac12}."),
        "countdown": tasks.Countdown.make([9, 9, 9], 90),
        "sudoku": tasks.Sudoku.make("3102200002100320", "3142243142131324"),
        "chains": tasks.Example(question="b=a+3 a=4 ?b", answer="7", rationale="a=4 b=a+3=4+3=7"),
        "toy-s1k": tasks.Example(question="walk b>c a>b from a 2", answer="c", rationale="a>b b>c"),
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
    truths = {"gsm8k": [ex, 18.0, None], "math500": [ex, "0.5"], "countdown": [ex, [[9, 9, 9], 90]], "sudoku": [ex],
              "chains": [ex, "7"], "toy-s1k": [ex, "c"]}
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


@pytest.mark.parametrize("name", REWARDED)
@FUZZ
@given(s=fuzz_text)
def test_rewards_and_scorers_stay_in_range_and_fast_on_any_text(name, s):
    check_all(name, s)


MEGA = [
    "1" * 10**6, "<answer>" * 125_000, "\\boxed{" * 150_000, "\\boxed" + "{" * 10**6, "(" * 10**6,
    "<reasoning>" + "</reasoning><answer>" * 50_000, "-" * 10**6 + "1", "```" + " " * 10**6 + "1",
    "1" * 16 + " " * 10**6, "</answer>" + " " * 10**6, "<answer>" + "9**" * 300_000 + "9</answer>",
    "\\boxed{" + "1+" * 500_000 + "1}", "\\frac" * 200_000, "1 " * 500_000 + "=", "\u00e9\u4e2d\U0001f600" * 300_000,
    "<answer>" + "1234" * 250_000 + "</answer>", "\\boxed{" * 10_000 + "1" + "}" * 10_000, "<|endoftext|>" * 80_000,
]


@pytest.mark.parametrize("name", REWARDED)
def test_rewards_and_scorers_stay_fast_on_megabyte_strings(name):
    for s in MEGA:
        check_all(name, s, limit=3.0)


def test_power_towers_are_rejected_fast_and_nothing_is_evaluated():
    t0 = time.perf_counter()
    assert d1_parsers.safe_eval("9**9**9") is None
    cd, ex = tasks.TASKS["countdown"], tasks.Countdown.make([9, 9, 9], 81)
    assert cd.reward_funcs("chat")[0]("<answer>9**9**9</answer>", ex) == 0.1
    assert cd.score("\\boxed{9**9**9}", [[9, 9, 9], 81]) == (0.0, "9**9**9")
    assert time.perf_counter() - t0 < 0.5
    assert d1_parsers.safe_eval("2**3*1") == 8 and d1_parsers.safe_eval("2**3", strict=True) is None  # d1 allows **
    assert d1_parsers.safe_eval("__import__('os')") is None and d1_parsers.safe_eval("(1).real") is None


def test_math_equivalence_follows_d1s_normalisation():
    eq = d1_parsers.is_equiv
    assert eq("\\frac12", "\\frac{1}{2}") and eq("0.5", "\\dfrac{1}{2}") and eq("1/2", "\\frac{1}{2}")
    assert eq("x = 5", "5") and eq("10^\\circ", "10") and eq("\\$5", "5") and eq("\\left( 3, 4 \\right)", "(3,4)")
    assert not eq("a/b", "\\frac{a}{b}")  # int("a") raises: d1 falls back to comparing raw strings
    assert eq("\\sqrt", "\\sqrt") and not eq("\\sqrt", "\\sqrt ")  # fix_sqrt raises on both sides
    assert eq(None, None) and not eq(None, "1")
    assert d1_parsers.last_boxed_only_string("a \\boxed{x{y}} b \\boxed{z") is None
    assert d1_parsers.last_boxed_only_string("\\boxed 5$ and \\boxed{6}") == "\\boxed 5"


# ----------------------------------------------------------------------------- data
def test_loaders_read_the_shared_data_with_d1s_counts(data):
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
    assert sum(len(d1_parsers.sudoku_solutions(e.puzzle)) > 1 for e in sd) == 124
    for ex in cd:  # every d1 test item is solvable, and the toy target is a valid answer
        assert tasks.TASKS["countdown"].toy_reward(tasks.TASKS["countdown"].target(ex, "toy"), ex) == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_loader_errors_name_the_file_and_line(name, tmp_path):
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


def test_an_unknown_task_name_lists_the_known_tasks():
    with pytest.raises(ValueError, match="gsm8k, math500, countdown, sudoku"):
        tasks.get_task("mbpp")
    assert list(tasks.TASKS) == REWARDED


def test_sudoku_generator_is_seeded_and_holds_out_whole_test_grids():
    sd = tasks.TASKS["sudoku"]
    assert len(d1_parsers.SUDOKU_GRIDS) == 288 and len(tasks.SUDOKU_TEST_GRIDS) == 48
    train, test = sd.generate(100, seed=0), sd.generate(60, seed=0, split="test")
    assert [e.puzzle for e in train] == [e.puzzle for e in sd.generate(100, seed=0)]
    assert [e.puzzle for e in train] != [e.puzzle for e in sd.generate(100, seed=1)]
    assert not {e.solution for e in train} & {e.solution for e in test}
    assert all(e.solution in tasks.SUDOKU_TEST_GRIDS for e in test)
    for e in train + test:
        assert e.puzzle.count("0") == 8 and d1_parsers.sudoku_solutions(e.puzzle) == [e.solution]
    assert len({e.puzzle for e in train}) == 100


def test_countdown_generator_is_seeded_solvable_and_split_by_hash():
    cd = tasks.TASKS["countdown"]
    train, test = cd.generate(300, seed=0), cd.generate(50, seed=0, split="test")
    assert [e.answer for e in train] == [e.answer for e in cd.generate(300, seed=0)]
    assert not {(tuple(sorted(e.nums)), e.target) for e in train} & {(tuple(sorted(e.nums)), e.target) for e in test}
    for e in train + test:
        assert len(e.nums) == 3 and all(1 <= n <= 100 for n in e.nums) and 1 <= e.target <= 100
        assert d1_parsers.uses_numbers(e.expression, e.nums)
        assert d1_parsers.safe_eval(e.expression, strict=True) == e.target


# ----------------------------------------------------------------------------- prompts and rewards
def test_prompts_of_each_style_hold_the_question_and_format():
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


def test_gsm8k_rewards_give_d1s_values_with_and_without_its_quirks():
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


def test_math_countdown_and_sudoku_rewards_give_d1s_values():
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


def test_toy_targets_score_full_and_toy_prompts_do_not():
    for name, ex in examples().items():
        task = tasks.get_task(name)
        target = task.target(ex, "toy")
        assert task.score(target + "<|endoftext|><|endoftext|>", ex, style="toy") == (1.0, target)
        assert task.toy_reward(task.prompt(ex, "toy"), ex) < 1.0
    cd, ex = tasks.TASKS["countdown"], examples()["countdown"]
    assert cd.toy_reward("9+9+9", ex) == 0.1 and cd.score("9+9+9", ex, style="toy") == (0.0, "9+9+9")
    assert tasks.TASKS["sudoku"].score("3142243142131111", examples()["sudoku"], style="toy")[0] == 7 / 8


# ----------------------------------------------------------------------------- Countdown: each number exactly once
# TinyZero's validate_equation, which d1 copies into its reward and its eval, compares sorted lists of the numbers
# written in the answer and the numbers given: a multiset equality. (numbers, target, expression, full credit)
NUMBER_CHECK = [
    ([30, 100, 93], 23, "30-(100-93)", True),
    ([30, 100, 93], 23, "93 - 100 + 30", True),  # the same multiset in another order
    ([30, 100, 93], 23, "30-(100-93)+30-30", False),  # 30 three times: the same set, not the same multiset
    ([2, 3, 4], 5, "2*4-3", True),
    ([2, 3, 4], 5, "4*2-3", True),
    ([2, 3, 4], 5, "2+3", False),  # 4 left out
    ([2, 3, 4], 5, "2*4-3+4-4", False),  # 4 three times
    ([2, 2, 4], 8, "2*2+4", True),
    ([2, 2, 4], 8, "2*4", False),  # one of the two 2s left out: the same set {2, 4}
    ([9, 9, 9], 90, "9+9*9", True),
    ([9, 9, 9], 90, "9*9+9+9-9", False),  # five 9s for three
]


def countdown_paths(ex, expr, draft=None):
    """{path: (full credit?, the expression that path reads, by d1's rule)} for a Countdown answer; a draft is an
    earlier answer that the final one replaces (an earlier <answer>, \\boxed{} or a second toy line)."""
    cd, truth = tasks.TASKS["countdown"], [ex.nums, ex.target]
    first = f"<answer>\n{draft}\n</answer>\nNo, once more.\n" if draft else ""
    chat = f"<reasoning>\nwork\n</reasoning>\n{first}<answer>\n{expr}\n</answer>"
    work = "\\boxed{" + draft + "}" if draft else "work"
    boxed = f"<reasoning>\n{work}\n</reasoning>\n<answer>\n\\boxed{{{expr}}}\n</answer>"
    toy = expr + "\n" + (draft or "")
    last_tag = re.findall(r"<answer>(.*?)</answer>", chat, re.DOTALL)[-1].strip()
    in_box = d1_last_boxed(boxed)[len("\\boxed{"):-1]  # d1 reads the last \boxed{}
    out = {}
    for quirks in (True, False):
        total = sum(f(chat, ex) for f in cd.reward_funcs("chat", d1_quirks=quirks))
        out[f"chat reward, d1_quirks={quirks}"] = (total == cd.max_reward("chat"), last_tag)
    out["toy reward"] = (cd.reward_funcs("toy")[0](toy, ex) == cd.max_reward("toy"), toy.partition("\n")[0].strip())
    out["toy score"] = (cd.score(toy, ex, style="toy")[0] == 1.0, toy.partition("\n")[0].strip())
    for corrected in (False, True):
        out[f"score, corrected={corrected}"] = (cd.score(boxed, truth, corrected)[0] == 1.0, in_box)
    acc, _ = cd.score_rows([{"question": ex.question, "generation": boxed, "ground_truth": truth}])
    out["score_rows"] = (acc == 100.0, in_box)
    return out


def exact_value(expr):
    """The value of an expression of integers with + - * / // ** (exact fractions; a power with a fractional
    exponent is a float, as in d1's eval), or None: the test's own arithmetic."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and not (abs(a) <= 10**4 and abs(b) <= 64):
                raise ValueError("a power too large for a Countdown target")
            return ops[type(node.op)](a, b)
        raise ValueError(ast.dump(node))

    try:
        return value(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def countdown_valid(expr, nums, target):
    """The expression uses exactly the given numbers (as a multiset) and its value is the target (to TinyZero's
    1e-5: exact for + - * / over three numbers up to 100, whose fractions are at least 1e-4 from any integer)."""
    value = exact_value(expr)
    return (Counter(int(n) for n in re.findall(r"\d+", expr)) == Counter(nums) and value is not None
            and not isinstance(value, complex) and abs(value - target) < 1e-5)


@pytest.mark.parametrize("nums, target, expr, full", NUMBER_CHECK)
def test_countdown_credits_an_expression_only_if_it_uses_each_given_number_exactly_once(nums, target, expr, full):
    ex = tasks.Countdown.make(nums, target)
    assert exact_value(expr) == target  # every case reaches the target: only the numbers decide
    paths = countdown_paths(ex, expr)  # the chat and toy rewards, the toy and d1 scorers, score_rows
    assert {path: full_credit for path, (full_credit, _) in paths.items()} == dict.fromkeys(paths, full)
    chat = f"<answer>{expr}</answer>"
    assert tasks.TASKS["countdown"].countdown_reward(chat, ex) == (1.0 if full else 0.1)  # 0.1: an answer, wrong
    assert tasks.TASKS["countdown"].toy_reward(expr, ex) == (1.0 if full else 0.1)
    assert tasks.TASKS["countdown"].score(f"\\boxed{{{expr}}}", [nums, target]) == (float(full), expr)
    assert d1_parsers.uses_numbers(expr, nums) == full


# ----------------------------------------------------------------------------- full reward implies a valid answer
# For each task, answers that mix right ones, near misses and junk go through every public reward and scorer; any
# that earns the full reward must be valid by the test's own reading of d1's rule. The *_candidate functions take
# `choose(options)`, so that hypothesis draws them and test_property_candidates_... sweeps them with fixed seeds.
PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def drawing(draw):
    return lambda options: draw(st.sampled_from(list(options)))


def assert_full_reward_means_valid(name, ex, paths, count_events=True):
    """Every path that gives full credit read a valid answer (VALID, defined after the four tasks' helpers);
    hypothesis counts the outcomes of each path (pytest --hypothesis-show-statistics)."""
    for path, (full, read) in paths.items():
        if count_events:
            event(f"{path}: {'full' if full else 'short'}")
        assert not full or VALID[name](ex, read), (path, read)


def countdown_solutions(nums, target):
    """Every expression (a o b) o c and a o (b o c) over the numbers, in any order, whose value is the target."""
    out = []
    for a, b, c in itertools.permutations(nums):
        for o1, o2 in itertools.product("+-*/", repeat=2):
            out += [f"({a}{o1}{b}){o2}{c}", f"{a}{o1}({b}{o2}{c})"]
    return [e for e in dict.fromkeys(out) if exact_value(e) == target]


CD_EXAMPLES = [tasks.Countdown.make(n, t) for n, t in [([30, 100, 93], 23), ([2, 2, 4], 8), ([9, 9, 9], 90),
                                                        ([2, 3, 4], 5)]] + tasks.TASKS["countdown"].generate(6, seed=0)
CD_SOLUTIONS = {(tuple(ex.nums), ex.target): countdown_solutions(ex.nums, ex.target) for ex in CD_EXAMPLES}
CD_KINDS = {"solution": True, "duplicated": False, "dropped": False, "digit changed": False, "swapped": False,
            "given numbers in any arrangement": None}  # kind -> full credit on every path (None: either)


def countdown_candidate(ex, kind, choose):
    sol = choose(CD_SOLUTIONS[tuple(ex.nums), ex.target])
    if kind == "solution":
        return sol
    if kind == "duplicated":  # a given number used once more, the value unchanged
        n = choose(ex.nums)
        return sol + choose([f"+{n}-{n}", f"*{n}/{n}"])
    if kind == "dropped":
        return choose([f"{a}{o}{b}" for a, b in itertools.permutations(ex.nums, 2) for o in "+-*/"])
    if kind == "digit changed":
        i = choose([i for i, c in enumerate(sol) if c.isdigit()])
        return sol[:i] + choose([d for d in "0123456789" if d != sol[i]]) + sol[i + 1:]
    if kind == "swapped":  # one number written as another given number
        spans = [m.span() for m in re.finditer(r"\d+", sol)]
        i, j = choose(spans)
        return sol[:i] + choose([str(n) for n in ex.nums if str(n) != sol[i:j]] or ["0"]) + sol[j:]
    tokens = [str(n) for n in ex.nums] + list("+-*/()")
    return "".join(choose(tokens) for _ in range(choose(range(1, 9))))


@st.composite
def countdown_answers(draw):
    choose = drawing(draw)
    ex = choose(CD_EXAMPLES)
    kind = choose(list(CD_KINDS) + ["junk"])
    expr = draw(st.text("0123456789+-*/() ", max_size=14)) if kind == "junk" else countdown_candidate(ex, kind, choose)
    return ex, expr, draw(st.none() | st.sampled_from(CD_SOLUTIONS[tuple(ex.nums), ex.target]))


@PROPERTY
@given(countdown_answers())
def test_countdown_full_reward_only_for_the_given_numbers_reaching_the_target(case):
    ex, expr, draft = case
    assert_full_reward_means_valid("countdown", ex, countdown_paths(ex, expr, draft))


SD_EXAMPLES = [tasks.Sudoku.make("3102200002100320", "3142243142131324"),
               tasks.Sudoku.make("0034300143100040", "2134342143121243")] + tasks.TASKS["sudoku"].generate(6, seed=0)
SD_KINDS = {"solution": True, "given changed": True, "spaced": True, "extended": True, "blank changed": False,
            "cells swapped": False, "another solution": None, "valid grid against one given": None,
            "any valid grid": None, "cut short": None}


def sudoku_candidate(ex, kind, choose):
    sol, blanks = ex.solution, [i for i in range(16) if ex.puzzle[i] == "0"]
    grid = list(sol)
    if kind == "given changed":  # d1 scores the blanks only: a wrong given cell costs nothing
        i = choose([i for i in range(16) if i not in blanks])
        grid[i] = choose([d for d in "1234" if d != sol[i]])
    elif kind == "blank changed":
        i = choose(blanks)
        grid[i] = choose([d for d in "01234" if d != sol[i]])
    elif kind == "cells swapped":
        i, j = choose([(i, j) for i in blanks for j in blanks if sol[i] < sol[j]])
        grid[i], grid[j] = sol[j], sol[i]
    elif kind == "another solution":
        grid = list(choose(d1_parsers.sudoku_solutions(ex.puzzle)))
    elif kind == "valid grid against one given":
        givens = [i for i in range(16) if i not in blanks]
        grid = list(choose([g for g in d1_parsers.SUDOKU_GRIDS if sum(g[i] != sol[i] for i in givens) == 1] or [sol]))
    elif kind == "any valid grid":
        grid = list(choose(d1_parsers.SUDOKU_GRIDS))
    text = "".join(grid)
    if kind == "spaced":
        return " ".join(text[k:k + 4] for k in range(0, 16, 4))
    if kind == "extended":
        return text + choose(["1", "0000", "4321"])
    if kind == "cut short":
        return text[:choose(range(1, 16))]
    return text


def fit16(answer):
    return (answer + "0" * 16)[:16]


def sudoku_paths(ex, answer, draft=None):
    """{path: (full credit?, the 16 digits that path reads, by d1's rule)} for a Sudoku answer."""
    sd = tasks.TASKS["sudoku"]
    first = f"<answer>\n{draft}\n</answer>\nLet me check.\n" if draft else ""
    chat = f"<reasoning>\nwork\n</reasoning>\n{first}<answer>\n{answer}\n</answer><|eot_id|>"
    toy = answer + "\n" + (draft or "")
    tags = re.findall(r"<answer>(.*?)</answer>", chat, re.DOTALL)
    in_tag = fit16("".join(c for c in tags[-1].strip() if c.isdigit()))
    on_line = fit16("".join(c for c in toy.partition("\n")[0] if c.isdigit()))
    out = {"chat reward": (sum(f(chat, ex) for f in sd.reward_funcs("chat")) == sd.max_reward("chat"), in_tag),
           "toy reward": (sd.reward_funcs("toy")[0](toy, ex) == sd.max_reward("toy"), on_line),
           "toy score": (sd.score(toy, ex, style="toy")[0] == 1.0, on_line)}
    for corrected in (False, True):
        out[f"score, corrected={corrected}"] = (sd.score(chat, ex, corrected)[0] == 1.0, fit16(d1_sudoku_answer(chat)))
    acc, _ = sd.score_rows([{"question": ex.question, "generation": chat, "ground_truth": ex.solution}])
    out["score_rows"] = (acc == 100.0, fit16(d1_sudoku_answer(chat)))
    return out


UNITS = ([[4 * r + c for c in range(4)] for r in range(4)] + [[4 * r + c for r in range(4)] for c in range(4)]
         + [[4 * (2 * br + r) + 2 * bc + c for r in range(2) for c in range(2)] for br in range(2) for bc in range(2)])


def completes(puzzle, answer):
    """The puzzle's givens with the answer's digits in its blanks make a valid 4x4 Sudoku (rows, columns, boxes)."""
    grid = [p if p != "0" else a for p, a in zip(puzzle, answer)]
    return all(sorted(grid[i] for i in unit) == list("1234") for unit in UNITS)


@st.composite
def sudoku_answers(draw):
    choose = drawing(draw)
    ex = choose(SD_EXAMPLES)
    kind = choose(list(SD_KINDS) + ["junk"])
    answer = draw(st.text("012345 \n", max_size=20)) if kind == "junk" else sudoku_candidate(ex, kind, choose)
    return ex, answer, draw(st.none() | st.just(ex.solution))


@PROPERTY
@given(sudoku_answers())
def test_sudoku_full_reward_only_for_an_answer_that_completes_the_puzzle(case):
    ex, answer, draft = case
    assert_full_reward_means_valid("sudoku", ex, sudoku_paths(ex, answer, draft))


def test_sudoku_rewards_ignore_the_given_cells_of_an_answer():
    """d1 scores the blanks only (reward_func.py validate_sudoku_solution, eval/sudoku.py): an answer with a wrong
    given cell earns full credit, and its blanks still complete the puzzle."""
    ex = SD_EXAMPLES[0]
    answer = "4" + ex.solution[1:]  # the given 3 in the first cell written as 4
    assert ex.puzzle[0] == "3" and not completes("0" * 16, answer) and completes(ex.puzzle, answer)
    assert {path: full for path, (full, _) in sudoku_paths(ex, answer).items()} == dict.fromkeys(
        sudoku_paths(ex, answer), True)


GSM_EXAMPLES = [tasks.Example(question="q", answer=a) for a in ("18", "72", "7", "1,000", "-3")]
GSM_KINDS = {"answer": True, "digit changed": False, "digit added": False, "sign flipped": False,
             "formatted": None, "then another number": None, "another number then the answer": None}


def gsm8k_candidate(ex, kind, choose):
    a = ex.answer
    other = choose([a + "1", str(int(a.replace(",", "")) + choose([1, -1, 10]))])
    if kind == "digit changed":
        i = choose([i for i, c in enumerate(a) if c.isdigit()])
        return a[:i] + choose([d for d in "0123456789" if d != a[i]]) + a[i + 1:]
    if kind == "digit added":
        return choose(["1" + a.lstrip("-"), a + "0", a + "5"])
    if kind == "sign flipped":
        return a[1:] if a.startswith("-") else "-" + a
    if kind == "formatted":
        return choose([f"${a}", f"{a}.0", f"{a} apples", f"The answer is {a}.", a.replace(",", ""), f" {a} "])
    if kind == "then another number":
        return f"{a}, no, {other}"
    if kind == "another number then the answer":
        return f"{other}, no, {a}"
    return a


def gsm8k_truth(answer, corrected):
    """The ground truth as a number: d1 drops separators and cannot read a minus sign (never correct then)."""
    return None if answer.startswith("-") and not corrected else float(answer.replace(",", ""))


def gsm8k_paths(ex, answer, draft=None):
    """{path: (full credit?, whether the answer that path reads, by d1's rule, equals the ground truth)}."""
    gsm = tasks.TASKS["gsm8k"]
    first = f"<answer>\n{draft}\n</answer>\nWait.\n" if draft else ""
    chat = f"<reasoning>\nwork\n</reasoning>\n{first}<answer>\n{answer}\n</answer>\n"
    boxed = f"<reasoning>\n{draft or ''}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>"
    toy = answer + "\n" + (draft or "")
    xml = chat.split("<answer>")[-1].split("</answer>")[0].strip()  # d1's extract_xml_answer
    out = {"correctness reward": (gsm.correctness_reward(chat, ex) == gsm.correctness_reward.max_value,
                                  xml == ex.answer)}
    total = sum(f(chat, ex) for f in gsm.reward_funcs("chat", d1_quirks=False))  # 4.0 needs d1's quirks off
    out["chat rewards, d1_quirks=False"] = (total == gsm.max_reward("chat"), xml == ex.answer)
    line = toy.partition("\n")[0].strip()
    out["toy reward"] = (gsm.reward_funcs("toy")[0](toy, ex) == gsm.max_reward("toy"), line == ex.answer)
    out["toy score"] = (gsm.score(toy, ex, style="toy")[0] == 1.0, line == ex.answer)
    for text, form in ((chat, "tag"), (boxed, "boxed")):
        for corrected in (False, True):
            read, truth = d1_gsm8k(text, corrected), gsm8k_truth(ex.answer, corrected)
            out[f"score {form}, corrected={corrected}"] = (gsm.score(text, ex, corrected)[0] == 1.0,
                                                          read is not None and read == truth)
        acc, _ = gsm.score_rows([{"question": ex.question, "generation": text, "ground_truth": ex.answer}])
        read = d1_gsm8k(text)
        out[f"score_rows {form}"] = (acc == 100.0, read is not None and read == gsm8k_truth(ex.answer, False))
    return out


@st.composite
def gsm8k_answers(draw):
    choose = drawing(draw)
    ex = choose(GSM_EXAMPLES)
    kind = choose(list(GSM_KINDS) + ["junk"])
    answer = draw(st.text("0123456789,.-$ ab", max_size=10)) if kind == "junk" else gsm8k_candidate(ex, kind, choose)
    return ex, answer, draw(st.none() | st.just(ex.answer))


@PROPERTY
@given(gsm8k_answers())
def test_gsm8k_full_reward_only_for_the_ground_truth(case):
    ex, answer, draft = case
    assert_full_reward_means_valid("gsm8k", ex, gsm8k_paths(ex, answer, draft))


MATH_EXAMPLES = [  # (example, forms equivalent to its answer under d1's normalisation)
    (tasks.Example(question="q", answer="\\frac{1}{2}", rationale="so \\boxed{\\frac12}."),
     ["\\frac{1}{2}", "\\frac12", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "1/2", "0.5"]),
    (tasks.Example(question="q", answer="5", rationale="\\boxed{5}"), ["5", "x = 5", " 5 ", "5^\\circ"]),
    (tasks.Example(question="q", answer="(3,4)", rationale="thus \\boxed{(3, 4)}"),
     ["(3,4)", "(3, 4)", "\\left( 3, 4 \\right)"]),
    (tasks.Example(question="q", answer="10", rationale="\\boxed{10^\\circ}"), ["10", "10^\\circ", "10^{\\circ}"]),
]
MATH_KINDS = {"equivalent form": True, "digit changed": False, "another problem's answer": False}


def math_candidate(case, kind, choose):
    ex, forms = case
    form = choose(forms)
    if kind == "digit changed":
        i = choose([i for i, c in enumerate(form) if c.isdigit()])
        return form[:i] + choose([d for d in "0123456789" if d != form[i]]) + form[i + 1:]
    if kind == "another problem's answer":
        return choose([e.answer for e, _ in MATH_EXAMPLES if e is not ex])
    return form


def d1_math_answer(s, fallback):
    """d1's remove_boxed(last_boxed_only_string(s)); nothing boxed: s (the reward) or the first <answer> (eval)."""
    b = d1_last_boxed(s)
    inner = b[7:-1] if b and b.startswith("\\boxed{") and b.endswith("}") else None
    if inner or fallback == "reward":
        return inner if inner is not None else s
    m = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)
    return m.group(1).strip() if m else inner


def math_paths(ex, answer, boxed=True, draft=None):
    """{path: (full credit?, the answer that path reads, by d1's rule)} for a MATH500 answer."""
    math = tasks.TASKS["math500"]
    work = f"first \\boxed{{{draft}}}" if draft else "work"
    final = f"\\boxed{{{answer}}}" if boxed else answer
    chat = f"<reasoning>\n{work}\n</reasoning>\n<answer>\n{final}\n</answer>"
    toy = answer + "\n" + (draft or "")
    out = {"correctness reward": (math.correctness_reward_math(chat, ex) == math.correctness_reward_math.max_value,
                                  d1_math_answer(chat, "reward"))}
    total = sum(f(chat, ex) for f in math.reward_funcs("chat", d1_quirks=False))  # 3.0 needs d1's quirks off
    out["chat rewards, d1_quirks=False"] = (total == math.max_reward("chat"), d1_math_answer(chat, "reward"))
    out["toy reward"] = (math.reward_funcs("toy")[0](toy, ex) == math.max_reward("toy"), toy.partition("\n")[0].strip())
    out["toy score"] = (math.score(toy, ex, style="toy")[0] == 1.0, toy.partition("\n")[0].strip())
    out["score"] = (math.score(chat, ex.answer)[0] == 1.0, d1_math_answer(chat, "eval"))
    acc, _ = math.score_rows([{"question": ex.question, "generation": chat, "ground_truth": ex.answer}])
    out["score_rows"] = (acc == 100.0, d1_math_answer(chat, "eval"))
    return out


@st.composite
def math_answers(draw):
    choose = drawing(draw)
    case = choose(MATH_EXAMPLES)
    kind = choose(list(MATH_KINDS) + ["junk"])
    answer = draw(st.text("0123456789\\{}frac/., ()x=", max_size=12)) if kind == "junk" else math_candidate(
        case, kind, choose)
    return case[0], answer, draw(st.booleans()), draw(st.none() | st.sampled_from(case[1]))


@PROPERTY
@given(math_answers())
def test_math500_full_reward_only_for_an_answer_equivalent_to_the_ground_truth(case):
    ex, answer, boxed, draft = case
    assert_full_reward_means_valid("math500", ex, math_paths(ex, answer, boxed, draft))


VALID = {"countdown": lambda ex, expr: countdown_valid(expr, ex.nums, ex.target),
         "sudoku": lambda ex, digits: completes(ex.puzzle, digits),
         "gsm8k": lambda ex, equal: equal,  # gsm8k_paths compares as it reads
         "math500": lambda ex, answer: d1_parsers.is_equiv(answer, ex.answer)}


def sweep(name):
    """(example, kind, expected full credit or None, paths) for each candidate kind of a task, with fixed seeds,
    without and with a right draft before it (where the expectation is None: d1 reads some drafts)."""
    for seed, with_draft in itertools.product(range(4), (False, True)):
        choose = random.Random(seed).choice
        if name == "countdown":
            for ex, kind in itertools.product(CD_EXAMPLES, CD_KINDS):
                draft = CD_SOLUTIONS[tuple(ex.nums), ex.target][0] if with_draft else None
                paths = countdown_paths(ex, countdown_candidate(ex, kind, choose), draft)
                yield ex, kind, None if with_draft else CD_KINDS[kind], paths
        elif name == "sudoku":
            for ex, kind in itertools.product(SD_EXAMPLES, SD_KINDS):
                paths = sudoku_paths(ex, sudoku_candidate(ex, kind, choose), ex.solution if with_draft else None)
                yield ex, kind, None if with_draft else SD_KINDS[kind], paths
        elif name == "gsm8k":
            for ex, kind in itertools.product(GSM_EXAMPLES, GSM_KINDS):
                expected = GSM_KINDS[kind] if kind != "answer" or ex.answer.isdigit() else None  # d1's quirks
                paths = gsm8k_paths(ex, gsm8k_candidate(ex, kind, choose), ex.answer if with_draft else None)
                yield ex, kind, None if with_draft else expected, paths
        else:
            for (ex, forms), kind in itertools.product(MATH_EXAMPLES, MATH_KINDS):
                draft = forms[0] if with_draft else None
                paths = math_paths(ex, math_candidate((ex, forms), kind, choose), True, draft)
                yield ex, kind, None if with_draft else MATH_KINDS[kind], paths


@pytest.mark.parametrize("name", NAMES)
def test_property_candidates_earn_full_reward_and_fall_short_as_labelled(name):
    """A deterministic sweep of the property tests' candidates: right answers earn full credit on every path and
    near misses on none, every path sees both outcomes, and full credit always goes to a valid answer."""
    outcomes = {}
    for ex, kind, expected, paths in sweep(name):
        assert_full_reward_means_valid(name, ex, paths, count_events=False)
        for path, (full, _) in paths.items():
            outcomes.setdefault(path, set()).add(full)
            assert expected is None or full == expected, (kind, path)
    assert outcomes and all(seen == {True, False} for seen in outcomes.values()), outcomes


def test_countdown_near_misses_include_the_given_set_of_numbers_in_another_multiset():
    """So that a number check comparing sets instead of multisets gives some near miss full credit."""
    def numbers(expr):
        return [int(n) for n in re.findall(r"\d+", expr)]

    near = [(ex, paths["score, corrected=False"][1]) for ex, _, expected, paths in sweep("countdown")
            if expected is False]
    assert any(set(numbers(e)) == set(ex.nums) and Counter(numbers(e)) != Counter(ex.nums)
               and exact_value(e) == ex.target for ex, e in near)


# ----------------------------------------------------------------------------- Chains: the toy analogue of GSM8K
def chain_value(question):
    """The asked-for value, worked out from the definitions, in any order, by repeated substitution."""
    defs = dict(d.split("=") for d in question.split(" ")[:-1])
    values = {}
    while len(values) < len(defs):
        for name, expr in defs.items():
            if expr.isdigit():
                values[name] = int(expr)
            elif expr[0] in values:
                values[name] = values[expr[0]] + int(expr[1:])  # "+3" or "-3"
    return values[question.split("?")[1]]


def test_chains_problems_have_the_worked_steps_and_answer_their_definitions_give():
    chains = tasks.TASKS["chains"]
    train, test = chains.generate(500, seed=0), chains.generate(200, seed=0, split="test")
    assert not {ex.question for ex in train} & {ex.question for ex in test}  # a hash splits the problems
    assert all(tasks.in_test(ex.question) for ex in test) and len({ex.question for ex in train}) == 500
    assert [ex.question for ex in chains.generate(5, seed=0)] == [ex.question for ex in train[:5]]  # seeded
    for ex in train + test:
        assert ex.answer == str(chain_value(ex.question))
        names = [d[0] for d in ex.question.split(" ")[:-1]]
        assert len(names) == len(set(names)) == 5  # 4 in the chain, 1 unneeded
        steps = ex.rationale.split(" ")
        assert len(steps) == 4 and steps[-1].endswith(f"={ex.answer}")
        for step in steps:  # "q=x+3=4+3=7": the definition, its values, the result, all in 0..9
            name, *rest = step.split("=")
            assert f"{name}={rest[0]}" in ex.question.split(" ")
            if len(rest) == 3:
                assert eval(rest[1]) == int(rest[2]) and 0 <= int(rest[2]) <= 9  # noqa: S307 (our own digits)
        assert len(chains.target(ex, "toy")) >= 32  # reasoning, then the answer
    longer = chains.generate(50, seed=1, length=6, distractors=3)
    assert all(len(ex.rationale.split(" ")) == 6 and ex.answer == str(chain_value(ex.question)) for ex in longer)
    ordered = chains.generate(50, seed=1, order="chain")  # the chain's order, then the unneeded quantity
    for ex in ordered:
        listed = [d.split("=")[0] for d in ex.question.split(" ")[:-1]]
        assert listed[:4] == [step[0] for step in ex.rationale.split(" ")] and ex.answer == str(chain_value(ex.question))
    interleaved = chains.generate(200, seed=1, order="interleaved", distractors=2)  # unneeded ones among the chain
    places = []
    for ex in interleaved:
        listed = [d.split("=") for d in ex.question.split(" ")[:-1]]
        chain = [step[0] for step in ex.rationale.split(" ")]
        assert [name for name, _ in listed if name in chain] == chain and ex.answer == str(chain_value(ex.question))
        names = [name for name, _ in listed]
        for i, (name, expr) in enumerate(listed):  # each defined after what it is defined from
            assert name == chain[0] or names.index(expr[0]) < i
        places += [i for i, (name, _) in enumerate(listed) if name not in chain]
    assert set(places) == {1, 2, 3, 4, 5}  # anywhere after the first quantity, not only at the end
    with pytest.raises(ValueError, match="unknown order 'sorted' of a Chains problem's definitions"):
        chains.generate(5, seed=0, order="sorted")  # not silently the chain's order


def test_chains_rewards_by_hand():
    chains = tasks.TASKS["chains"]
    ex = tasks.Example(question="q=x+3 d=m-2 x=4 k=x+5 m=q+1 ?d", answer="6",
                       rationale="x=4 q=x+3=4+3=7 m=q+1=7+1=8 d=m-2=8-2=6")
    assert chains.prompt(ex, "toy") == "chains q=x+3 d=m-2 x=4 k=x+5 m=q+1 ?d\n"
    assert chains.prompt(ex).endswith("</answer>\n\n\nEach letter stands for a number: q=x+3 d=m-2 x=4 k=x+5 "
                                      "m=q+1. What is d?")
    rewards = chains.reward_funcs("toy")
    assert [f.__name__ for f in rewards] == ["chains_correctness", "chains_int", "chains_format"]

    def r(text):
        return [f(text, ex) for f in rewards]
    good = "x=4 q=x+3=4+3=7 m=q+1=7+1=8 d=m-2=8-2=6 #### 6"
    assert chains.target(ex, "toy") == good and r(good) == [2.0, 0.5, 0.5] and chains.max_reward("toy") == 3.0
    assert r(good + "\nmore lines") == [2.0, 0.5, 0.5] and r(good + "<|eot_id|><|endoftext|>") == [2.0, 0.5, 0.5]
    assert r("x=4 q=x+3=4+3=7 #### 7") == [0.0, 0.5, 0.5]  # well laid out, wrong
    assert r("#### 6") == [2.0, 0.5, 0.0]  # right, with no steps
    assert r("d=6 #### 6 #### 5") == [0.0, 0.5, 0.0]  # the last '####' counts
    assert r("x=4 q=7 ####6") == [2.0, 0.5, 0.0] and r("x=4 q=7 #### six") == [0.0, 0.0, 0.0]
    assert r("x=4 q=7 ## 6") == [0.0, 0.0, 0.0] and r("") == [0.0, 0.0, 0.0]
    assert r("X=4 #### 6") == [2.0, 0.5, 0.0] and r("x=4  #### 6") == [2.0, 0.5, 0.0]  # layout: one space, a-z
    assert r("x=4 #### \u0666") == [0.0, 0.0, 0.0]  # an Arabic-Indic six is not the answer
    assert chains.score(good, ex, style="toy") == (1.0, good)
    assert chains.score("#### 5", ex, style="toy") == (0.0, "#### 5")
    chat = "<reasoning>\nx=4 q=7 m=8 d=6\n</reasoning>\n<answer>\n6\n</answer>"
    assert chains.score(chat, ex) == (1.0, 6.0) and chains.score(chat.replace("6\n<", "5\n<"), ex)[0] == 0.0


def test_the_toy_s1k_is_worked_solutions_of_other_problems_in_the_same_answer_structure():
    s1k, chains = tasks.TASKS["toy-s1k"], tasks.TASKS["chains"]
    problems = s1k.generate(1000, seed=0)
    kinds = Counter(ex.question.split(" ")[0] for ex in problems)
    assert set(kinds) == {"walk", "tally"} and min(kinds.values()) > 400
    for ex in problems:
        words = ex.question.split(" ")
        if words[0] == "walk":  # follow the arrows from the start letter, the given number of times
            arrows, here = dict(w.split(">") for w in words[1:-3]), words[-2]
            assert len(arrows) == len(words) - 4  # one arrow out of a letter at most: the walk is determined
            for _ in range(int(words[-1])):
                here = arrows[here]
        else:
            here = str(eval("".join(words[1:])))  # noqa: S307 (our own digits and signs)
            assert all(0 <= int(step.split("=")[1]) <= 9 for step in ex.rationale.split(" "))
        assert ex.answer == here and 3 <= len(ex.rationale.split(" ")) <= 6
        target = s1k.target(ex, "toy")
        assert [f(target, ex) for f in s1k.reward_funcs("toy")] == [2.0, 0.5] == [f.max_value for f in
                                                                                s1k.reward_funcs("toy")]
        assert s1k.prompt(ex, "toy") == ex.question + "\n" and target.endswith(f" #### {ex.answer}")
    assert not {s1k.prompt(ex, "toy") for ex in problems} & {chains.prompt(ex, "toy") for ex in chains.generate(
        1000, seed=0)}  # none is a Chains problem
    rng = random.Random(0)
    for hops in range(1, 7):  # an ordered walk: the path's arrows first, in order, then the unneeded one
        ex = s1k.walk(rng, hops, 1, ordered=True)
        assert ex.question.startswith(f"walk {ex.rationale} ") and ex.question.endswith(f" {hops}")
    direct = tasks.Example(question="b=a+3 a=4 ?b", answer="7")  # an answer without steps
    assert chains.target(direct, "toy") == "#### 7" and chains.score("#### 7", direct, style="toy")[0] == 1.0


# ----------------------------------------------------------------------------- CLI
def test_cli_score_prints_d1s_accuracy_and_writes_per_item_results(tmp_path, capsys, data):
    out = tmp_path / "scored.jsonl"
    gen = DATA / "d1_generations"
    tasks.main(["score", "--task", "sudoku", "--file", str(gen / "sudoku_256.jsonl"), "--out", str(out)])
    assert capsys.readouterr().out.startswith("sudoku: 6.69")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 256 and {"score", "extracted", "correct_cells", "empty_cells"} <= set(lines[0])
    proc = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "score", "--task", "countdown", "--file",
                           str(gen / "countdown_256.jsonl")], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("countdown: 19.53")


def test_cli_show_prints_n_examples_in_both_styles(capsys):
    tasks.main(["show", "--task", "sudoku", "-n", "3"])
    out = capsys.readouterr().out
    assert out.count("=== sudoku example") == 3 and "'sudoku " in out and "Solve the following Sudoku puzzle" in out
    tasks.main(["show", "--task", "chains", "-n", "2"])
    out = capsys.readouterr().out
    assert out.count("=== chains example") == 2 and "'chains " in out and " #### " in out and "<reasoning>" in out


def test_importing_tasks_loads_no_numeric_library():
    code = "import sys, tasks; assert not {'torch', 'numpy', 'pandas'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_d1_parsers_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "d1_parsers.py").read_text(encoding="utf-8"))
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= sys.stdlib_module_names, modules


def test_tasks_offers_the_parsers_that_other_scripts_call_through_it():
    for name in ("safe_eval", "is_equiv", "last_boxed_only_string", "remove_boxed", "sudoku_solutions", "SUDOKU_GRIDS"):
        assert getattr(tasks, name) is getattr(d1_parsers, name), name
    assert len(tasks.SUDOKU_TEST_GRIDS) == 48 and tasks.SUDOKU_TEST_GRIDS <= set(d1_parsers.SUDOKU_GRIDS)
