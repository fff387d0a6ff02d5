"""User-facing spec errors: where (file:line:col), which key (dotted path), what is wrong."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Literal


@dataclass(frozen=True)
class Location:
    """A place in a spec file, or a command-line override (line is None then)."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"

    @classmethod
    def parse(cls, text: str) -> "Location":
        """The Location whose str() is `text` (plans keep positions as text): `file:line:col`, or a flag."""
        head, sep, col = text.rpartition(":")
        file, sep2, line = head.rpartition(":")
        if sep and sep2 and line.isdigit() and col.isdigit():
            return cls(file, int(line), int(col))
        return cls(text)


@dataclass(frozen=True)
class Issue:
    """One problem in a spec. `path` is the dotted key path as the user writes it in --set."""

    loc: Location
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        where = f"{self.path}: " if self.path else ""
        return f"{self.loc}: {prefix}{where}{self.message}"


class SpecError(Exception):
    """Every error found in a spec, reported together. The CLI prints them and exits with 2."""

    def __init__(self, issues: Iterable[Issue]):
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(str(c) for c in choices)


def issue_json(issue: Issue) -> dict:
    """An issue for `flowspec validate --format json`."""
    loc = issue.loc
    return {"file": loc.file, "line": loc.line, "col": loc.col, "key": issue.path, "message": issue.message,
            "severity": issue.severity}


def annotation(issue: Issue) -> str:
    """A GitHub Actions workflow command that annotates the spec at the issue's line and column (an issue that
    comes from a --set override has no line: it annotates the run's summary)."""
    escape = lambda text: text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    prop = lambda text: escape(text).replace(":", "%3A").replace(",", "%2C")
    loc = issue.loc
    fields = [f"file={prop(loc.file)}"] if loc.line is not None else []
    fields += [f"line={loc.line}", f"col={loc.col}"] if loc.line is not None else []
    fields.append(f"title={prop('flowspec ' + (issue.path or 'spec'))}")
    return f"::{issue.severity} {','.join(fields)}::{escape(issue.message)}"
