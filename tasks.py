"""The four benchmarks of d1: GSM8K, MATH500, Countdown and Sudoku (data, prompts, rewards, scoring),
and Chains, a generated toy analogue of GSM8K whose answers are worked steps.

d1 (Zhao et al. 2025, arXiv 2504.12216) evaluates on these tasks (Sec. 4) and trains one
diffu-GRPO model per task with rule-based rewards (Sec. 3.2 and the appendix). The paper only
describes the rewards and parsers; every exact behaviour here (prompt texts, regexes,
normalisation, quirks) comes from the official code: diffu-grpo/reward_func.py, data_utils.py,
math500_utils.py and eval/{gsm8k,math500,countdown,sudoku}.py, parse_and_get_acc.py,
parser_helper.py. d1's answer extraction and normalisation (linear-time forms of its regexes, MATH
normalisation, Countdown's arithmetic and number check, the Sudoku grids and answer patterns) are
in d1_parsers.py; the task classes here call them by name. Both files are pure standard library,
so that every other script and the tests import them cheaply. Model output is untrusted input:
nothing here evals it, and no scorer or reward raises or backtracks badly on any string.

Usage
    python tasks.py score --task gsm8k --file generations.jsonl [--out scored.jsonl] [--corrected]
    python tasks.py show --task sudoku -n 3 [--file data.csv]
    python tasks.py download --task gsm8k --split test --dest data/gsm8k    (needs internet)

Interface: TASKS / get_task(name) -> a task with
    load(path, split)              Examples from a local file (or folder); `download` knows the source
    generate(n, seed, split)       Sudoku, Countdown and Chains only: seeded, reproducible
    prompt(ex, style), target(ex, style)
    reward_funcs(style, d1_quirks=True), max_reward(style)
                                   the rewards: named methods f(completion, example) -> float
    score(generation, truth, corrected=False, question=None, style="chat") -> (score, extracted)
    score_rows(rows, corrected)   (accuracy %, per-row results) for d1's generation files;
                                   Sudoku.cells() gives d1's per-item correct/empty counts

Prompt styles
    chat       the user message of d1's RL prompt: system prompt + instruction + question.
               The caller applies LLaDA's chat template (no special tokens here).
    chat_eval  the user message of d1's evaluation prompt (asks for \\boxed{}); d1 then pre-fills
               the assistant turn with EVAL_PREFILL = "<reasoning>" after the template.
    toy        a few ASCII bytes for a byte-level toy model, answered on one line:
               "sudoku 3102200002100320\\n" -> "3142243142131324"
               "countdown 30 100 93 -> 23\\n" -> "30-100+93"
               "gsm8k <question>\\n" -> "72"          "math <problem>\\n" -> "\\frac{1}{2}"
               "chains b=a+3 a=4 ?b\\n" -> "a=4 b=a+3=4+3=7 #### 7" (worked steps, then the answer)

Layout: prompts and Example; Task and the four task classes (each docstring gives the data source,
the rewards with their values and d1's scoring), then Chains; TASKS; the generators' test split and Countdown
solver; then the CLI.

d1 quirks kept (comments mark them): GSM8K takes the first \\boxed{} holding a number, reads
"1,000" as 1 and drops the sign of negative ground truths; its format regexes lack re.DOTALL,
so the soft format never matches "<reasoning>\\n..."; xml-count charges trailing text twice;
MATH's format reward looks for a backspace ("\\b"), and with nothing boxed the whole generation
is compared; Countdown falls back to the whole generation and accepts ** // and decimals;
Sudoku takes the first of five patterns, pads/truncates to 16 and reports cell accuracy.

Deliberate departures from d1's code (its verdicts are kept unless noted)
 1. Countdown expressions are parsed with `ast` and evaluated over numbers with + - * / // **
    only (d1 evals anything its character filter lets through). A power whose result would
    exceed 2**10000 counts as "could not evaluate": d1 hangs on it (`9**9**9`) or gets a
    number that cannot equal a Countdown target. Expressions nested over ~2900 levels deep
    may fail here where CPython's eval still copes (d1_parsers.safe_eval).
 2. d1's regexes that backtrack quadratically on long strings (`<answer>(.*?)</answer>`,
    `\\boxed{(.*?)}`, the soft-format and Sudoku patterns) are re-expressed as linear scans
    with identical matches (in d1_parsers.py); tests/test_tasks.py checks them against the
    original regexes.
 3. Rewards first drop LLaDA's special tokens (`<|eot_id|>`...), since d1 decodes completions
    with skip_special_tokens=True; the scorers see the raw text, as d1's evaluation does.
 4. `corrected=True` gives a fixed verdict where d1's is demonstrably wrong: Sudoku scores the
    answer against the valid solution of the puzzle that it matches best (124 of the 500 test
    puzzles have several; d1 lists one); GSM8K removes thousands separators and keeps the sign
    of ground truths; Countdown allows only + - * / on integers, as the task says. MATH500 has
    no correction.
 5. `reward_funcs(style, d1_quirks=False)` fixes two reward bugs that d1 keeps by default:
    the missing re.DOTALL (later upstream commits add it) and the backspace in "\\boxed".
 6. d1's training files for Sudoku and Countdown are not public in usable form, so both have
    seeded generators; Sudoku holds out whole solution grids (every 6th of the 288).
 7. The xml-count reward is d1's, so it can be negative (-0.001 per character after the
    closing tag); every other reward lies in [0, its maximum].
"""
import argparse
import csv
import itertools
import json
import operator
import random
import re
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from d1_parsers import (NUMBER, SUDOKU_GRIDS, answer_tags, boxed_groups, count_xml, equation_lhs, first_between,
                        fit16, grids_mask, hits_target, is_equiv, is_int_arithmetic, last_boxed_only_string,
                        remove_boxed, safe_eval, soft_format, strict_format, sudoku_d1_answer, sudoku_solutions,
                        uses_numbers, xml_answer)

# ----------------------------------------------------------------------------- prompts (d1 code)
XML_SYSTEM_PROMPT = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
_XML_EXAMPLE = ("Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
                "<answer>\n\\boxed{...}\n</answer>")
_MATH_EXPERT = ("You are a math expert. You will be given a question to solve. Solve it step by step. "
                "Wrap the final answer in a \\boxed{}.")
