"""``labelled``: one child per metric and label values, counting into the registry."""

from __future__ import annotations

from pixelgate.observability.metrics import CACHE_HITS, REGISTRY, WEBHOOK_DELIVERIES, labelled


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_child_is_made_once_and_counts_where_labels_would() -> None:
    before = _value("pixelgate_cache_hits_total", outcome="miss")
    child = labelled(CACHE_HITS, "miss")
    assert labelled(CACHE_HITS, "miss") is child
    assert child is CACHE_HITS.labels("miss")
    labelled(CACHE_HITS, "miss").inc()
    assert _value("pixelgate_cache_hits_total", outcome="miss") == before + 1
    # another metric with the same label values is another child
    assert labelled(WEBHOOK_DELIVERIES, "miss") is not child
