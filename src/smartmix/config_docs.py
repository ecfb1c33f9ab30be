"""docs/config.md's tables of keys, generated from the job-file schema (:mod:`smartmix.config_schema`).

The prose of docs/config.md is written by hand; each table of keys sits between the markers
``<!-- schema: ClassName -->`` and ``<!-- /schema -->`` and is rewritten from that model's fields::

    python -m smartmix.config_docs            # rewrite docs/config.md
    python -m smartmix.config_docs --check    # exit 1 if docs/config.md and the schema disagree
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from smartmix import config_schema

__all__ = ["DOCS_PATH", "render", "render_table", "main"]

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"
_BLOCK = re.compile(r"(<!-- schema: (\w+) -->\n)(.*?)(<!-- /schema -->)", re.DOTALL)


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("doc_default"):
        return str(extra["doc_default"])
    if field.is_required():
        return "(required)"
    if field.default_factory is not None or field.default is None:
        return "none"
    return f"`{json.dumps(field.default)}`"


def render_table(model: type[BaseModel]) -> str:
    """The markdown table of one model's keys: key, default, meaning."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description: every key is documented")
        rows.append(f"| `{field.alias or name}` | {_default(field)} | {field.description} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with every schema block rewritten from the models."""

    def block(match: re.Match[str]) -> str:
        model = getattr(config_schema, match.group(2), None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"docs/config.md names an unknown schema table: {match.group(2)}")
        return match.group(1) + render_table(model) + match.group(4)

    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DOCS_PATH
    text = path.read_text()
    wanted = render(text)
    if check:
        if wanted != text:
            print(f"{path} disagrees with smartmix.config_schema: run python -m smartmix.config_docs", file=sys.stderr)
            return 1
        return 0
    if wanted != text:
        path.write_text(wanted)
        print(f"rewrote the tables of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
