"""The Grafana dashboard in docker/grafana/ against what the gateway really exports.

Every metric a dashboard query names must be in /metrics, with samples, while a migration
runs (backfill done, shadow on, queries served, an error answered); and the provisioning
files must point Grafana at the dashboard and at the compose file's Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.keys import SHADOW
from tests.helpers import L3, L6, admin, seed, wait_for_progress, wait_phase

GRAFANA = Path(__file__).parent.parent / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "driftgate.json"
METRIC = re.compile(r"\bdriftgate_[a-z0-9_]+")


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def named_metrics() -> set[str]:
    return {name for expr in dashboard_queries() for name in METRIC.findall(expr)}


def exported_samples(text: str) -> set[str]:
    """Names of the samples in a Prometheus exposition (histograms as _bucket/_sum/_count)."""
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_dashboard_covers_the_operators_questions():
    queries = "\n".join(dashboard_queries())
    for needed in (
        "driftgate_collection_phase",
        "driftgate_backfill_rate_documents_per_second",
        "driftgate_backfill_documents_done",  # coverage and, with the rate, the ETA
        "driftgate_query_duration_seconds_bucket",
        "driftgate_shadow_overlap_ratio",
        "driftgate_shadow_rbo_ratio",
        "driftgate_model_drift",
        "driftgate_errors_total",
    ):
        assert needed in queries, needed


def test_grafana_is_provisioned_with_the_dashboard_and_the_compose_files_prometheus():
    compose = yaml.safe_load((GRAFANA.parent / "docker-compose.yml").read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "driftgate.yml").read_text())
    source = datasource["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    scrape = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())["scrape_configs"][0]
    targets = set(scrape["static_configs"][0]["targets"])
    assert targets == {f"{name}:8080" for name in compose["services"] if name.startswith("gateway-")}


async def test_every_metric_the_dashboard_queries_is_exported_during_a_migration(gateway):
    await seed(gateway, 40)
    assert (await admin(gateway, "POST", "migrations", {"to_model": L6}))[0] == 202
    await wait_phase(gateway, "ready")
    code, _ = await admin(gateway, "POST", "shadow", {"model": L6, "sample_rate": 1.0, "noise_floor_rate": 0.5})
    assert code == 200
    for i in range(10):
        assert (await gateway.post("/v1/collections/docs/query", json={"text": f"topic {i}", "k": 5})).status == 200
    await gateway.app[SHADOW].drain()
    assert (await gateway.post("/v1/collections/nope/query", json={"text": "x"})).status == 404

    async def scrape() -> str:
        return await (await gateway.get("/metrics")).text()

    wanted = named_metrics()
    in_shadow = 'driftgate_collection_phase{collection="docs",phase="shadow"} 1.0'
    # the gauges of shared state are refreshed in the background every sync interval
    text = await wait_for_progress(
        scrape,
        lambda text: wanted <= exported_samples(text) and in_shadow in text,
        lambda text: (len(exported_samples(text)), re.findall(r"driftgate_collection_phase\{.*", text)),
    )
    assert wanted <= exported_samples(text), sorted(wanted - exported_samples(text))
    assert 'driftgate_errors_total{code="collection_not_found"} 1.0' in text
    assert f'driftgate_query_duration_seconds_count{{collection="docs",model="{L3}"}} 10.0' in text
