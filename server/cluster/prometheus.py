"""Several workers' Prometheus expositions as one, each sample labelled ``worker``. Pure.

Every worker keeps its own registry (server/metrics.py); a scrape through any worker must
see them all, so each worker publishes its text to Redis with its heartbeat and the one
being scraped merges them: the same families, one HELP/TYPE each, samples of every worker
with a ``worker="<id>"`` label. Sum over ``worker`` in PromQL for cluster totals.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else f"{value:.1f}"


def merge(expositions: Mapping[str, str]) -> str:
    """``{worker_id: exposition text}`` -> one exposition with a ``worker`` label."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for worker, text in sorted(expositions.items()):
        for family in text_string_to_metric_families(text):
            _, _, lines = families.setdefault(family.name, (family.documentation, family.type, []))
            for sample in family.samples:
                labels = {"worker": worker, **sample.labels}
                rendered = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{sample.name}{{{rendered}}} {_number(sample.value)}")
    out = []
    for name, (doc, kind, lines) in families.items():
        if kind == "counter":  # text format 0.0.4, as prometheus_client writes it
            name += "_total"
        out.append(f"# HELP {name} {_help(doc or name)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"
