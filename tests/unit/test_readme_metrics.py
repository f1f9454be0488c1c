"""The README's metrics table lists exactly the metrics easysmart.metrics declares, with their types and labels."""

from __future__ import annotations

import re
from pathlib import Path

from support.metric_catalogue import Metric, catalogue

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>[a-z]+) \| (?P<labels>[^|]*) \| [^|]+ \|$")


def readme_metrics(text: str) -> dict[str, Metric]:
    section = text.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert all(rows), "every row of the table is | `name` | type | labels | meaning |"
    return {
        row["name"]: Metric(
            row["name"],
            row["type"],
            tuple(label.strip() for label in row["labels"].split(",") if label.strip() not in ("", "—")),
        )
        for row in rows
    }


def test_the_readme_table_lists_every_metric_of_the_catalogue_and_no_other():
    listed, declared = readme_metrics(README.read_text()), catalogue()

    assert sorted(set(declared) - set(listed)) == [], "declared in easysmart/metrics.py, missing from the README"
    assert sorted(set(listed) - set(declared)) == [], "in the README, not declared in easysmart/metrics.py"
    assert listed == declared, "types and labels as declared"


def test_a_renamed_metric_makes_the_table_differ():
    text = README.read_text().replace("| `esm_db_partitions` |", "| `esm_db_chunks` |")

    assert set(readme_metrics(text)) ^ set(catalogue()) == {"esm_db_chunks", "esm_db_partitions"}
