"""What scripts/nbbuild.py writes for each runbook: prose and thin cells."""

from __future__ import annotations

from typing import Any

DEMO_START = "2026-11-20T14:10:00Z"


def demo_parameters(alert_name: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert_name": alert_name,
        "severity": severity,
        "status": "firing",
        "labels": {"alertname": alert_name, "service": "inference-api", "severity": severity},
        "annotations": {"summary": summary},
        "starts_at": DEMO_START,
        "ends_at": "",
        "group_key": "",
        "fingerprints": [],
        "lookback": "2h",
        "baseline": "1d",
        "source": "demo",
    }


ESCALATION = ("md", "## 6. Escalation\n\nFrom the team's config (`escalation:`).")
ESCALATION_CODE = ("code", "incident.escalation()")

HIGH_LATENCY: dict[str, Any] = {
    "runbook": "high-latency",
    "short_title": "High latency",
    "title": "High latency: the inference API is slow",
    "alerts": ["HighLatency", "HighLatencyP99", "SlowInference"],
    "group": "service",
    "summary": (
        "p50/p90/p99 against baseline; onset; the routes, instances and model versions "
        "responsible; load and errors beside it."
    ),
    "intro": (
        "Runbook **high-latency** (service group). Run it top to bottom: every query is a named "
        "entry of the catalog (`workbooks/notebook/queries.yaml`, overridable in your config); to try a "
        "changed query, pass `promql=...` to `incident.query` in that cell and re-run it."
    ),
    "imports": "from workbooks.runbooks import high_latency",
    "parameters": demo_parameters(
        "HighLatency", "critical", "p99 latency of inference-api above 1 s for 5 minutes"
    ),
    "cells": [
        (
            "md",
            "## 1. Alert description\n\n"
            "**What it means.** Requests to the inference API take longer than the latency SLO "
            "allows (p99 above its threshold for several minutes). Users feel it as slow answers "
            "in the apps, and mobile clients time out and retry, which adds load.\n\n"
            "**Severity.** critical when p99 is severely degraded; warning for a moderate slowdown.",
        ),
        ("code", "incident.describe()"),
        (
            "md",
            "## 2. Immediate actions\n\n"
            "- [ ] Is it still happening? (checked below: the last 10 minutes against the baseline)\n"
            "- [ ] A deploy or model rollout near the onset? Roll it back (section 3.2).\n"
            "- [ ] Saturated (CPU, traffic above baseline)? Scale out (section 3.4).\n"
            "- [ ] One bad instance? Drain it (section 3.3).",
        ),
        (
            "code",
            'p99 = incident.query("latency_quantile", quantile=0.99, percentile=99)\n'
            'by_route = incident.query("latency_p99_by_route")\n'
            "high_latency.still_happening(incident, p99, by_route)",
        ),
        (
            "md",
            "## 3. Investigation\n\n### 3.1 Latency over the window\n\n"
            "p50, p90 and p99 of the whole service, the baseline window dashed, the alert start "
            "and the onset the analysis found marked.",
        ),
        (
            "code",
            'p50 = incident.query("latency_quantile", quantile=0.5, percentile=50)\n'
            'p90 = incident.query("latency_quantile", quantile=0.9, percentile=90)\n'
            "onset = high_latency.overview(incident, p50, p90, p99)",
        ),
        (
            "md",
            "### 3.2 What changed\n\nModel versions per instance on the same time axis: did "
            "a rollout come just before the onset, and does the slowdown follow the new version "
            "across instances?",
        ),
        (
            "code",
            'versions = incident.query("model_versions", baseline=False)\n'
            'by_instance = incident.query("latency_p99_by_instance")\n'
            "high_latency.what_changed(incident, versions, by_instance, onset)",
        ),
        (
            "md",
            "### 3.3 Where\n\nEach route and instance against **its own** baseline, so a "
            "route that is always slow is not blamed for being slow.",
        ),
        (
            "code",
            "high_latency.where(incident, by_route, by_instance, onset)",
        ),
        (
            "md",
            "### 3.4 Load and saturation\n\nRequest rate against its baseline, CPU per "
            "instance, and the error rate beside latency (timeouts often show as 5xx).",
        ),
        (
            "code",
            'rate = incident.query("request_rate")\n'
            'cpu = incident.query("cpu_by_instance")\n'
            'errors = incident.query("error_ratio")\n'
            "high_latency.load_and_saturation(incident, rate, errors, cpu, onset)",
        ),
        ("md", "## 4. Resolution steps\n\nChosen by what was found above, causes first."),
        ("code", "high_latency.resolution(incident)"),
        (
            "md",
            "## 5. Prevention\n\n"
            "- Canary analysis on p99 per route before a model or service rollout goes to every "
            "instance.\n"
            "- Capacity headroom: keep peak CPU under ~70% of the instance's cores.\n"
            "- Where this alert was noise, alert on SLO burn rate instead of a raw threshold.\n"
            "- After the incident: review and update this runbook; record the runbook version "
            "(the artifact carries its hash).",
        ),
        ESCALATION,
        ESCALATION_CODE,
    ],
}

