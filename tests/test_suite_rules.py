"""Rules the test suite keeps: no hypothesis test returns early (an example that returns checks nothing).

A ``@given`` test must assert on every example it runs: invalid cases are
excluded by the strategy (or ``assume``), never skipped with ``return``, which
hypothesis counts as a passing example.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_given(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "given") or (
        isinstance(target, ast.Attribute) and target.attr == "given"
    )


def _own_returns(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Return]:
    """The ``return`` statements of ``function`` itself, not of functions, lambdas or classes inside it."""
    found, waiting = [], list(function.body)
    while waiting:
        node = waiting.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return):
            found.append(node)
        waiting.extend(ast.iter_child_nodes(node))
    return found


def early_returns(source: str, name: str) -> list[str]:
    """``file:line test`` for each ``return`` in the body of a ``@given`` test of ``source``."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(map(_is_given, node.decorator_list)):
            hits += [f"{name}:{ret.lineno} {node.name}" for ret in _own_returns(node)]
    return hits


def test_no_hypothesis_test_returns_early():
    hits = [hit for path in sorted(TESTS.glob("*.py")) for hit in early_returns(path.read_text(), path.name)]
    assert not hits, f"@given tests that return early (use a strategy that makes only valid cases): {hits}"


def test_the_rule_finds_returns_and_only_in_the_test_itself():
    source = '''
import hypothesis
from hypothesis import given

@settings(max_examples=5)
@given(st.integers())
def test_skips(n):
    if n < 0:
        return
    assert n >= 0

@hypothesis.given(st.integers())
def test_returns_none(n):
    for _ in range(n):
        if n:
            return None

@given(st.integers())
def test_helper_may_return(n):
    def helper(m):
        return m
    assert helper(n) == (lambda m: m)(n)

def test_plain(n):
    return
'''
    assert early_returns(source, "x.py") == ["x.py:9 test_skips", "x.py:16 test_returns_none"]
