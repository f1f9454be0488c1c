"""The metrics the backend exports (easysmart.metrics, read back from prometheus_client's registry) and the
metric names a PromQL expression refers to, for the checks of infra/observability/ and the README's table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import easysmart.metrics

# The catalogue's prefix: the registry also holds prometheus_client's own process_* and python_* collectors,
# which a function's /metrics does not serve (it reads the workers' files, easysmart.observability).
PREFIX = "esm_"
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


@dataclass(frozen=True)
class Metric:
    name: str  # as PromQL names it: counters with _total, histograms by their base name
    type: str  # counter, gauge, histogram
    labels: tuple[str, ...]

    def series(self) -> set[str]:
        """The names of the series a scrape shows for it."""
        if self.type == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def catalogue() -> dict[str, Metric]:
    """Every metric easysmart.metrics declares, by name."""
    labels = {
        wrapper._name: tuple(wrapper._labelnames)  # prometheus_client keeps them private; describe() omits them
        for wrapper in vars(easysmart.metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    metrics = {}
    for family in REGISTRY.collect():
        if not family.name.startswith(PREFIX):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        metrics[name] = Metric(name, family.type, labels[family.name])
    return metrics


def exported_series() -> set[str]:
    return set().union(*(metric.series() for metric in catalogue().values()))


# PromQL's tokens, in the order they are tried: what is not an identifier is skipped whole, so that neither a
# label value nor a duration nor a number is read as a metric name.
_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
    r"|(?P<matchers>\{[^}]*\})"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)*)"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<other>\S)"
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
# Each is followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (function and aggregation names, keywords, label names, label values,
    durations and numbers left out)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "name" and text.lower() in _LABEL_LISTS:
            if following == "(":
                i = _closing(tokens, i + 1)
        # A name before "(" is a function's, before by/without an aggregation's (sum by (le) (...)).
        elif kind == "name" and following != "(" and following.lower() not in ("by", "without"):
            if text.lower() not in _KEYWORDS:
                names.add(text)
        i += 1
    return names


def _closing(tokens: list[tuple[str | None, str]], opening: int) -> int:
    """The index of the parenthesis closing the one at `opening` (a label list holds no parentheses)."""
    for j in range(opening + 1, len(tokens)):
        if tokens[j][1] == ")":
            return j
    raise ValueError("unbalanced parentheses")