HIGH_MEMORY: dict[str, Any] = {
    "runbook": "high-memory",
    "short_title": "High memory usage",
    "title": "High memory usage: an instance is running out of memory",
    "alerts": ["HighMemoryUsage", "MemoryNearLimit", "ContainerOOMKilled"],
    "group": "infrastructure",
    "summary": (
        "Memory per instance against its limit; leak or step change; time until the limit; "
        "restarts; the instances and model versions responsible."
    ),
    "intro": (
        "Runbook **high-memory** (infrastructure group). Run it top to bottom; every query is a "
        "named catalog entry (`workbooks/notebook/queries.yaml`, overridable in your config); pass "
        "`promql=...` to `incident.query` in a cell to try a changed query."
    ),
    "imports": "from workbooks.runbooks import high_memory",
    "parameters": demo_parameters(
        "HighMemoryUsage", "warning", "Memory of an inference-api instance will reach its limit"
    ),
    "cells": [
        (
            "md",
            "## 1. Alert description\n\n"
            "**What it means.** An instance of the service is using most of its memory limit, or "
            "grows towards it. At the limit the kernel OOM-kills the process: in-flight requests "
            "fail and the model reloads (tens of seconds of lost capacity per instance).\n\n"
            "**Severity.** critical when an instance is above 90% of its limit or will reach it "
            "within the hour; warning otherwise.",
        ),
        ("code", "incident.describe()"),
        (
            "md",
            "## 2. Immediate actions\n\n"
            "- [ ] How close is each instance to its limit? (checked below)\n"
            "- [ ] Above 90%: restart or drain that instance now to avoid an OOM kill mid-request.\n"
            "- [ ] A rollout just before the growth? Roll it back (section 3.2).",
        ),
        (
            "code",
            'memory = incident.query("memory_by_instance")\n'
            'limits = incident.query("memory_limit_by_instance", baseline=False)\n'
            "high_memory.headroom(incident, memory, limits)",
        ),
        (
            "md",
            "## 3. Investigation\n\n### 3.1 Memory per instance against its limit\n\n"
            "Each instance's resident memory, its baseline dashed, the limit drawn.",
        ),
        ("code", "high_memory.overview(incident, memory, limits)"),
        (
            "md",
            "### 3.2 Leak or step change\n\nA leak is steady growth (projected to the "
            "limit); a step is a jump that stays, often when a new model version is loaded. Each "
            "instance is judged against its own history, so an instance that is always large is "
            "not blamed for its size.",
        ),
        (
            "code",
            'versions = incident.query("model_versions", baseline=False)\n'
            "high_memory.growth(incident, memory, limits, versions)",
        ),
        (
            "md",
            "### 3.3 Restarts\n\nA process start time that changes is a restart; a "
            "restart of a growing process is often an OOM kill.",
        ),
        (
            "code",
            'starts = incident.query("process_start_by_instance", baseline=False)\n'
            "high_memory.restarts(incident, starts)",
        ),
        ("md", "## 4. Resolution steps\n\nChosen by what was found above, causes first."),
        ("code", "high_memory.resolution(incident)"),
        (
            "md",
            "## 5. Prevention\n\n"
            "- Alert on `predict_linear` of memory against the limit, not on a raw percentage.\n"
            "- Load-test each model version for memory before rollout; canary one instance.\n"
            "- Set memory requests and limits from the measured peak plus headroom.\n"
            "- After the incident: review and update this runbook.",
        ),
        ESCALATION,
        ESCALATION_CODE,
    ],
}

