"""An alert storm against the real uvicorn server: every firing set runs once, nothing is lost.

Thirty groups of eight alerts each (240 alerts), posted by sixteen threads at once, three copies
of every delivery. Then a ninth alert joins a third of the groups; in a fifth of them one alert
resolves while the others still fire; then half the groups resolve entirely while the others
send a late repeat. As Alertmanager does, one group's notifications come in order: each phase
starts once the last one was answered, and the copies within a phase race each other.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from test_service import ServiceThread, alert, delivery, service_config, wait_for
from workbooks.service.app import Service

GROUPS = 30
ALERTS_PER_GROUP = 8
COPIES = 3
THREADS = 16


def _group_alerts(group: int, count: int, resolved: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        alert(
            "EchoAlert",
            f"g{group:02d}-a{index}",
            status="resolved" if index in resolved else "firing",
            starts=f"2026-11-28T14:{index:02d}:00Z",  # a0 is the earliest: it names the incident
            instance=f"api-{index}",
            shard=f"shard-{group}",
        )
        for index in range(count)
    ]


def _storm_phases() -> list[list[tuple[int, dict[str, Any]]]]:
    """Per phase, the deliveries (group, payload) to post; each is posted COPIES times."""

    def key(group: int) -> str:
        return f'{{}}:{{alertname="EchoAlert", shard="shard-{group}"}}'

    def posted(group: int, alerts: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return group, delivery(*alerts, group_key=key(group))

    first, joins, partials, last = [], [], [], []
    for group in range(GROUPS):
        first.append(posted(group, _group_alerts(group, ALERTS_PER_GROUP)))
        count = ALERTS_PER_GROUP + (1 if group % 3 == 0 else 0)
        if group % 3 == 0:  # an alert joins: a new firing set
            joins.append(posted(group, _group_alerts(group, count)))
        if group % 5 == 0:  # one alert resolves, the rest still fire: a new firing set too
            partials.append(posted(group, _group_alerts(group, count, resolved=(1,))))
        if group % 2 == 0:  # the whole group resolves
            last.append(posted(group, _group_alerts(group, count, resolved=tuple(range(count)))))
        else:  # a late repeat of the first delivery, while others resolve
            last.append(first[-1])
    return [first, joins, partials, last]


def _expected_firing_sets(phases: list[list[tuple[int, dict[str, Any]]]]) -> dict[int, set]:
    sets: dict[int, set] = {group: set() for group in range(GROUPS)}
    for phase in phases:
        for group, payload in phase:
            firing = frozenset(
                a["fingerprint"] for a in payload["alerts"] if a["status"] == "firing"
            )
            if firing:
                sets[group].add(firing)
    return sets


def test_every_firing_set_runs_once_in_a_storm(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    config = service_config(archive_dir, dedup_window_seconds=3600)
    service = Service(config=config, archive_dir=archive_dir, source="demo", workers=2)
    phases = _storm_phases()
    expected = _expected_firing_sets(phases)
    answers: list[dict[str, Any]] = []
    latencies = []
    started = time.monotonic()
    with ServiceThread(service) as running, ThreadPoolExecutor(THREADS) as pool:

        def post(payload: dict[str, Any]) -> dict[str, Any]:
            sent = time.monotonic()
            response = running.post(payload)
            latencies.append(time.monotonic() - sent)
            assert response.status_code == 202, response.text
            return response.json()

        for number, phase in enumerate(phases):
            copies = [payload for _, payload in phase for _ in range(COPIES)]
            random.Random(number).shuffle(copies)
            answers += list(pool.map(post, copies))
        accepted_in = time.monotonic() - started
        wait_for(running.drained, 120, "the queue to drain")
        drained_in = time.monotonic() - started
        queued_metric = running.metric("workbooks_runs_queued_total")
        succeeded_metric = running.metric("workbooks_runs_succeeded_total")

    archive = service.archive
    runs = archive.runs()
    queued = [entry for answer in answers for entry in answer["queued"]]
    total = sum(len(sets) for sets in expected.values())
    assert len(queued) == total, "one run queued per distinct firing set"
    assert len(runs) == total, "and each of them ran, once"
    assert queued_metric == succeeded_metric == total
    assert all(run.status == "succeeded" for run in runs)
    assert service.queue.pending_count() == 0

    incidents = {answer["incidents"][0] for answer in answers}
    assert len(incidents) == GROUPS  # joins and partial resolutions are runs of the same incident
    assert {run.incident_id for run in runs} == incidents  # named as the service said
    runs_by_incident = Counter(run.incident_id for run in runs)
    for run in runs:
        group = int(run.labels["shard"].removeprefix("shard-"))
        assert runs_by_incident[run.incident_id] == len(expected[group])
    ran_sets = Counter(
        (run.incident_id, frozenset(_firing(run.path / "alert.json"))) for run in runs
    )
    assert set(ran_sets.values()) == {1}, "no firing set ran twice"

    for incident in incidents:
        shard = next(run for run in runs if run.incident_id == incident).labels["shard"]
        group = int(shard.removeprefix("shard-"))
        summary = archive.incident(incident)
        assert summary.status == ("resolved" if group % 2 == 0 else "firing"), (group, summary)

    deduplicated = sum(len(answer["deduplicated"]) for answer in answers)
    resolved = sum(len(answer["resolved"]) for answer in answers)
    assert deduplicated + resolved + total == len(answers)
    latencies.sort()
    print(
        f"\n{len(answers)} deliveries accepted in {accepted_in:.1f} s "
        f"(p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms); "
        f"{total} runs drained {drained_in:.1f} s after the first post"
    )


def _firing(alert_file: Path) -> list[str]:
    payload = json.loads(alert_file.read_text())
    return [each["fingerprint"] for each in payload["alerts"] if each["status"] == "firing"]
