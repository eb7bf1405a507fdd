"""Write the table of rules in docs/rules.md from the rule catalogue
(converters/validation/rules.yaml), between its two markers; the rest of the page is written
by hand.  tests/test_rules.py checks the page is up to date.

    python scripts/build_rules_doc.py [--check]
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "rules.md"
BEGIN = "<!-- rules table: generated from converters/validation/rules.yaml by scripts/build_rules_doc.py -->"
END = "<!-- end of rules table -->"


def table() -> str:
    from trialbridge.converters.validation.rules import RULES

    lines = ["| id | severity | what it checks | CDISC CORE | mirrors | confirmed by | written as |",
             "|---|---|---|---|---|---|---|"]
    for r in RULES:
        how = f"operator `{r.operator['name']}`" if r.operator else f"check `{r.check.__module__.rsplit('.', 1)[1]}.{r.check.__name__}`"
        core = ", ".join(r.core) or "none"
        cells = [f"`{r.id}`", r.severity, r.checks, core, r.mirrors, r.confirmed_by or "—", how]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("docs/rules.md is out of date: python scripts/build_rules_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
