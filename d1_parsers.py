"""d1's answer extraction and normalisation, re-expressed exactly, for the tasks in tasks.py.

d1 (Zhao et al. 2025, arXiv 2504.12216) reports accuracies from its evaluation scripts (Sec. 4) and
trains on rule-based rewards (Sec. 3.2 and the appendix), but the paper does not spell out how an
answer is read from a generation. Those rules live in d1's code: diffu-grpo/reward_func.py and
math500_utils.py (rewards), eval/{gsm8k,math500,countdown,sudoku}.py, parse_and_get_acc.py and
parser_helper.py (scoring). This module restates them, so that tasks.py's verdicts equal d1's item
by item on d1's own published generations (tests/test_tasks.py checks all four files):
  - linear-time forms of d1's regexes: <answer> tags, \\boxed{} contents, the soft and strict
    format checks, the xml-count reward (reward_func.py, parse_and_get_acc.py)
  - MATH normalisation and equivalence: last_boxed_only_string, remove_boxed, strip_string
    (math_normalize here) and is_equiv (parser_helper.py, math500_utils.py)
  - Countdown arithmetic: TinyZero's check that each given number is used exactly once (a multiset
    comparison), its 1e-5 target test, d1's "left side of '= number'" extraction, and an evaluator
    that accepts what d1's eval accepts without evaluating anything
  - the 288 valid 4x4 Sudoku grids and d1's five-pattern Sudoku answer extraction (eval/sudoku.py)

It is a module of its own because none of this is an idea of the paper: it is compatibility code
that a reader of d1 can skip. tasks.py keeps the tasks, their prompts and their rewards, and calls
these functions by name. Pure standard library; it imports nothing from the project.

Where this departs from d1's code (departures 1 and 2 in tasks.py's docstring)
 1. Countdown expressions are parsed with `ast` and evaluated over numbers with + - * / // **
    only (d1 evals anything its character filter lets through). A power whose result would
    exceed 2**MAX_POW_BITS counts as "could not evaluate": d1 hangs on it (`9**9**9`).
 2. d1's regexes that backtrack quadratically on long strings (`<answer>(.*?)</answer>`,
    `\\boxed{(.*?)}`, the soft-format and Sudoku patterns) are linear scans here with identical
    matches; tests/test_tasks.py checks them against the original regexes.
"""
import ast
import operator
import re

# ----------------------------------------------------------------------------- linear-time d1 regexes
_WS = re.compile(r"\s*")
_DIGITS_WS = re.compile(r"[\d\s]*")
_BRACE = re.compile(r"[{}]")
NUMBER = re.compile(r"-?\d+\.?\d*")  # d1's number pattern (eval/gsm8k.py)


def _find(s, sub, start=0):
    """str.find with len(s) instead of -1, so that 'not found' sorts last."""
    i = s.find(sub, start)
    return len(s) if i < 0 else i


def first_between(s, start, ends):
    """group(1) of re.search(start + r"(.*?)(?:end1|end2..)", s, re.DOTALL), or None."""
    a = s.find(start)
    if a < 0:
        return None
    a += len(start)
    e = min(_find(s, end, a) for end in ends)
    return s[a:e] if e < len(s) else None


def answer_tags(s):
    """re.findall(r"<answer>(.*?)</answer>", s, re.DOTALL)."""
    out, pos = [], 0
    while (a := s.find("<answer>", pos)) >= 0 and (b := s.find("</answer>", a + 8)) >= 0:
        out.append(s[a + 8:b])
        pos = b + 9
    return out


def boxed_groups(s):
    """re.findall(r"\\\\boxed{(.*?)}", s) (no DOTALL), one group at a time."""
    pos, close, nl = 0, -1, -1
    while (i := s.find("\\boxed{", pos)) >= 0:
        start = i + 7
        close = close if close >= start else _find(s, "}", start)
        if close == len(s):
            return
        nl = nl if nl >= start else _find(s, "\n", start)
        if nl < close:  # no DOTALL: the match cannot cross a newline
            pos = nl + 1
            continue
        pos = close + 1
        yield s[start:close]


def xml_answer(s):
    """d1's extract_xml_answer: s.split("<answer>")[-1].split("</answer>")[0].strip()."""
    return s.rpartition("<answer>")[2].partition("</answer>")[0].strip()


def count_xml(s):
    """d1's count_xml, 0.125 per tag; the trailing-text penalty can make it negative."""
    count = 0.0
    if s.count("<reasoning>\n") == 1:
        count += 0.125
    if s.count("\n</reasoning>\n") == 1:
        count += 0.125
    if s.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(s.rpartition("\n</answer>\n")[2]) * 0.001  # whole text if the tag is absent
    if s.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(s.rpartition("\n</answer>")[2]) - 1) * 0.001
    return count