GSM_EVAL_PROMPT = _MATH_EXPERT + " \n" + _XML_EXAMPLE
MATH_EVAL_PROMPT = _MATH_EXPERT + "\n" + _XML_EXAMPLE + '" \n'  # sic: d1's prompt has a stray quote
COUNTDOWN_EVAL_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the provided "
    "target number. You may use the operations +, -, *, and / as needed, but each number must be used exactly "
    "once. Think step-by-step. After reasoning, provide only your final expression inside \\boxed{} tags without "
    "including an equals sign or the target number. For example: \\boxed{a + b * c}" + _XML_EXAMPLE)
SUDOKU_SYSTEM_PROMPT = (
    "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading "
    "left-to-right, top-to-bottom, where '0' represents empty cells.\n\nRules:\n- Fill empty cells with digits 1-4\n"
    "- Each row must contain digits 1-4 exactly once\n- Each column must contain digits 1-4 exactly once\n"
    "- Each 2x2 box must contain digits 1-4 exactly once\n\nImportant: Your solution must be a COMPLETE "
    "16-character string with only the digits 1-4, representing your final solved grid.\n\nRespond in this exact "
    "format:\n<reasoning>\nYour step-by-step solving process\n</reasoning>\n<answer>\n"
    "[16-character solution string with no spaces or separators]\n</answer>\n")
EVAL_PREFILL = "<reasoning>"
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")  # <|eot_id|>, <|endoftext|>, <|mdm_mask|>, ...


@dataclass
class Example:
    question: str  # the question as d1 poses it (the `question` field of its generation files)
    answer: object  # what score() takes: GSM8K the '####' text, MATH the answer, Countdown
    #                 [nums, target], Sudoku the solution
    rationale: str | None = None  # worked solution (GSM8K, MATH)
    nums: list | None = None  # Countdown
    target: int | None = None  # Countdown
    puzzle: str | None = None  # Sudoku, '0' = blank
    solution: str | None = None  # Sudoku
    expression: str | None = None  # Countdown: a known solving expression (generator)


# ----------------------------------------------------------------------------- the tasks (d1 Sec. 4)
def _reward(max_value, min_value=0.0):
    """Tag a reward method with its range (the fuzz tests check it). Used in the class bodies below,
    so it must stay above them."""
    def tag(f):
        f.max_value, f.min_value = max_value, min_value
        return f
    return tag


def _decoded(completion):
    """A completion as d1's rewards see it: LLaDA's special tokens dropped (skip_special_tokens=True)."""
    return _SPECIAL.sub("", completion)


def _toy_line(completion):
    """The answer of a toy completion: its first line, special tokens dropped."""
    return _decoded(completion).partition("\n")[0].strip()


def _xml(reasoning, answer):
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def _attempts(n):
    """Draws for a generator of n distinct items; raises instead of looping forever."""
    yield from range(1000 * n + 100_000)  # the caller returns once it has n (Countdown test: ~1 in 100)
    raise ValueError(f"could not draw {n} distinct examples; ask for fewer")


class Task:
    """Shared plumbing; subclasses define data rows, prompts, rewards and the d1 scorer.

    A reward is a method f(completion, example) -> float tagged with its range by _reward; the chat
    styles use d1's rewards, listed by name in `chat_rewards`, the toy style `toy_reward`. d1_quirks
    (True for TASKS) keeps d1's two reward bugs; False fixes them (departure 5 above)."""
    name = toy_tag = ""
    files = {}  # split -> file name in a data folder
    sources = {}  # split -> public URL of that file
    eval_prompt = ""
    chat_rewards = ()  # names of d1's reward methods, in d1's order
    toy_rewards = ("toy_reward",)  # names of the toy style's reward methods
    # a toy model's sampler for this task's answers: the defaults of sft.py and diffu_grpo.py --task NAME
    # (and the answer length SFT pads to), and reproduce.py's
    toy_sampler = dict(gen_length=16, block_length=16, diffusion_steps=16)

    def __init__(self, d1_quirks=True):
        self.d1_quirks = d1_quirks

    # --- data
    def load(self, path, split="test"):
        """Examples from a local file (or a folder holding `files[split]`); errors name the line."""
        path = Path(path)
        if path.is_dir():
            if split not in self.files:
                raise ValueError(f"{self.name}: no {split!r} split; known: {sorted(self.files)}")
            path = path / self.files[split]
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: no data file at {path} (tasks.download fetches it)")
        examples = []
        for lineno, row in self._rows(path):
            try:
                ex = self._example(row)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                raise ValueError(f"{path}:{lineno}: malformed {self.name} row ({e!r})") from None
            if ex is not None:
                examples.append(ex)
        if not examples:
            raise ValueError(f"{path}: empty file, no {self.name} examples")
        return examples

    def _rows(self, path):  # JSON Lines; Sudoku overrides for CSV
        return read_jsonl(path)

    def download(self, split, dest):
        """Fetch the public copy of a split into folder `dest` (needs internet; not used by tests)."""
        if split not in self.sources:
            raise ValueError(f"{self.name}: no public source for {split!r}; known: {sorted(self.sources)}")
        out = Path(dest) / self.files[split]
        out.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(self.sources[split], timeout=60) as r:
            out.write_bytes(r.read())
        return out

    # --- prompts and targets
    def prompt(self, ex, style="chat"):
        if style == "chat":
            return self._chat(ex)
        if style == "chat_eval":  # d1 eval: system prompt + "\n\n" + question, then EVAL_PREFILL
            return self.eval_prompt + "\n\n" + ex.question
        if style == "toy":
            return self._toy(ex)
        raise ValueError(f"unknown prompt style {style!r}; known: chat, chat_eval, toy")

    def target(self, ex, style="chat"):
        """Reference answer text for SFT: the worked solution in d1's XML format, or the toy answer."""
        if style == "toy":
            return self._toy_target(ex)
        if style in ("chat", "chat_eval"):
            return self._chat_target(ex)
        raise ValueError(f"unknown style {style!r}")

    def _toy(self, ex):
        return f"{self.toy_tag} {ex.question}\n"

    def _toy_target(self, ex):
        return ex.answer

    def _chat_target(self, ex):
        return _xml(ex.rationale or "", ex.answer)

    # --- rewards
    def reward_funcs(self, style="chat", d1_quirks=True):
        """Named rewards f(completion, example) -> float, summed by diffu-GRPO: for the chat styles
        d1's own, bound to a task with the asked-for d1_quirks; for the toy style toy_reward."""
        if not style.startswith("chat"):
            return [getattr(self, name) for name in self.toy_rewards]
        task = self if self.d1_quirks == d1_quirks else type(self)(d1_quirks=d1_quirks)
        return [getattr(task, name) for name in task.chat_rewards]

    def max_reward(self, style="chat"):
        """Sum of the rewards' maxima (d1's nominal 4.0 for GSM8K, 3.0 for MATH). With d1's quirks
        the reachable maxima are 3.5 (soft and strict format exclude each other) and 2.75."""
        return sum(f.max_value for f in self.reward_funcs(style))

    # --- evaluation
    def score(self, generation, truth, corrected=False, question=None, style="chat"):
        """(score, extracted answer): d1's verdict (eval/parse_and_get_acc.py) on a chat-style answer;
        `truth` is an Example or the ground truth as in d1's files. style="toy" scores a toy answer
        (its first line) against an Example: 1.0 or 0.0, Sudoku the fraction of blanks right."""
        if style == "toy":
            return self._toy_score(generation, truth), _toy_line(generation)
        return self._d1_score(generation, truth, corrected, question)

    def _toy_score(self, generation, ex):
        return self.toy_reward(generation, ex)

    def score_rows(self, rows, corrected=False):
        """Score rows with question/generation/ground_truth; returns (accuracy %, per-row dicts). A row
        with "style": "toy" (sample.py's evaluation of a toy model) is scored as a toy answer."""
        out = [dict(zip(("score", "extracted"), self.score_record(r, corrected))) for r in rows]
        return 100.0 * sum(o["score"] for o in out) / max(len(out), 1), out

    def score_record(self, r, corrected=False):
        if r.get("style") == "toy":
            return self.score(r["generation"], self.from_record(r), style="toy")
        return self.score(r["generation"], r["ground_truth"], corrected, r.get("question"))

    def record(self, ex):
        """The fields of a generations record that stand for an example (d1's files: question, ground_truth)."""
        return dict(question=ex.question, ground_truth=ex.answer)

    def from_record(self, r):
        """The Example a generations record stands for."""
        return Example(question=r.get("question") or "", answer=r["ground_truth"])


