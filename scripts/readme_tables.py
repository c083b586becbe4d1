"""Write README.md's generated tables from the data they come from.

    python scripts/readme_tables.py           # rewrite the table between <!-- recipes:start --> / <!-- recipes:end -->
    python scripts/readme_tables.py --check   # exit 1 (and say so) if README.md is stale; write nothing

The "Recipes and published numbers" table is rendered by :func:`wsss.recipes.render_table` from the ``published:``
blocks of ``conf/experiment/*.yaml``; ``tests/test_recipes.py`` runs the same comparison as ``--check``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsss.recipes import RecipeError, render_table, replace_table

README = Path(__file__).resolve().parents[1] / "README.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale; write nothing")
    parser.add_argument("--readme", type=Path, default=README, help=f"default: {README}")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    try:
        new = replace_table(text, render_table())
    except RecipeError as err:
        print(f"{args.readme}: {err}", file=sys.stderr)
        return 2
    if new == text:
        print(f"{args.readme}: up to date")
        return 0
    if args.check:
        print(f"{args.readme}: the recipes table is stale; run `python scripts/readme_tables.py`", file=sys.stderr)
        return 1
    args.readme.write_text(new)
    print(f"{args.readme}: recipes table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
