"""The process's Prometheus metrics: counts kept through `Metrics.count` are the ones served."""

from __future__ import annotations

from prometheus_client import generate_latest

from whiteboard.metrics import Metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_count_adds_one_to_the_labelled_series_each_time() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.count(metrics.commands, "update_bed", "ok")
    metrics.count(metrics.commands, "update_bed", "stale")
    metrics.count(metrics.write_paths, "one_statement")

    assert sample(metrics, "whiteboard_commands_total", {"kind": "update_bed", "result": "ok"}) == 3
    assert sample(metrics, "whiteboard_commands_total", {"kind": "update_bed", "result": "stale"}) == 1
    assert sample(metrics, "whiteboard_write_paths_total", {"path": "one_statement"}) == 1
    assert sample(metrics, "whiteboard_write_paths_total", {"path": "fell_back"}) is None
    served = generate_latest(metrics.registry).decode()
    assert 'whiteboard_commands_total{kind="update_bed",result="ok"} 3.0' in served


def test_each_process_registry_counts_on_its_own() -> None:
    first, second = Metrics(), Metrics()
    first.count(first.commands, "admit", "ok")
    assert sample(second, "whiteboard_commands_total", {"kind": "admit", "result": "ok"}) is None
    second.count(second.commands, "admit", "ok")
    assert sample(first, "whiteboard_commands_total", {"kind": "admit", "result": "ok"}) == 1