class GSM8K(Task):
    """GSM8K: grade-school maths word problems with a whole-number answer (d1 Sec. 4).

    Data: OpenAI's GSM8K train and test files (`sources`). The answer is the text after '####'
    (d1's ground truth), the rationale the worked solution without its <<calculator>> notes.
    Rewards (d1's diffu-grpo/reward_func.py; nominal maximum 4.0):
      xmlcount_reward        0.125 for each of the four tags with its newlines, less 0.001 per
                             character after </answer>, charged twice (can go negative)    max 0.5
      soft_format_reward     0.5 for "<reasoning>...</reasoning> <answer>...</answer>"           0.5
      strict_format_reward   0.5 for exactly XML_SYSTEM_PROMPT's line layout                     0.5
      int_reward             0.5 if the last <answer>'s text is all digits                       0.5
      correctness_reward     2.0 if that text equals the '####' answer as a string               2.0
    d1 quirk (d1_quirks=True): both format regexes lack re.DOTALL, so the soft format never matches
    a multi-line reasoning, the two exclude each other, and 3.5 is the most a completion gets.
    Scoring (eval/gsm8k.py, parse_and_get_acc.py): the first \\boxed{} that holds a number, else the
    last number in the first <answer>, compared as a float with the '####' answer. d1 quirks kept:
    "1,000" reads as 1 and negative ground truths never match; corrected=True fixes both.
    toy_reward: 1.0 if the first line is the answer.
    """
    name, toy_tag, eval_prompt = "gsm8k", "gsm8k", GSM_EVAL_PROMPT
    files = {"train": "train.jsonl", "test": "test.jsonl"}
    _gh = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/"
    sources = {"train": _gh + "train.jsonl", "test": _gh + "test.jsonl"}
    chat_rewards = ("xmlcount_reward", "soft_format_reward", "strict_format_reward", "int_reward",
                    "correctness_reward")

    def _example(self, row):
        parts = row["answer"].split("####")
        if len(parts) < 2:
            raise ValueError("answer has no '####' line")
        rationale = re.sub(r"<<[^>]*>>", "", parts[0]).strip()  # drop calculator annotations
        return Example(question=row["question"], answer=parts[1].strip(), rationale=rationale)  # d1's hash answer

    def _chat(self, ex):
        return XML_SYSTEM_PROMPT + "\n\n" + ex.question

    # --- rewards
    @_reward(0.5, min_value=float("-inf"))
    def xmlcount_reward(self, completion, ex):
        return count_xml(_decoded(completion))

    @_reward(0.5)
    def soft_format_reward(self, completion, ex):
        # d1 quirk: no re.DOTALL, so multi-line reasoning never matches
        return 0.5 if soft_format(_decoded(completion), dotall=not self.d1_quirks) else 0.0

    @_reward(0.5)
    def strict_format_reward(self, completion, ex):
        return 0.5 if strict_format(_decoded(completion), dotall=not self.d1_quirks) else 0.0  # d1 quirk, as above

    @_reward(0.5)
    def int_reward(self, completion, ex):
        return 0.5 if xml_answer(_decoded(completion)).isdigit() else 0.0

    @_reward(2.0)
    def correctness_reward(self, completion, ex):  # exact string match with the '####' answer
        return 2.0 if xml_answer(_decoded(completion)) == ex.answer else 0.0

    @_reward(1.0)
    def toy_reward(self, completion, ex):
        return 1.0 if _toy_line(completion) == ex.answer else 0.0

    # --- d1's scorer
    @staticmethod
    def truth(gt, corrected=False):
        """d1's float ground truth; its regex has no minus sign, so negative answers become None."""
        if gt is None or isinstance(gt, (int, float)):
            return None if gt is None else float(gt)
        m = re.search(r"####\s*\$?(-?[\d,]+(?:\.\d+)?)" if corrected else r"####\s*\$?([\d,]+(?:\.\d+)?)", "####" + gt)
        return float(m.group(1).replace(",", "")) if m else None

    @staticmethod
    def _number(text, last, corrected):
        text = text.replace(",", "") if corrected else text  # d1 reads "1,000" as 1
        try:
            return float(text)
        except ValueError:
            nums = NUMBER.findall(text)
            return float(nums[-1 if last else 0]) if nums else None

    def extract(self, generation, corrected=False):
        """d1: the first \\boxed{} holding a number, else the last number in the first <answer>."""
        for content in boxed_groups(generation):
            content = content.strip()
            if content and content.strip(".") and (value := self._number(content, False, corrected)) is not None:
                return value
        text = first_between(generation, "<answer>", ("</answer>",))
        return self._number(text.strip(), True, corrected) if text and text.strip() else None

    def _d1_score(self, generation, truth, corrected, question):
        gt = self.truth(truth.answer if isinstance(truth, Example) else truth, corrected)
        parsed = self.extract(generation, corrected)
        return (1.0 if parsed is not None and parsed == gt else 0.0), parsed


