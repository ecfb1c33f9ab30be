"""Module boundaries: no private name is imported from another module; domain types come from the domain."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "smartmix"


def imports():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smartmix"):
                yield path.relative_to(SRC), node


def test_no_private_name_is_imported_across_modules():
    private = [f"{path}:{node.lineno} {node.module}.{a.name}" for path, node in imports() for a in node.names
               if a.name.startswith("_")]
    assert private == []


def test_messages_requests_and_completions_come_from_the_domain():
    domain = {"Message", "Request", "Completion"}
    elsewhere = [f"{path}:{node.lineno} {node.module}" for path, node in imports()
                 if node.module != "smartmix.domain" and not node.module.startswith("smartmix.domain.")
                 and domain & {a.name for a in node.names}]
    assert elsewhere == []
