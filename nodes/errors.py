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
            who.append(f"node '{self.node}'")
        if self.field is not None:
            who.append(f"field '{self.field}'")
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
        raise UserError(f"{var}={os.environ[var]!r}: give a whole number of at least 1")
    return value


def over_limit(text: str, count: int, limit: int, name: str, arg: str | None = None,
               **where) -> UserError:
    """The error for ``count`` (said in ``text``) over ``limit``, saying how to raise it: the
    variable ``UNCLIP_MAX_<NAME>``, or the Python argument ``arg``."""
    how = f"UNCLIP_MAX_{name}={count}" + (f" (or {arg}={count})" if arg else "")
    return UserError(f"{text}, more than the limit of {limit:,}; to allow it, set {how}",
                     **where)