class MATH500(Task):
    """MATH500: competition mathematics with LaTeX answers (d1 Sec. 4), the 500-problem test subset of
    Hendrycks et al.'s MATH published as HuggingFaceH4/MATH-500 (`sources`).

    Rewards (d1's diffu-grpo/reward_func.py and math500_utils.py; nominal maximum 3.0):
      correctness_reward_math               2.0 if the completion's last \\boxed{} is equivalent
                                            (Hendrycks' normalisation, is_equiv) to the last
                                            \\boxed{} of the worked solution; a side with none
                                            counts whole                                    max 2.0
      boxed_and_answer_tags_format_reward   0.5 for an <answer> tag, plus 0.5 if "\\boxed" is in
                                            its text (in the whole completion without a tag),
                                            else 0.25                                           1.0
    d1 quirk (d1_quirks=True): the format reward looks for "\\b" + "oxed" with \\b a backspace, so
    it finds nothing and gives at most 0.75; 2.75 is the most a completion gets.
    Scoring (eval/math500.py, parse_and_get_acc.py, parser_helper.py): the last \\boxed{} (when it
    is empty or unclosed, the first <answer>), is_equiv to the answer. d1 quirk kept: with nothing
    boxed the whole generation is compared. There is no corrected variant.
    toy_reward: 1.0 if the first line is equivalent to the answer.
    """
    name, toy_tag, eval_prompt = "math500", "math", MATH_EVAL_PROMPT
    files = {"test": "test.jsonl"}
    sources = {"test": "https://huggingface.co/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl"}
    chat_rewards = ("correctness_reward_math", "boxed_and_answer_tags_format_reward")

    def _example(self, row):
        return Example(question=row["problem"], answer=str(row["answer"]), rationale=row.get("solution"))

    def _chat(self, ex):
        return f"{XML_SYSTEM_PROMPT}\n\n{_MATH_EXPERT} \n\n{ex.question}"

    def _chat_target(self, ex):
        return _xml(ex.rationale or "", f"\\boxed{{{ex.answer}}}")

    # --- rewards
    @staticmethod
    def _boxed_or_all(s):
        try:
            return remove_boxed(last_boxed_only_string(s))
        except Exception:
            return s

    @_reward(2.0)
    def correctness_reward_math(self, completion, ex):  # last \boxed{} of completion vs of the solution
        ref = self._boxed_or_all(ex.rationale or ex.answer)
        return 2.0 if is_equiv(self._boxed_or_all(_decoded(completion)), ref) else 0.0

    @_reward(1.0)
    def boxed_and_answer_tags_format_reward(self, completion, ex):
        boxed = "\boxed" if self.d1_quirks else "\\boxed"  # d1 quirk: "\b" is a backspace, so never found
        s = _decoded(completion)
        has_tag = "<answer>" in s  # d1 takes the text of the first <answer> when there is one
        part = s.split("<answer>", 2)[1].partition("</answer>")[0] if has_tag else s  # up to a 2nd <answer>
        return 0.5 * ((1.0 if has_tag else 0.0) + (1.0 if boxed in part else 0.5))

    @_reward(1.0)
    def toy_reward(self, completion, ex):
        return 1.0 if is_equiv(_toy_line(completion), ex.answer) else 0.0

    # --- d1's scorer
    def _d1_score(self, generation, truth, corrected, question):
        gt = truth.answer if isinstance(truth, Example) else truth
        try:
            parsed = remove_boxed(last_boxed_only_string(generation))
        except Exception:
            parsed = None
        if not parsed:  # nothing boxed (or empty): the first <answer> tag, if any
            tag = first_between(generation, "<answer>", ("</answer>",))
            parsed = tag.strip() if tag is not None else parsed
        return (1.0 if parsed is not None and is_equiv(parsed, gt) else 0.0), parsed


