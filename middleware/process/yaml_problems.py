"""YAML syntax errors said in plain words, at the line and column an admin has to look at.

PyYAML reports where its parser gave up, which is often not where the mistake is: a list
opened with "[" and never closed fails at the end of the text, a quote never closed fails
on the next line. Each known problem names the place to look (the opening bracket, the
opening quote) and says what is wrong without the parser's vocabulary ("<block end>").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

# (PyYAML's problem, the plain wording, whether the place is the context's mark rather than
# the problem's): the first whose pattern matches the whole problem words it.
PLAIN = [
    (r"mapping values are not allowed here",
     "a “key: value” is not allowed here (check this line's indentation, and put a value that "
     "holds “: ” in quotes)", False),
    (r"found character '\\t' that cannot start any token",
     "a tab: YAML is indented with spaces only", False),
    (r"found character '(.+)' that cannot start any token|"
     r"expected the node content, but found '(.+)'",
     r"a value cannot start with “\1\2”: put the value in quotes", False),
    (r"expected ',' or '\]', but got .*",
     "the “[” here is never closed by a “]”, or a comma is missing between its items", True),
    (r"expected ',' or '\}', but got .*",
     "the “{” here is never closed by a “}”, or a comma is missing between its items", True),
    (r"expected '?<(?:block end|document start)>'?, but found '([\]}])'",
     r"this “\1” closes nothing", False),
    (r"expected <block end>, but found .*",
     "this line is not indented like the lines above it", False),
    (r"expected '<document start>', but found .*",
     "nothing can follow here: the text above is already complete", False),
    (r"sequence entries are not allowed here",
     "a list item “- ” cannot start here (start the list on the next line, indented, or put "
     "the value in quotes)", False),
    (r"could not find expected ':'",
     "this line is neither “key: value” nor a list item “- value”", True),
    (r"found unexpected end of stream",  # in a quoted text, its context
     "the quoted text that starts here is never closed", True),
    (r"found undefined alias '(.+)'",
     r"“*\1” refers to an anchor “&\1” that is not defined", False),
    (r"could not determine a constructor for the tag .*",
     "this tag is not allowed: a mapping holds plain values only", False),
    (r"but found another document",
     "a second document starts here (“---”): a mapping is one document", False),
]  # fmt: skip
# Parser words an admin does not know, in a problem said as PyYAML says it.
TOKEN_WORDS = {
    "'<stream end>'": "the end of the text",
    "'<block mapping start>'": "a more indented line",
    "'<block sequence start>'": "a more indented list",
    "'<scalar>'": "a value",
}


@dataclass(frozen=True)
class YamlProblem:
    """What is wrong in a YAML text, and where (1-based; None when the parser gave no place)."""

    text: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.text
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.text}"


def yaml_problem(exc: yaml.YAMLError) -> YamlProblem:
    """Say in plain words what a YAML error means, placed where the admin should look."""
    problem = str(getattr(exc, "problem", None) or exc)
    context = str(getattr(exc, "context", None) or "")
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None) or problem_mark
    text, at_context = _plain(problem, context)
    mark = context_mark if at_context else problem_mark
    if mark is None:
        return YamlProblem(text)
    return YamlProblem(text, mark.line + 1, mark.column + 1)


def _plain(problem: str, context: str) -> tuple[str, bool]:
    """Return the plain wording of a problem, and whether its place is the context's mark."""
    for pattern, wording, at_context in PLAIN:
        if found := re.fullmatch(pattern, problem):
            return found.expand(wording), at_context
    for token, words in TOKEN_WORDS.items():
        problem = problem.replace(token, words)
    problem = re.sub(r"'?<([a-z ]+)>'?", r"\1", problem)  # any other token: its name
    return (f"{problem} ({context})" if context else problem), False