ACCURACY_DROP: dict[str, Any] = {
    "runbook": "accuracy-drop",
    "short_title": "Accuracy drop",
    "title": "Accuracy drop: the model answers worse than it did",
    "alerts": ["ModelAccuracyDrop", "AccuracyDrop", "EvalAccuracyLow"],
    "group": "model",
    "summary": (
        "Online accuracy by model version and eval set against baseline; when it began "
        "relative to a rollout; which version, eval set and modality dropped."
    ),
    "intro": (
        "Runbook **accuracy-drop** (model group). Run it top to bottom; every query is a named "
        "catalog entry (`workbooks/notebook/queries.yaml`, overridable in your config); pass `promql=...` "
        "to `incident.query` in a cell to try a changed query."
    ),
    "imports": "from workbooks.runbooks import accuracy_drop",
    "parameters": demo_parameters(
        "ModelAccuracyDrop", "critical", "Online accuracy of mm-llm dropped below its baseline"
    ),
    "cells": [
        (
            "md",
            "## 1. Alert description\n\n"
            "**What it means.** The online evaluation of the serving model scores lower than it "
            "used to on one or more eval sets. Users get worse answers (wrong OCR, misheard audio, "
            "weaker captions) while latency and errors may look perfectly normal.\n\n"
            "**Severity.** critical for a drop of 5 points or more; warning from 2 points.",
        ),
        ("code", "incident.describe()"),
        (
            "md",
            "## 2. Immediate actions\n\n"
            "- [ ] Is accuracy still below its baseline? (checked below)\n"
            "- [ ] Did a model version roll out just before? Roll back (section 3.2).\n"
            "- [ ] Only one modality? Consider routing it to the previous version.",
        ),
        (
            "code",
            'accuracy = incident.query("accuracy_by_version_eval_set")\n'
            "onset = accuracy_drop.still_happening(incident, accuracy)",
        ),
        (
            "md",
            "## 3. Investigation\n\n### 3.1 Accuracy over the window\n\n"
            "Each eval set against its baseline, model rollouts marked.",
        ),
        (
            "code",
            'versions = incident.query("model_versions", baseline=False)\n'
            "rollouts = accuracy_drop.overview(incident, accuracy, versions, onset)",
        ),
        (
            "md",
            "### 3.2 Which version, eval set and modality\n\nEach eval set against **its "
            "own** baseline, in points, so the eval set that is always hardest is not blamed for "
            "being hard.",
        ),
        ("code", "accuracy_drop.which(incident, accuracy, rollouts, onset)"),
        ("md", "## 4. Resolution steps\n\nChosen by what was found above, causes first."),
        ("code", "accuracy_drop.resolution(incident)"),
        (
            "md",
            "## 5. Prevention\n\n"
            "- Gate every rollout on the offline eval of each eval set, not only the average.\n"
            "- Canary new versions and compare online accuracy per eval set before full rollout.\n"
            "- Keep the previous version warm so rollback takes seconds.\n"
            "- After the incident: review and update this runbook.",
        ),
        ESCALATION,
        ESCALATION_CODE,
    ],
}

TEMPLATE: dict[str, Any] = {
    "runbook": "new-runbook",
    "short_title": "New runbook",
    "title": "New runbook: what the alert means in one line",
    "alerts": ["NewAlertName"],
    "group": "service",
    "summary": "One line: what this runbook checks and what it can name as the cause.",
    "intro": (
        "Skeleton for a new runbook: copy to `notebooks/<runbook-id>.ipynb`, set "
        "`metadata.workbooks` (Edit > Notebook metadata), keep the parameters cell as it is, and "
        "put each step's logic in `lib/workbooks/runbooks/<runbook_id>.py` with a unit test. "
        "Cells stay thin: a named catalog query, then one call that charts and records findings."
    ),
    "imports": "from workbooks.core.findings import Finding",
    "parameters": {
        **demo_parameters("NewAlertName", "warning", "What the alert says"),
        "source": "prometheus",
    },
    "cells": [
        (
            "md",
            "## 1. Alert description\n\n**What it means.** Which SLO it protects, what users "
            "feel.\n\n**Severity.** When it is critical, when a warning.",
        ),
        ("code", "incident.describe()"),
        ("md", "## 2. Immediate actions\n\n- [ ] Is it still happening?\n- [ ] Stabilize: ..."),
        (
            "code",
            'rate = incident.query("request_rate")  # a catalog entry; promql="..." to edit\n'
            "incident.timeseries(rate)",
        ),
        ("md", "## 3. Investigation\n\n### 3.1 First question\n\nWhat this step asks."),
        (
            "code",
            "incident.record(Finding(severity='info', title='Replace with a finding from a "
            "library step', subject={'service': incident.service}))",
        ),
        ("md", "## 4. Resolution steps\n\nChosen by what was found above."),
        ("md", "## 5. Prevention\n\n- ..."),
        ESCALATION,
        ESCALATION_CODE,
    ],
}

SPECS: dict[str, dict[str, Any]] = {
    "high-latency": HIGH_LATENCY,
    "high-memory": HIGH_MEMORY,
    "accuracy-drop": ACCURACY_DROP,
}
