"""Errors that reach the user.

A ``UserError`` is a mistake the user can fix (bad YAML, wrong parameter, missing model directory).
Hosts print it as one line -- ``file:line:col: node 'id', field 'name': message`` -- with no
traceback; the ``unclip`` CLI exits with code 2.  Any other exception is a bug in unclip-nodes.
"""
from __future__ import annotations

import os


class UserError(Exception):
    """A mistake in what the user asked for, with where it was made."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, node: str | None = None, field: str | None = None):
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.node = node
        self.field = field

    def located(self, **where) -> "UserError":
        """A copy with the unknown parts of the location filled in from ``where``."""
        now = {k: getattr(self, k) for k in ("file", "line", "column", "node", "field")}
        for k, v in where.items():
            if now.get(k) is None:
                now[k] = v
        err = type(self)(self.message, **now)
        err.__cause__ = self.__cause__
        return err

    def where(self) -> str:
        parts = []
        if self.file:
            pos = self.file
            if self.line is not None:
                pos += f":{self.line}"
                if self.column is not None:
                    pos += f":{self.column}"
            parts.append(pos)
        who = []
        if self.node is not None:
            who.append(f"node '{_cut(str(self.node), NAME_CHARS)}'")
        if self.field is not None:
            who.append(f"field '{_cut(str(self.field), NAME_CHARS)}'")
        if who:
            parts.append(", ".join(who))
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class UserErrors(UserError):
    """Several user mistakes found at once (validation reports them all)."""

    def __init__(self, errors: list[UserError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def located(self, **where) -> "UserErrors":
        return UserErrors([e.located(**where) for e in self.errors])

    def where(self) -> str:
        return ""

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# --- quoting what the user gave ---------------------------------------------------------------

NAME_CHARS = 80
"""The most characters of a node id or field name a message shows."""
WORD_CHARS = 4200
"""The most characters of one word (a run without spaces) in a message: room for the longest
path a system allows, but not for a 15 MB value quoted whole."""


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text):,} characters)"


def _bounded(message: str) -> str:
    """``message`` with every over-long word cut: wherever a message quotes a value, at most
    a bounded part of it reaches the terminal."""
    import re
    if len(message) <= WORD_CHARS:
        return message
    return re.sub(r"\S{%d,}" % (WORD_CHARS + 1), lambda m: _cut(m.group(), NAME_CHARS),
                  message)

EXCERPT_CHARS = 80
"""The most characters of a value a message quotes: a 15 MB prefix must not put 15 MB on
stderr, and a file's content must not reach a message at all."""


def excerpt(value: object, n: int = EXCERPT_CHARS) -> str:
    """``repr`` of a value for a message, at most about ``n`` characters: the start, and how
    long the whole was when it is cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= n:
        return repr(text) if isinstance(value, str) else text
    cut = text[:n]
    return (repr(cut) if isinstance(value, str) else cut) + f"... ({len(text):,} characters)"


# --- limits on what a file can ask for ------------------------------------------------------

def env_limit(name: str, default: int) -> int:
    """The limit ``UNCLIP_MAX_<NAME>`` from the environment, else ``default``."""
    var = f"UNCLIP_MAX_{name}"
    raw = os.environ.get(var, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 1:
        raise UserError(f"{var}={excerpt(os.environ[var])}: give a whole number of at least 1")
    return value


MAX_FILE_BYTES = 16 << 20
"""The largest file read whole (a workflow, a preset, a sweep's @file, a PNG text chunk holding a
workflow) unless UNCLIP_MAX_FILE_BYTES says otherwise."""


def file_limit() -> int:
    """The bytes a file read whole may have: UNCLIP_MAX_FILE_BYTES, else 16 MiB."""
    return env_limit("FILE_BYTES", MAX_FILE_BYTES)


def over_limit(text: str, count: int, limit: int, name: str, arg: str | None = None,
               **where) -> UserError:
    """The error for ``count`` (said in ``text``) over ``limit``, saying how to raise it: the
    variable ``UNCLIP_MAX_<NAME>``, or the Python argument ``arg``."""
    how = f"UNCLIP_MAX_{name}={count}" + (f" (or {arg}={count})" if arg else "")
    return UserError(f"{text}, more than the limit of {limit:,}; to allow it, set {how}",
                     **where)


# --- JSON that cannot hurt ---------------------------------------------------------------------

class _BadNumber(ValueError):
    def __init__(self, literal: str, why: str):
        super().__init__(why)
        self.literal, self.why = literal, why


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[:n - 4] + "..."


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(literal, f"the number {_short(literal)} is too large")
    return value


def _whole(literal: str) -> int:
    import sys
    most = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    digits = len(literal.lstrip("-"))
    if most and digits > most:
        raise _BadNumber(literal, f"a number with {digits:,} digits is too long (at most "
                                  f"{most:,})")
    return int(literal)


def _constant(literal: str) -> float:
    raise _BadNumber(literal, f"{literal} is not a JSON number; give a finite number")


def _line_col(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def _deepest(text: str) -> tuple[int, int]:
    """(depth, position) of the deepest '[' or '{' outside strings (the first such place)."""
    import re
    depth = best = where = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > best:
                best, where = depth, m.start()
        elif c in "]}":
            depth -= 1
    return best, where


def parse_json(text: str, file: str | None = None, what: str = "JSON") -> object:
    """``json.loads`` whose every failure is a UserError placed in ``file`` (line and column
    where known): syntax errors, nesting too deep for Python (RecursionError), numbers Python
    will not read (an integer of more digits than ``sys.get_int_max_str_digits()``) or that
    overflow to infinity, and NaN/Infinity, which JSON does not have."""
    import json
    try:
        return json.loads(text, parse_float=_finite, parse_int=_whole, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} syntax error: {e.msg}", file=file, line=e.lineno,
                        column=e.colno) from None
    except _BadNumber as e:
        pos = text.find(e.literal)
        line, col = _line_col(text, pos) if pos >= 0 else (None, None)
        raise UserError(f"{what}: {e.why}", file=file, line=line, column=col) from None
    except RecursionError:
        depth, pos = _deepest(text)
        line, col = _line_col(text, pos)
        raise UserError(f"{what} nested too deeply: {depth:,} levels of [ and {{", file=file,
                        line=line, column=col) from None
    except ValueError as e:  # anything else json refuses (e.g. a lone surrogate in a key)
        raise UserError(f"{what}: cannot read it: {e}", file=file) from None
