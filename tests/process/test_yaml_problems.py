"""YAML errors in plain words: each known problem is said simply, at the place to look."""

from __future__ import annotations

import pytest
import yaml

from middleware.process.yaml_problems import YamlProblem, yaml_problem


def problem_of(text: str) -> YamlProblem:
    """Return the plain problem of a YAML text that does not parse."""
    with pytest.raises(yaml.YAMLError) as error:
        yaml.safe_load(text)
    return yaml_problem(error.value)


@pytest.mark.parametrize(
    ("text", "line", "column", "said"),
    [
        ("a:\n  b: c: d\n", 2, 7, "a “key: value” is not allowed here"),
        ("a: [b, c\n", 1, 4, "the “[” here is never closed by a “]”"),
        ("a: {b: 1\n", 1, 4, "the “{” here is never closed by a “}”"),
        ("a:\n\tb: 1\n", 2, 1, "a tab: YAML is indented with spaces only"),
        ("a:\n    b: 1\n  c: 2\n", 3, 3, "this line is not indented like the lines above it"),
        ('a: "open\n', 1, 4, "the quoted text that starts here is never closed"),
        ("a: 1\nb\nc: 2\n", 2, 1, "this line is neither “key: value” nor a list item"),
        ("a: @b\n", 1, 4, "a value cannot start with “@”: put the value in quotes"),
        ("a: ]\n", 1, 4, "a value cannot start with “]”: put the value in quotes"),
        ("a: *b\n", 1, 4, "“*b” refers to an anchor “&b” that is not defined"),
        ("a: !!python/object b\n", 1, 4, "this tag is not allowed"),
        ("a: 1\n---\nb: 2\n", 2, 1, "a second document starts here"),
        ("a: [b, c]]\n", 1, 10, "this “]” closes nothing"),
        ("[a]\nb: c\n", 2, 1, "nothing can follow here: the text above is already complete"),
        ("a: - b\n", 1, 4, "a list item “- ” cannot start here"),
    ],
)
def test_a_known_problem_is_said_plainly_where_to_look(text, line, column, said):
    """Each problem names the line and column to look at and no parser vocabulary."""
    problem = problem_of(text)
    assert (problem.line, problem.column) == (line, column)
    assert problem.text.startswith(said)
    assert str(problem).startswith(f"line {line}, column {column}: {said}")
    assert "<" not in problem.text and "scanning" not in problem.text


def test_an_unknown_problem_keeps_the_parsers_words():
    """A problem without a plain wording is said as the parser says it, at its place."""
    problem = problem_of("%YAML 1.1\n%YAML 1.1\n---\na: 1\n")
    assert problem == YamlProblem("found duplicate YAML directive", 2, 1)


def test_a_token_of_the_parser_is_said_by_its_name():
    """The parser's tokens ('<anchor>') lose their brackets in a problem without a wording."""
    problem = problem_of("a: 1\n&b &c d\n")
    assert "<" not in problem.text and problem.line == 2