class Countdown(Task):
    """Countdown: an expression over three numbers, each used once, with + - * / that equals a
    target (d1 Sec. 4).

    Data: d1's 256-item test file (dataset/countdown_cd3_test.jsonl: "30,100,93" -> "23"). d1 trains
    on the three-number rows of TinyZero's Countdown data, which `load` also reads; `generate`
    draws seeded TinyZero-style instances instead (departure 6).
    Reward (d1's diffu-grpo/reward_func.py, after TinyZero's compute_score):
      countdown_reward   on the last <answer>: 1.0 if it writes the given numbers as a multiset
                         (none left out, none repeated) and its value is within 1e-5 of the
                         target, 0.1 for any other answer, 0.0 without one                  max 1.0
    Scoring (eval/countdown.py, parse_and_get_acc.py): the last \\boxed{} (an unclosed one: the
    first <answer>), LaTeX operators mapped, and the left side of an "= number" if there is one;
    correct if it uses each number once and reaches the target. d1 quirks kept: with nothing boxed
    the whole generation is read, and ** // and decimals are accepted (corrected=True allows only
    + - * / on integers).
    toy_reward: 1.0 for a correct expression, 0.1 for any other + - * / expression.
    """
    name, eval_prompt = "countdown", COUNTDOWN_EVAL_PROMPT
    files = {"train": "train.jsonl", "test": "test.jsonl"}
    sources = {"test": "https://raw.githubusercontent.com/dllm-reasoning/d1/main/dataset/countdown_cd3_test.jsonl"}
    chat_rewards = ("countdown_reward",)

    @staticmethod
    def make(nums, target, expression=None):
        nums, target = [int(n) for n in nums], int(target)
        return Example(question=f"Numbers: {nums}\nTarget: {target}", answer=[nums, target], nums=nums,
                       target=target, expression=expression)

    def _example(self, row):
        if "input" in row:  # d1's test file: {"input": "30,100,93", "output": "23"}
            return self.make(row["input"].split(","), row["output"])
        nums = row["nums"]  # TinyZero: {"target": 98, "nums": [44, 19, 35]}; d1 keeps 3-number rows
        return self.make(nums, row["target"]) if len(nums) == 3 else None

    def generate(self, n, seed, split="train"):
        """n instances: 3 numbers in 1..100 and a target in 1..100 reached by a random expression whose
        steps are positive integers (TinyZero-style). A hash of (numbers, target) puts 1 in 10 in test."""
        rng, out, seen = random.Random(seed), [], set()
        for _ in _attempts(n):
            if len(out) == n:
                return out
            a, b, c = nums = [rng.randint(1, 100) for _ in range(3)]
            o1, o2 = rng.choice("+-*/"), rng.choice("+-*/")
            if rng.random() < 0.5:  # (a o1 b) o2 c
                x = _ARITH[o1](Fraction(a), b)
                t = _ARITH[o2](x, c)
            else:  # a o1 (b o2 c)
                x = _ARITH[o2](Fraction(b), c)
                t = _ARITH[o1](Fraction(a), x) if x else Fraction(0)
            if not (x > 0 and x.denominator == 1 and 0 < t <= 100 and t.denominator == 1):
                continue
            key = (tuple(sorted(nums)), int(t))
            if key not in seen and countdown_in_test(*key) == (split == "test"):
                seen.add(key)
                out.append(self.make(nums, int(t), countdown_solve(nums, int(t))))

    def _chat(self, ex):
        return (f"{XML_SYSTEM_PROMPT}\nUsing only the numbers {ex.nums}, create an arithmetic expression that "
                f"evaluates to exactly {ex.target}. You must use all numbers from the list, and each number must be "
                "used exactly once. You may use the operations +, -, *, and / as needed. After reasoning, provide "
                "only your final expression inside <answer></answer> tags without including an equals sign or the "
                "target number. For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
                "<answer>\n2*4-3\n</answer>")

    def _toy(self, ex):
        return f"countdown {' '.join(map(str, ex.nums))} -> {ex.target}\n"

    def _toy_target(self, ex):
        expr = ex.expression or countdown_solve(ex.nums, ex.target)
        if expr is None:
            raise ValueError(f"no expression over {ex.nums} reaches {ex.target}")
        return expr

    def _chat_target(self, ex):
        expr = self._toy_target(ex)
        return _xml(f"{expr} = {ex.target}", expr)

    # --- rewards
    @_reward(1.0)
    def countdown_reward(self, completion, ex):  # TinyZero's compute_score on the last <answer>
        tags = answer_tags(_decoded(completion))
        if not tags:
            return 0.0
        expr = tags[-1].strip()
        if not uses_numbers(expr, ex.nums):
            return 0.1
        return 1.0 if hits_target(safe_eval(expr), ex.target) else 0.1

    @_reward(1.0)
    def toy_reward(self, completion, ex):
        """1.0 for a correct expression using each number once, 0.1 for any other + - * / expression."""
        expr = _toy_line(completion)
        if not is_int_arithmetic(expr):
            return 0.0
        return 1.0 if uses_numbers(expr, ex.nums) and hits_target(safe_eval(expr, strict=True), ex.target) else 0.1

    # --- d1's scorer
    def extract(self, generation):
        """d1: the last \\boxed{} (the first <answer> if it is unclosed, everything if there is none),
        LaTeX operators mapped, and the left side of an '= number' if there is one."""
        try:
            eq = remove_boxed(last_boxed_only_string(generation))
        except Exception:  # an unclosed \boxed{
            tag = first_between(generation, "<answer>", ("</answer>",))
            eq = tag.strip() if tag is not None else generation
        eq = eq.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
        lhs = equation_lhs(eq)
        return eq if lhs is None else lhs

    def _toy_score(self, generation, ex):
        return 1.0 if self.toy_reward(generation, ex) == 1.0 else 0.0

    def from_record(self, r):
        nums, target = r["ground_truth"]
        return self.make(nums, target)

    def _d1_score(self, generation, truth, corrected, question):
        nums, target = (truth.nums, truth.target) if isinstance(truth, Example) else truth
        eq = self.extract(generation)
        ok = uses_numbers(eq, nums) and hits_target(safe_eval(eq, strict=corrected), target)
        return (1.0 if ok else 0.0), eq


