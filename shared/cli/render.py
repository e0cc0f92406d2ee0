"""Rich renderings of the platform's own views, kept apart from the commands that fetch them."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def stack_status(status: dict[str, Any]) -> Table:
    table = Table(title=f"slmops stack ({status.get('home', '')})")
    for col in ("component", "pid", "address", "healthy"):
        table.add_column(col)
    for row in status["components"]:
        mark = "[green]yes[/]" if row["healthy"] else "[red]no[/]"
        table.add_row(row["name"], str(row.get("pid") or ""), row.get("address", ""), mark)
    return table
