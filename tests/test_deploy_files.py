"""Static checks of what ships: Dockerfile, docker-compose.yml, GitHub workflows, ECS definitions.

No Docker engine runs here, so compose is checked by parsing it and by Compose v2 itself
(`make test` builds it from its Go module); workflows by actionlint (in `make lint`); task
definitions against the settings the code actually reads.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from broker.brokers.kafka import CLOSE_TIMEOUT_MS, COMMIT_TIMEOUT_MS
from core.cloudwatch import DEFAULT_NAMESPACE, lag_metric_data
from core.settings import ENV_VARIABLES, Settings
from tasks.events import EVENTS_TOPIC

ROOT = Path(__file__).resolve().parents[1]
# read by gunicorn.conf.py / prometheus_client / boto3 rather than by Settings
PROCESS_VARIABLES = {
    "WEB_CONCURRENCY", "WORKER_CONNECTIONS", "BIND", "PROMETHEUS_MULTIPROC_DIR",
    "HEADER_TIMEOUT", "KEEPALIVE_TURNS", "GUNICORN_CONTROL_SOCKET",
}  # fmt: skip
SECRET_VARIABLES = {"POSTGRES_PASSWORD", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "JWT_SECRET"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_documented_services_on_the_documented_ports(compose):
    services = compose["services"]
    assert {"postgres", "redis", "kafka", "kafka-ui", "api", "worker"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    published = {name: {p.rsplit(":", 2)[1] for p in svc.get("ports", [])} for name, svc in services.items()}
    assert published["api"] == {"8000"} and published["kafka-ui"] == {"8080"}
    assert published["postgres"] == {"5432"} and published["redis"] == {"6379"} and published["kafka"] == {"9092"}


def test_compose_publishes_ports_on_loopback_only_and_kafka_ui_needs_a_login(compose):
    """The development JWT secret is public and none of these services has a real password:
    nothing is published beyond this machine, and Kafka UI (which can read and write every
    topic) starts only on request, behind a login form."""
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r}"
    ui = compose["services"]["kafka-ui"]
    assert ui["profiles"] == ["ui"]
    assert ui["environment"]["AUTH_TYPE"] == "LOGIN_FORM"
    assert ui["environment"]["SPRING_SECURITY_USER_PASSWORD"] is None  # from the shell, or generated


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_dependencies(compose):
    services = compose["services"]
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == {"kafka-init", "migrate"}
    for name, svc in services.items():
        if name not in one_shot:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, rule in (svc.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    for app in ("api", "worker"):
        assert set(services[app]["depends_on"]) >= {"postgres", "redis", "kafka-init", "migrate"}
    topics = services["kafka-init"]["command"][0]
    assert "events-input:6" in topics and "events-dlq:6" in topics


def test_compose_uses_only_variables_the_code_reads(compose):
    for name in ("api", "worker", "migrate"):
        env = set(compose["services"][name]["environment"])
        assert env <= set(ENV_VARIABLES) | PROCESS_VARIABLES, env - set(ENV_VARIABLES)
    assert compose["services"]["api"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def _compose_command() -> list[str] | None:
    """Compose v2: the one `make test` builds from its Go module (DOCKER_COMPOSE), else a docker CLI plugin."""
    if os.environ.get("DOCKER_COMPOSE"):
        return [os.environ["DOCKER_COMPOSE"]]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "ui"]])
def test_compose_v2_accepts_the_file(profile):
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose v2 here: `make test` builds one (DOCKER_COMPOSE); the YAML checks above still ran")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), *profile, "config", "-q"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_dockerfile_builds_small_non_root_images_for_both_services():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)", text, flags=re.M)
    assert [s for _, s in stages] == ["build", "runtime", "worker", "api"]
    assert stages[0][0] == stages[1][0] == "python:3.11-slim"
    assert "USER app" in text and "PYTHONUNBUFFERED=1" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    worker_class = 'worker_class = "core.gunicorn_worker.HeaderDeadlineGeventWorker"'
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in text and worker_class in (ROOT / "gunicorn.conf.py").read_text()
    assert '"python", "worker.py", "run"' in text
    # psycogreen (pinned in requirements.txt) has no wheel: a wheel-only install fails for everyone
    installs = [line for line in text.splitlines() if line.startswith("RUN") and "pip install" in line]
    assert installs and not any("--only-binary" in line for line in installs)
    assert "psycogreen==" in (ROOT / "requirements.txt").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".stack", "tests"} <= set(ignored)


@pytest.mark.parametrize("service", ["api", "worker"])
def test_deploy_workflows_build_push_and_roll_out_their_service(service):
    text = (ROOT / ".github" / "workflows" / f"{service}-ci-cd.yml").read_text()
    flow = yaml.safe_load(text)
    assert flow[True]["push"]["branches"] == ["main"] and flow[True]["push"]["paths"]  # YAML 1.1: on -> True
    steps = flow["jobs"]["deploy"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("aws-actions/configure-aws-credentials") for u in uses)
    assert any(u.startswith("aws-actions/amazon-ecs-deploy-task-definition") for u in uses)
    assert f"--target {service}" in text and "github.sha" in text and ":latest" in text
    assert f"deploy/ecs/{service}-task-definition.json" in text
    assert "role-to-assume" in text and "id-token: write" in text  # OIDC supported
    header = text.split("name:")[0]
    for secret in ("AWS_REGION", "AWS_ROLE_ARN", "AWS_ACCESS_KEY_ID", "ECS_CLUSTER", f"ECS_SERVICE_{service.upper()}"):
        assert secret in header
    deploy = next(s for s in steps if s.get("uses", "").startswith("aws-actions/amazon-ecs-deploy-task-definition"))
    assert deploy["with"]["wait-for-service-stability"] is True


def _task(service: str) -> dict:
    return json.loads((ROOT / "deploy" / "ecs" / f"{service}-task-definition.json").read_text())


@pytest.mark.parametrize("service", ["api", "worker"])
def test_task_definitions_take_settings_from_the_environment_and_secrets_from_secrets_manager(service):
    task = _task(service)
    assert task["family"] == f"{service}-service" and task["requiresCompatibilities"] == ["FARGATE"]
    for container in task["containerDefinitions"]:
        env = {e["name"] for e in container["environment"]}
        secrets = {s["name"] for s in container.get("secrets", [])}
        assert env | secrets <= set(ENV_VARIABLES) | PROCESS_VARIABLES
        assert not env & SECRET_VARIABLES, "a secret is set in plain environment"
        assert all(s["valueFrom"].startswith("arn:aws:secretsmanager:") for s in container.get("secrets", []))
        assert container["logConfiguration"]["logDriver"] == "awslogs"
    raw = json.dumps(task)
    assert not re.search(r"AKIA[0-9A-Z]{16}|local-dev-secret|apppass", raw), "a real or dev secret is committed"


def test_the_api_task_serves_port_8000_with_a_healthz_check():
    (api,) = _task("api")["containerDefinitions"]
    assert api["portMappings"][0]["containerPort"] == 8000
    assert "/healthz" in " ".join(api["healthCheck"]["command"])


def test_the_worker_task_has_time_to_drain_and_publishes_lag():
    containers = {c["name"]: c for c in _task("worker")["containerDefinitions"]}
    worker = containers["worker"]
    assert "portMappings" not in worker  # no load balancer
    shutdown_ms = int(worker["command"][worker["command"].index("--shutdown-timeout") + 1])
    # SIGKILL only after the whole drain: running messages, the last commit, leaving the group and
    # closing the producer, each bounded; with at least 10 s to spare
    drain_ms = shutdown_ms + COMMIT_TIMEOUT_MS + CLOSE_TIMEOUT_MS + Settings.kafka_send_timeout_ms
    assert worker["stopTimeout"] * 1000 >= drain_ms + 10_000
    lag = containers["lag-publisher"]["command"]
    assert lag[:2] == ["python", "worker.py"] and "lag" in lag and "cloudwatch" in lag


def test_scaling_policies_track_alb_requests_and_the_published_lag_metric():
    api = json.loads((ROOT / "deploy" / "autoscaling" / "api-scaling-policy.json").read_text())
    spec = api["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
    assert spec["PredefinedMetricType"] == "ALBRequestCountPerTarget"

    worker = json.loads((ROOT / "deploy" / "autoscaling" / "worker-scaling-policy.json").read_text())
    metrics = worker["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
    lag = next(m for m in metrics if m["Id"] == "lag")["MetricStat"]["Metric"]
    published = lag_metric_data({"group": "events-processor", "total_lag": 1, "partitions": []})[0]
    assert lag["Namespace"] == DEFAULT_NAMESPACE
    assert lag["MetricName"] == published["MetricName"] and lag["Dimensions"] == published["Dimensions"]
    publisher = {c["name"]: c for c in _task("worker")["containerDefinitions"]}["lag-publisher"]
    environment = {e["name"]: e["value"] for e in publisher["environment"]}
    assert environment["CLOUDWATCH_NAMESPACE"] == DEFAULT_NAMESPACE
    assert environment["KAFKA_CONSUMER_GROUP"] == published["Dimensions"][0]["Value"]


def test_gunicorn_binds_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("BIND", raising=False)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"] == "127.0.0.1:8000"
    monkeypatch.setenv("BIND", "0.0.0.0:8000")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"] == "0.0.0.0:8000"


# ---------------------------------------------------------------- Kubernetes (KEDA)


def _kubernetes(name: str) -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()))


def _keda_checked(document: dict) -> dict:
    """Validate a KEDA resource against ``tests/schemas/keda-v1alpha1.json`` (unknown fields fail)."""
    import jsonschema

    schema = json.loads((ROOT / "tests" / "schemas" / "keda-v1alpha1.json").read_text())
    jsonschema.validate(document, {**schema, "$ref": f"#/$defs/{document['kind']}"})
    return document


def test_the_schema_checks_refuse_fields_kubernetes_and_keda_do_not_know():
    import jsonschema
    import kubernetes_validate

    (deployment,) = _kubernetes("worker-deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["stopSignal"] = "SIGTERM"  # not a container field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)
    scaled, _ = _kubernetes("worker-scaledobject.yaml")
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5000"  # a typo KEDA would ignore silently
    with pytest.raises(jsonschema.ValidationError, match="lagTreshold"):
        _keda_checked(broken)


def test_the_kubernetes_worker_deployment_is_valid_and_drains_like_the_ecs_task():
    import kubernetes_validate

    (deployment,) = _kubernetes("worker-deployment.yaml")
    kubernetes_validate.validate(deployment, "1.33", strict=True)  # unknown fields fail too
    pod = deployment["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["command"][:3] == ["python", "worker.py", "run"]
    shutdown_ms = int(worker["command"][worker["command"].index("--shutdown-timeout") + 1])
    drain_ms = shutdown_ms + COMMIT_TIMEOUT_MS + CLOSE_TIMEOUT_MS + Settings.kafka_send_timeout_ms
    assert pod["terminationGracePeriodSeconds"] * 1000 >= drain_ms + 10_000
    names = {e["name"] for e in worker["env"]}
    assert names <= set(ENV_VARIABLES) | PROCESS_VARIABLES
    secrets = {e["name"] for e in worker["env"] if "valueFrom" in e}
    assert secrets == SECRET_VARIABLES - {"JWT_SECRET"}, "the worker's secrets, each from a Secret"
    assert all("secretKeyRef" in e["valueFrom"] for e in worker["env"] if "valueFrom" in e)
    ecs = {e["name"]: e["value"] for e in _task("worker")["containerDefinitions"][0]["environment"]}
    plain = {e["name"]: e["value"] for e in worker["env"] if "value" in e}
    assert set(plain) == set(ecs), "the same settings as the ECS task definition"
    assert not re.search(r"local-dev-secret|apppass", json.dumps(deployment)), "a dev secret is committed"


def test_keda_scales_the_worker_by_the_groups_lag_like_the_ecs_policy():
    scaled, auth = (_keda_checked(d) for d in _kubernetes("worker-scaledobject.yaml"))
    (deployment,) = _kubernetes("worker-deployment.yaml")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka" and trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == Settings.kafka_consumer_group and meta["topic"] == EVENTS_TOPIC
    policy = json.loads((ROOT / "deploy" / "autoscaling" / "worker-scaling-policy.json").read_text())
    target = json.loads((ROOT / "deploy" / "autoscaling" / "worker-scalable-target.json").read_text())
    assert float(meta["lagThreshold"]) == policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (target["MinCapacity"], target["MaxCapacity"])
    partitions = re.search(r"KAFKA_INPUT_PARTITIONS:-(\d+)", (ROOT / "scripts" / "stack").read_text())
    assert spec["maxReplicaCount"] == int(partitions.group(1)), "no more pods than partitions"
    assert meta["allowIdleConsumers"] == "false" and meta["offsetResetPolicy"] == "earliest"
    assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == {"sasl", "tls", "username", "password"}