class Sudoku(Task):
    """4x4 Sudoku: fill the blanks ('0') of a 16-digit puzzle so that every row, column and 2x2 box
    holds 1-4 once (d1 Sec. 4).

    Data: d1's test file (dataset/4x4_test_sudoku.csv: Puzzle,Solution, 500 rows). d1's training
    puzzles are not public in usable form, so `generate` draws seeded puzzles with a unique solution,
    holding out every 6th of the 288 valid grids for test (departure 6).
    Reward (d1's diffu-grpo/reward_func.py):
      sudoku_reward   the digits of the last <answer>, padded or cut to 16: the fraction of the
                      puzzle's blanks filled as in the solution                              max 1.0
    Scoring (eval/sudoku.py, parse_and_get_acc.py): the first of five extraction patterns, padded or
    cut to 16 digits; d1 reports cell accuracy, right blanks over all blanks of all items (cells(),
    score_rows). d1 lists one solution per puzzle though 124 of the 500 test puzzles have several;
    corrected=True scores against the valid solution that the answer matches best.
    toy_reward: the fraction of blanks right in the first line's digits.
    """
    name, eval_prompt = "sudoku", SUDOKU_SYSTEM_PROMPT
    files = {"test": "test.csv"}
    sources = {"test": "https://raw.githubusercontent.com/dllm-reasoning/d1/main/dataset/4x4_test_sudoku.csv"}
    chat_rewards = ("sudoku_reward",)

    @staticmethod
    def make(puzzle, solution):
        if not re.fullmatch(r"[0-4]{16}", puzzle) or solution not in SUDOKU_GRIDS:
            raise ValueError(f"not a 4x4 puzzle and solution: {puzzle!r}, {solution!r}")
        if any(p not in "0" + s for p, s in zip(puzzle, solution)):
            raise ValueError(f"solution {solution} contradicts puzzle {puzzle}")
        return Example(question=f"Solve the following Sudoku puzzle: {puzzle}\n", answer=solution,
                       puzzle=puzzle, solution=solution)

    def _rows(self, path):
        try:
            with open(path, encoding="utf-8", newline="") as f:  # csv keeps strings: leading zeros survive
                reader = csv.DictReader(f)
                if reader.fieldnames is not None and reader.fieldnames[:2] != ["Puzzle", "Solution"]:
                    raise ValueError(f"{path}:1: header must be 'Puzzle,Solution', got {reader.fieldnames}")
                for row in reader:
                    yield reader.line_num, row
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): expected a CSV file") from None

    def _example(self, row):
        return self.make(row["Puzzle"], row["Solution"])

    def generate(self, n, seed, split="train", blanks=8):
        """n distinct puzzles with `blanks` empty cells and a unique solution, from the split's grids."""
        rng, out, seen = random.Random(seed), [], set()
        grids = [g for g in SUDOKU_GRIDS if (g in SUDOKU_TEST_GRIDS) == (split == "test")]
        for _ in _attempts(n):
            if len(out) == n:
                return out
            grid, cells = rng.choice(grids), rng.sample(range(16), 16)
            puzzle = list(grid)
            for c in cells:  # blank cells while the solution stays unique
                if puzzle.count("0") == blanks:
                    break
                puzzle[c] = "0"
                mask = grids_mask(puzzle)
                if mask & (mask - 1):  # more than one solution
                    puzzle[c] = grid[c]
            p = "".join(puzzle)
            if p.count("0") == blanks and p not in seen:
                seen.add(p)
                out.append(self.make(p, grid))

    def _chat(self, ex):
        return f"{SUDOKU_SYSTEM_PROMPT}\n\n{ex.question}"

    def _toy(self, ex):
        return f"sudoku {ex.puzzle}\n"

    def _chat_target(self, ex):
        return _xml("Fill each empty cell so that every row, column and 2x2 box holds 1-4 once.", ex.solution)

    # --- rewards
    @staticmethod
    def _cell_fraction(answer, ex):
        if not answer:
            return 0.0
        answer, empty = fit16(answer), [i for i in range(16) if ex.puzzle[i] == "0"]
        return sum(answer[i] == ex.solution[i] for i in empty) / len(empty) if empty else 0.0

    @_reward(1.0)
    def sudoku_reward(self, completion, ex):  # digits of the last <answer>, fraction of blanks right
        tags = answer_tags(_decoded(completion))
        return self._cell_fraction("".join(c for c in tags[-1].strip() if c.isdigit()), ex) if tags else 0.0

    @_reward(1.0)
    def toy_reward(self, completion, ex):
        return self._cell_fraction("".join(c for c in _toy_line(completion) if c.isdigit()), ex)

    # --- d1's scorer
    @staticmethod
    def puzzle_of(question):
        """d1 reads the puzzle from the first 16 characters, else after 'Sudoku puzzle: '."""
        if len(question) >= 16 and all(c.isdigit() for c in question[:16]):
            return question[:16]
        m = re.search(r"Sudoku puzzle: ([0-9]{16})", question)
        if not m:
            raise ValueError(f"no 16-digit Sudoku puzzle in question {question[:60]!r}")
        return m.group(1)

    def cells(self, generation, truth, corrected=False, question=None):
        """(correct cells, empty cells, extracted answer) as d1 counts them; corrected=True scores
        against the valid solution of the puzzle that the answer matches best."""
        if isinstance(truth, Example):
            puzzle, truth = truth.puzzle, truth.solution
        else:
            puzzle = self.puzzle_of(question or "")
        empty = [i for i in range(16) if puzzle[i] == "0"]
        answer = sudoku_d1_answer(generation)
        if not answer:
            return 0, len(empty), ""
        answer = fit16(answer)
        truths = sudoku_solutions(puzzle) if corrected else [truth]
        return max(sum(answer[i] == t[i] for i in empty) for t in truths or [truth]), len(empty), answer

    def _d1_score(self, generation, truth, corrected, question):
        correct, empty, answer = self.cells(generation, truth, corrected, question)
        return (correct / empty if empty else 0.0), answer

    def from_record(self, r):
        return self.make(self.puzzle_of(r.get("question") or ""), r["ground_truth"])

    def score_rows(self, rows, corrected=False):
        if any(r.get("style") == "toy" for r in rows):  # toy answers: the mean fraction of blanks right
            return super().score_rows(rows, corrected)
        out = [dict(zip(("correct_cells", "empty_cells", "extracted"),
                        self.cells(r["generation"], r["ground_truth"], corrected, r.get("question")))) for r in rows]
        for o in out:
            o["score"] = o["correct_cells"] / o["empty_cells"] if o["empty_cells"] else 0.0
        cells = sum(o["empty_cells"] for o in out)
        return 100.0 * sum(o["correct_cells"] for o in out) / max(cells, 1), out  # d1: cell accuracy