def soft_format(s, dotall):
    """re.match(r"<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", s[, re.DOTALL])."""
    if not s.startswith("<reasoning>"):
        return False
    line_end = len(s) if dotall else _find(s, "\n", 11)  # without DOTALL .*? stays on one line
    r, close, nl = 11, -1, -1
    while (r := s.find("</reasoning>", r, line_end)) >= 0:
        w = _WS.match(s, r + 12).end()
        if s.startswith("<answer>", w):
            a = w + 8
            close = close if close >= a else _find(s, "</answer>", a)
            if close == len(s):
                return False  # no closing tag after any later <answer> either
            nl = nl if nl >= a else _find(s, "\n", a)
            if dotall or close < nl:
                return True
        r += 1
    return False


def strict_format(s, dotall):
    """re.match(r"^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n$", s[, re.DOTALL])."""
    mid, end = "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if not s.startswith("<reasoning>\n"):
        return False
    ends = [len(s) - 11] + ([len(s) - 12] if s.endswith("\n") else [])  # `$` may precede a final \n
    if dotall:
        p = s.find(mid, 12)
        return p >= 0 and any(q >= p + 23 and s.startswith(end, q) for q in ends)
    p = s.find("\n", 12)
    if p < 0 or not s.startswith(mid, p):
        return False
    q = s.find("\n", p + 23)
    return q in ends and s.startswith(end, q)


# ----------------------------------------------------------------------------- MATH normalisation (d1's parser_helper)
def last_boxed_only_string(s):
    """The last \\boxed{...} (or \\fbox{...}) with balanced braces; None if unclosed; s if absent."""
    if "\\boxed " in s:  # d1: "\boxed 5$" form, checked before anything else
        return "\\boxed " + s.rpartition("\\boxed ")[2].partition("$")[0]
    idx = s.rfind("\\boxed")
    if idx < 0 and (idx := s.rfind("\\fbox")) < 0:
        return s
    depth = 0
    for m in _BRACE.finditer(s, idx):
        depth += 1 if m.group() == "{" else -1
        if m.group() == "}" and depth == 0:
            return s[idx:m.end()]
    return None


def remove_boxed(s):
    if s is None:
        raise TypeError("nothing boxed")  # d1 raises here too; callers catch it
    if "\\boxed " in s:
        if not s.startswith("\\boxed "):
            raise ValueError(s)
        return s[7:]
    return s[7:-1] if s.startswith("\\boxed{") and s.endswith("}") else s


def _fix_fracs(s):
    head, *parts = s.split("\\frac")
    out = [head]
    for sub in parts:
        out.append("\\frac")
        if sub[0] == "{":  # IndexError on "\frac" at the end: d1 then compares raw strings
            out.append(sub)
        elif len(sub) < 2:
            return s
        elif sub[1] != "{":
            out.append("{" + sub[0] + "}{" + sub[1] + "}" + sub[2:])
        else:
            out.append("{" + sub[0] + "}" + sub[1:])
    return "".join(out)


def _fix_sqrt(s):
    head, *parts = s.split("\\sqrt")
    return head + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in parts)


