"""WHERE clauses assembled from the filters a request actually gives.

Values are always bound (`$n`), never formatted in. One catch-all statement with
`$n IS NULL OR ...` arms ends up with a generic plan that fits no combination well (a
whole-table scan for the rare filter); a statement per combination gets a plan of its own,
and asyncpg prepares each once per connection.
"""

from __future__ import annotations


class Where:
    """Conditions and their arguments, numbered in the order they are added."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[object] = []

    def arg(self, value: object) -> str:
        """Bind a value; its placeholder."""
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, template: str, *values: object) -> None:
        """A condition whose `{}`s take the values, bound in order."""
        self.conditions.append(template.format(*(self.arg(v) for v in values)))

    def literal(self, condition: str) -> None:
        """A condition with no values (e.g. one that matches a partial index's predicate)."""
        self.conditions.append(condition)

    def sql(self) -> str:
        return ("WHERE " + "\n  AND ".join(self.conditions)) if self.conditions else ""