class Chains(GSM8K):
    """Chains: the toy analogue of GSM8K, generated (no d1 counterpart): a few named quantities, each
    defined from an earlier one by adding or subtracting a digit, listed in the chain's order with an
    unneeded one among them; the question asks for the last of the chain. The answer is worked steps, one
    per quantity of the chain, then GSM8K's answer line '#### value':
        toy prompt  "chains x=4 q=x+3 k=x+5 m=q+1 d=m-2 ?d\n"
        toy answer  "x=4 q=x+3=4+3=7 m=q+1=7+1=8 d=m-2=8-2=6 #### 6"
    Each step finds a definition by name, puts in the value found one step earlier and adds or
    subtracts within 0..9 (no carries: 90 facts), so a model that writes the steps needs no more than
    one lookup and one fact per step, and one that answers at once needs them all in a single pass.
    Rewards (toy style), d1's GSM8K rewards where they fit a one-line answer (nominal maximum 3.0):
      chains_correctness  2.0 if the number after the last '####' is the answer          2.0
      chains_int          0.5 if the text after the last '####' is a whole number        0.5
      chains_format       0.5 for the line's layout: steps 'name=...' then ' #### n'      0.5
    Scoring: toy answers 1.0 if correct, else 0.0; chat answers as GSM8K (d1's parser and rewards: the
    chat prompt is GSM8K's with the problem written out).
    """
    name = toy_tag = "chains"
    files, sources = {}, {}
    toy_rewards = ("chains_correctness", "chains_int", "chains_format")
    # a four-step answer is 46 tokens; blocks of 8, one token per step: the answer line comes after the steps
    toy_sampler = dict(gen_length=48, block_length=8, diffusion_steps=48)
    _STEP = r"[a-z]=[a-z0-9+\-=]+"
    _LAYOUT = re.compile(rf"{_STEP}(?: {_STEP})* #### [0-9]+")

    def generate(self, n, seed, split="train", length=4, distractors=1, order="interleaved"):
        """n distinct problems whose chain has `length` quantities (the first a digit) and `distractors`
        unneeded ones defined from them, listed in the given order: "shuffled", "chain" (the chain's
        order, then the unneeded ones) or "interleaved" (the chain's order, each unneeded one at a random
        place after the quantity it is defined from; the target: a 0.9M model that takes the next
        definition by its place goes wrong, and shuffled lists are beyond it, LOG.md 2026-12-06, "Chains,
        ninth probe"); a hash of the problem sends 1 in 10 to the test split."""
        if order not in ("shuffled", "chain", "interleaved"):
            raise ValueError(f"unknown order {order!r} of a Chains problem's definitions: "
                             "shuffled, chain or interleaved")
        rng, out, seen = random.Random(seed), [], set()
        for _ in _attempts(n):
            if len(out) == n:
                return out
            ex = self.draw(rng, length, distractors, order)
            if ex.question not in seen and in_test(ex.question) == (split == "test"):
                seen.add(ex.question)
                out.append(ex)

    @staticmethod
    def draw(rng, length, distractors, order="interleaved"):
        """One problem: definitions {name: expression}, the worked steps, the answer."""
        names = rng.sample("abcdefghijklmnopqrstuvwxyz", length + distractors)
        chain, values = names[:length], {names[0]: rng.randint(0, 9)}
        defs, steps = {names[0]: str(values[names[0]])}, [f"{names[0]}={values[names[0]]}"]
        for prev, name in zip(chain, chain[1:]):
            v = values[prev]
            op, k, values[name] = digit_move(rng, v)
            defs[name] = f"{prev}{op}{k}"
            steps.append(f"{name}={prev}{op}{k}={v}{op}{k}={values[name]}")
        for name in names[length:]:  # unneeded: defined from a quantity of the chain
            source = rng.choice(chain)
            op = "+" if values[source] < 5 else "-"
            defs[name] = f"{source}{op}{rng.randint(1, 9 - values[source] if op == '+' else values[source])}"
        listed = list(defs.items())  # the chain's order, then the unneeded ones
        if order == "shuffled":
            rng.shuffle(listed)
        elif order == "interleaved":
            for name in names[length:]:
                listed.remove((name, defs[name]))
                after = [k for k, _ in listed].index(defs[name][0]) + 1  # its source's place, plus one
                listed.insert(rng.randint(after, len(listed)), (name, defs[name]))
        question = " ".join(f"{k}={v}" for k, v in listed) + f" ?{chain[-1]}"
        return Example(question=question, answer=str(values[chain[-1]]), rationale=" ".join(steps))

    def _toy(self, ex):  # a walk or a tally (the toy s1K's, also in a Chains base's domain text) as ToyS1K writes it
        return f"{ex.question}\n" if ex.question.startswith(ToyS1K.KINDS) else f"{Chains.toy_tag} {ex.question}\n"

    def _chat(self, ex):
        return (XML_SYSTEM_PROMPT + "\n\nEach letter stands for a number: " + ex.question.rpartition(" ?")[0]
                + f". What is {ex.question.rpartition(' ?')[2]}?")

    def _toy_target(self, ex):  # an example without worked steps (a direct answer) is '#### value' alone
        return f"{ex.rationale} #### {ex.answer}" if ex.rationale else f"#### {ex.answer}"

    # --- toy rewards
    @staticmethod
    def final(completion):
        """The text after the last '####' of the answer line, stripped (None without one)."""
        line = _toy_line(completion)
        return line.rpartition("####")[2].strip() if "####" in line else None

    @_reward(2.0)
    def chains_correctness(self, completion, ex):
        return 2.0 if self.final(completion) == ex.answer else 0.0

    @_reward(0.5)
    def chains_int(self, completion, ex):
        final = self.final(completion)
        return 0.5 if final and final.isascii() and final.isdigit() else 0.0

    @_reward(0.5)
    def chains_format(self, completion, ex):
        return 0.5 if self._LAYOUT.fullmatch(_toy_line(completion)) else 0.0

    def _toy_score(self, generation, ex):
        return 1.0 if self.chains_correctness(generation, ex) else 0.0


class ToyS1K(Chains):
    """The toy analogue of s1K (d1 Sec. 3.3: 1,000 worked solutions of other problems, not of the target
    tasks): worked solutions of two other kinds of problem in Chains' answer structure (steps, then
    '#### answer'), which teach writing one step after another without being Chains problems:
        walk   "walk c>f a>c f>b b>e d>a from a 4\n" -> "a>c c>f f>b b>e #### e"   (follow 4 arrows)
        tally  "tally 6 -2 +3 -4\n" -> "6-2=4 4+3=7 7-4=3 #### 3"                   (a running total)
    A walk looks up one arrow per step (Chains: one definition); a tally carries a value through
    additions and subtractions of digits within 0..9, Chains' arithmetic without its lookups. The toy
    prompt is the question itself; rewards and scoring are Chains' (the answer after the last '####';
    the layout allows these steps; a walk's answer is a letter). `sft.py --task toy-s1k` trains on it as
    `--task s1k` trains LLaDA on s1K.
    """
    name = toy_tag = "toy-s1k"
    KINDS = ("walk ", "tally ")  # a question starts with its kind, and its toy prompt is the question itself
    toy_rewards = ("chains_correctness", "chains_format")
    _LAYOUT = re.compile(r"[a-z0-9][a-z0-9+\-=>]*(?: [a-z0-9][a-z0-9+\-=>]*)* #### [a-z0-9]+")

    def draw(self, rng, length, distractors, order="interleaved"):
        """A walk or a tally (even odds) of 3 to `length` + 2 steps (a walk's arrows always shuffled)."""
        steps = rng.randint(3, length + 2)
        return self.walk(rng, steps, distractors) if rng.random() < 0.5 else self.tally(rng, steps)

    @staticmethod
    def walk(rng, hops, distractors, ordered=False):
        """ordered: the path's arrows in its order, then the unneeded ones (an easier walk, where the next
        arrow is the next listed, for a base's domain text); else all shuffled (the next found by name)."""
        nodes = rng.sample("abcdefghijklmnopqrstuvwxyz", hops + 1 + distractors)
        path, others = nodes[:hops + 1], nodes[hops + 1:]
        arrows = [f"{a}>{b}" for a, b in zip(path, path[1:])]
        listed = arrows + [f"{a}>{rng.choice(nodes)}" for a in others]  # one arrow out of each letter at most
        if not ordered:
            rng.shuffle(listed)
        return Example(question=f"walk {' '.join(listed)} from {path[0]} {hops}", answer=path[-1],
                       rationale=" ".join(arrows))

    @staticmethod
    def tally(rng, moves):
        total = rng.randint(0, 9)
        terms, steps = [str(total)], []
        for _ in range(moves):
            op, k, new = digit_move(rng, total)
            terms.append(f"{op}{k}")
            steps.append(f"{total}{op}{k}={new}")
            total = new
        return Example(question="tally " + " ".join(terms), answer=str(total), rationale=" ".join(steps))

    def _chat(self, ex):
        return XML_SYSTEM_PROMPT + "\n\n" + ex.question