def _fix_a_slash_b(s):
    if s.count("/") != 1:
        return s
    a, b = (int(x) for x in s.split("/"))  # ValueError escapes, as in d1
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def math_normalize(s):
    """d1's strip_string (Hendrycks MATH normalisation). Raises where d1's raises."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # units
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("several \\text{ ")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if s.count("=") == 1 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    return _fix_a_slash_b("\\frac{1}{2}" if s == "0.5" else s)


def is_equiv(a, b):
    if a is None or b is None:
        return a is None and b is None
    try:
        return math_normalize(a) == math_normalize(b)
    except Exception:  # d1 falls back to comparing the raw strings
        return a == b


# ----------------------------------------------------------------------------- Countdown arithmetic
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_D1_OPS = {**_OPS, ast.FloorDiv: operator.floordiv, ast.Pow: None}
_D1_CHARS = re.compile(r"[\d+\-*/().\s]+")  # d1's character filter before its eval
MAX_POW_BITS = 10_000


def _pow(a, b):
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and b * abs(a).bit_length() > MAX_POW_BITS:
        raise OverflowError("power too large")
    return a ** b


def _value(node, strict):
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        sign = -sign if isinstance(node.op, ast.USub) else sign  # chains collapse without recursion
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in ((int,) if strict else (int, float)):
        v = node.value
    elif isinstance(node, ast.BinOp) and type(node.op) in (_OPS if strict else _D1_OPS):
        x, y = _value(node.left, strict), _value(node.right, strict)
        v = _pow(x, y) if isinstance(node.op, ast.Pow) else _D1_OPS[type(node.op)](x, y)
    else:
        raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")
    return -v if sign < 0 else v


def safe_eval(expr, strict=False):
    """Value of an arithmetic expression, or None; never evals. By default it accepts what d1's eval
    would (its character filter, then Python's grammar: float literals, // and ** included);
    strict = integers with + - * / and parentheses only."""
    if not _D1_CHARS.fullmatch(expr):
        return None
    try:
        return _value(ast.parse(expr.strip(), mode="eval").body, strict)
    except Exception:  # SyntaxError, ZeroDivisionError, OverflowError, RecursionError, MemoryError...
        return None


def is_int_arithmetic(expr):
    """Whether expr is written with integers, + - * /, signs and parentheses only (the toy grammar)."""
    if not expr or not _D1_CHARS.fullmatch(expr):
        return False
    try:
        tree = ast.parse(expr, mode="eval")
    except Exception:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.UAdd, ast.USub, *_OPS)
    return all(isinstance(n, allowed) and (not isinstance(n, ast.Constant) or type(n.value) is int)
               for n in ast.walk(tree))


def uses_numbers(expr, nums):
    """TinyZero's validate_equation: the integers written in expr are the given numbers, each used
    exactly as often as it is given (sorted lists compared: a multiset equality)."""
    try:
        return sorted(int(n) for n in re.findall(r"\d+", expr)) == sorted(nums)
    except ValueError:  # over 4300 digits
        return False


def hits_target(value, target):
    """TinyZero's test of an evaluated expression: within 1e-5 of the target."""
    try:
        return value is not None and abs(value - target) < 1e-5
    except Exception:
        return False


def equation_lhs(s):
    r"""re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", s).group(1).strip(), or None, in linear time."""
    for m in re.finditer(r"[0-9+\-*/() ]+", s):  # the group always ends where its run of characters ends
        if s.startswith("=", m.end()) and s[m.end() + 1:m.end() + 2] in tuple("0123456789. "):
            return m.group().strip()
    return None


# ----------------------------------------------------------------------------- Sudoku grids, d1's extraction
def _all_grids():
    grids, cells = [], [0] * 16

    def fill(i):
        if i == 16:
            grids.append("".join(map(str, cells)))
            return
        r, c = divmod(i, 4)
        box = [4 * rr + cc for rr in (r // 2 * 2, r // 2 * 2 + 1) for cc in (c // 2 * 2, c // 2 * 2 + 1)]
        used = ({cells[4 * r + k] for k in range(c)} | {cells[4 * k + c] for k in range(r)}
                | {cells[j] for j in box if j < i})
        for d in range(1, 5):
            if d not in used:
                cells[i] = d
                fill(i + 1)

    fill(0)
    return grids


SUDOKU_GRIDS = _all_grids()  # the 288 valid 4x4 grids, sorted
_HAS = [{d: sum(1 << k for k, g in enumerate(SUDOKU_GRIDS) if g[i] == d) for d in "1234"} for i in range(16)]


def grids_mask(puzzle):
    """Bit k set <=> SUDOKU_GRIDS[k] agrees with the puzzle's givens."""
    mask = (1 << len(SUDOKU_GRIDS)) - 1
    for i, p in enumerate(puzzle):
        if p != "0":
            mask &= _HAS[i].get(p, 0)
    return mask


def sudoku_solutions(puzzle):
    """Every valid grid that agrees with the puzzle's givens."""
    mask = grids_mask(puzzle)
    return [g for k, g in enumerate(SUDOKU_GRIDS) if mask >> k & 1]


def sudoku_d1_answer(s):
    """d1's eval extraction: the first of five patterns whose group is not blank, whitespace removed."""
    def backticks():  # <answer>.*?```\s*([\d\s]+)```
        q = s.find("<answer>") + 8
        while q >= 8 and (q := s.find("```", q)) >= 0:
            j = q + 3
            k = _DIGITS_WS.match(s, j).end()
            if k > j and s.startswith("```", k):
                w = _WS.match(s, j, k).end()
                return s[w:k] if w < k else s[k - 1:k]
            q += 1
        return None

    def after_answer():  # </answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)
        c = s.find("</answer>")
        if c < 0:
            return None
        w = _WS.match(s, c + 9).end()
        ends = [_find(s, "<|eot_id|>", w), _find(s, "<|endoftext|>", w)]
        return s[w:min(ends + ([len(s) - 1] if s.endswith("\n") and len(s) - 1 >= w else []))]

    def regex(p):
        m = re.search(p, s)
        return m and m.group(1)

    for find in (backticks, lambda: first_between(s, "<answer>", ("<|eot_id|>", "<|endoftext|>", "</answer>")),
                 after_answer, lambda: regex(r"(\d{16})\s*</answer>"),  # = .*?(\d{16})\s*</answer>
                 lambda: regex(r"\b(\d{16})\b")):
        group = find()
        if group and group.strip():
            return re.sub(r"\s", "", group.strip())
    return ""


def fit16(answer):
    """d1 pads a short Sudoku answer with 0 and truncates a long one to 16 digits."""
    return (answer + "0" * 16)[:16]
