"""/metrics times each operation's jobs: queue wait (accepted -> first answer) and run time
(first answer -> end), per operation, in buckets from 5 ms to a day; and the Grafana
dashboard shipped in deploy/ reads only metrics the gateway exports."""

from __future__ import annotations

import asyncio
import re

import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.worker import Worker
from tests.support import ROOT, RunningGateway
from tests.test_round_trip import adder

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway.json"


def histogram(exposition: str, name: str) -> dict[tuple[str, str], float]:
    """The samples of histogram `name`, keyed by (sample suffix, op): ("_count", "x")."""
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            suffix = sample.name.removeprefix(name)
            key = suffix if suffix != "_bucket" else f"_bucket{{le={sample.labels['le']}}}"
            samples[(key, sample.labels["op"])] = sample.value
    return samples


async def test_queue_wait_and_run_time_per_operation(
    gateway: RunningGateway, rabbit, run_worker
) -> None:
    worker = adder(gateway, rabbit.url)
    long_op, quick_op = gateway.op("report.generate"), gateway.op("math.add")

    @worker.operation(long_op, long_running=True)  # says `started`, then works
    async def generate(request, job):
        await asyncio.sleep(0.2)
        return {"title": request["title"], "sections": []}

    await run_worker(worker)
    async with gateway.client() as http:
        quick = await http.post(f"/v1/ops/{quick_op}?wait=10", json={"a": 1, "b": 2})
        slow = await http.post(f"/v1/ops/{long_op}?wait=10", json={"title": "T"})
        assert quick.json()["status"] == slow.json()["status"] == "succeeded"
        text = (await http.get("/metrics")).text

    waits = histogram(text, "gateway_job_queue_wait_seconds")
    runs = histogram(text, "gateway_job_run_seconds")
    # Each job's first answer timed its queue wait, under its own operation.
    assert waits[("_count", quick_op)] == 1
    assert waits[("_count", long_op)] == 1
    # Only the job that said `started` before its end has a run time: at least its sleep.
    assert runs[("_count", long_op)] == 1
    assert 0.2 <= runs[("_sum", long_op)] < 10
    assert ("_count", quick_op) not in runs
    # Buckets from 5 ms to a day.
    les = {key for key, op in waits if op == quick_op and key.startswith("_bucket")}
    assert {"_bucket{le=0.005}", "_bucket{le=86400.0}", "_bucket{le=+Inf}"} <= les


async def test_a_cancelled_running_job_ends_its_run(
    gateway: RunningGateway, rabbit, run_worker
) -> None:
    worker = Worker(rabbit.url)
    op = gateway.op("report.generate")
    started = asyncio.Event()

    @worker.operation(op, long_running=True)
    async def generate(request, job):
        started.set()
        await asyncio.sleep(60)

    await run_worker(worker)
    async with gateway.client() as http:
        job = (await http.post(f"/v1/ops/{op}", json={"title": "T"})).json()
        await asyncio.wait_for(started.wait(), 10)
        running = (await http.get(f"/v1/jobs/{job['id']}?wait=10&after=1")).json()
        assert running["status"] == "running"
        assert (await http.delete(f"/v1/jobs/{job['id']}")).status_code == 200
        text = (await http.get("/metrics")).text
    assert histogram(text, "gateway_job_run_seconds")[("_count", op)] == 1


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exported = {
        sample.name
        for family in text_string_to_metric_families(Metrics().exposition().decode())
        for sample in family.samples
    }
    # Labelled metrics without samples yet: their names, as exposition would give them.
    exported |= {
        f"{name}{suffix}"
        for name in ("gateway_job_queue_wait_seconds", "gateway_job_run_seconds")
        for suffix in ("_bucket", "_count", "_sum")
    }
    exported |= {
        "gateway_http_responses_total",
        "gateway_jobs_submitted_total",
        "gateway_jobs_finished_total",
        "gateway_answers_total",
    }
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\bgateway_[a-z_]+", target["expr"]))
    assert used, "the dashboard has no queries"
    assert used <= exported, used - exported
    assert {"gateway_job_queue_wait_seconds_bucket", "gateway_job_run_seconds_bucket"} <= used