def read_jsonl(path):
    """(line number, record) of each non-blank line of a JSON Lines file; a missing file, a file that
    is not UTF-8 text and a line that is not JSON are errors that say which (FileNotFoundError, ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): expected JSON Lines") from None
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None


TASKS = {t.name: t for t in (GSM8K(), MATH500(), Countdown(), Sudoku(), Chains(), ToyS1K())}


def examples(task, path, n, seed, split):
    """A task's examples for training or evaluation: from a local file when a path is given, else n
    from its seeded generator (Sudoku, Countdown); a clear error when neither gives any."""
    if path:
        out = task.load(path, split=split)
    elif hasattr(task, "generate"):
        out = task.generate(n, seed=seed, split=split)
    else:
        raise ValueError(f"task {task.name} has no generator: pass --data/--test_data (a {split} file)")
    if not out:
        raise ValueError(f"no {split} examples for task {task.name}")
    return out


def run_examples(task, cfg, train_examples=None, test_examples=None):
    """A training run's (training examples, held-out examples): the lists given (reproduce.py builds its
    own distributions), else the files cfg.data and cfg.test_data, else the task's generator (cfg.n_train
    from cfg.seed, the test split from cfg.seed + 1); the held-out set cut to cfg.n_eval."""
    train = train_examples or examples(task, cfg.data, cfg.n_train, cfg.seed, "train")
    test = (test_examples or examples(task, cfg.test_data, cfg.n_eval, cfg.seed + 1, "test"))[:cfg.n_eval]
    return train, test


def get_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


# ----------------------------------------------------------------------------- the generators' split and solver
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}  # by symbol
SUDOKU_TEST_GRIDS = frozenset(SUDOKU_GRIDS[::6])  # 48 of the 288 grids held out for test (departure 6)


def countdown_in_test(nums, target):
    """Whether Countdown.generate puts this instance in its test split: a hash of (sorted numbers,
    target) sends 1 in 10 there."""
    return in_test(repr((tuple(sorted(nums)), int(target))))


def in_test(key):
    """The generators' split: a hash of an instance's text sends 1 in 10 to the test split."""
    return zlib.crc32(key.encode()) % 10 == 0


def digit_move(rng, v):
    """A random step from digit v that stays within 0..9: (op '+' or '-', k in 1..9, the result)."""
    op = rng.choice("+-") if 0 < v < 9 else "+" if v == 0 else "-"
    k = rng.randint(1, 9 - v) if op == "+" else rng.randint(1, v)
    return op, k, v + k if op == "+" else v - k


def countdown_solve(nums, target):
    """A shortest-parenthesised expression over all of `nums` (each once) equal to target, or None."""
    prec = {"+": 1, "-": 1, "*": 2, "/": 2}
    for a, b, c in itertools.permutations(nums):
        for o1, o2 in itertools.product("+-*/", repeat=2):
            try:  # (a o1 b) o2 c
                if _ARITH[o2](_ARITH[o1](Fraction(a), b), c) == target:
                    left = f"{a}{o1}{b}"
                    return f"({left}){o2}{c}" if prec[o1] < prec[o2] else f"{left}{o2}{c}"
            except ZeroDivisionError:
                pass
            try:  # a o1 (b o2 c)
                if _ARITH[o1](Fraction(a), _ARITH[o2](Fraction(b), c)) == target:
                    flat = prec[o2] > prec[o1] or (prec[o2] == prec[o1] and o1 in "+*")
                    return f"{a}{o1}{b}{o2}{c}" if flat else f"{a}{o1}({b}{o2}{c})"
            except ZeroDivisionError:
                pass
    return None


# ----------------------------------------------------------------------------- CLI
def score_file_rows(path):
    """The records of a generations file for `score`: each must hold generation and ground_truth."""
    rows = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or not {"generation", "ground_truth"} <= set(row):
            raise ValueError(f"{path}:{lineno}: a record needs 'generation' and 'ground_truth' "
                             f"(and may have 'question')")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no records")
    return rows


def main(argv=None):
    try:
        run(argv)
    except (ValueError, OSError) as e:  # a missing or unreadable file, a bad record, no network: one line
        sys.exit(f"error: {e}")


def run(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("score", help="d1's accuracy on a generations JSONL (question, generation, ground_truth)")
    sc.add_argument("--task", required=True, choices=TASKS)
    sc.add_argument("--file", required=True)
    sc.add_argument("--out", help="write one JSON line per input line with score and extracted answer")
    sc.add_argument("--corrected", action="store_true", help="fixed verdicts where d1's parser is wrong")
    sh = sub.add_parser("show", help="print examples in both prompt formats")
    sh.add_argument("--task", required=True, choices=TASKS)
    sh.add_argument("-n", type=int, default=3)
    sh.add_argument("--file", help="data file (default: generated for sudoku and countdown)")
    sh.add_argument("--seed", type=int, default=0)
    dl = sub.add_parser("download", help="fetch a public data file (needs internet)")
    dl.add_argument("--task", required=True, choices=TASKS)
    dl.add_argument("--split", default="test")
    dl.add_argument("--dest", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "show" and args.n < 1:
        ap.error(f"-n must be >= 1, not {args.n}")
    task = get_task(args.task)
    if args.cmd == "score":
        rows = score_file_rows(args.file)
        acc, results = task.score_rows(rows, args.corrected)
        print(f"{task.name}: {acc:.2f} ({len(rows)} items{', corrected' if args.corrected else ''})")
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in results)
    elif args.cmd == "show":
        if args.file:
            examples = task.load(args.file)[:args.n]
        elif hasattr(task, "generate"):
            examples = task.generate(args.n, seed=args.seed, split="test")
        else:
            sys.exit(f"{task.name} has no generator: pass --file")
        for i, ex in enumerate(examples):
            print(f"=== {task.name} example {i}\n--- chat prompt\n{task.prompt(ex, 'chat')}\n--- chat target\n"
                  f"{task.target(ex, 'chat')}\n--- toy prompt -> target\n{task.prompt(ex, 'toy')!r} -> "
                  f"{task.target(ex, 'toy')!r}")
    else:
        print(task.download(args.split, args.dest))


if __name__ == "__main__":
    main()
