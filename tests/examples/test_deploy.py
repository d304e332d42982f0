"""Deployment material in examples/deploy/: manifests, Dockerfiles and the CI workflow.

Nothing here builds an image or talks to a cluster. The files are parsed and checked
against the values the code uses: the launcher's settings resolved by its own parser and
config loader, the probe and metrics routes of a real instrumented app, and the
defaults of ``instrument()``.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mlmiddleware import instrument
from mlmiddleware.batching import Batcher
from mlmiddleware.health import HealthChecks, HealthPaths
from mlmiddleware.launcher.cli import build_parser
from mlmiddleware.launcher.config import RunConfig, load_run_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "examples" / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
CONTAINER = "model-server"

# Seconds the kubelet's grace period must leave after the launcher's own SIGKILL deadline
# (drain + graceful timeout), for the launcher to reap its workers and exit.
GRACE_MARGIN_S = 5.0

# Launcher settings: the names of RunConfig fields and of the `run` parser's options.
RUN_SETTINGS = (
    "app",
    "host",
    "port",
    "workers",
    "drain_seconds",
    "graceful_timeout",
    "startup_timeout",
    "worker_timeout",
    "log_level",
    "factory",
)


# --- YAML --------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_yaml(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document is not None]


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents.extend(load_yaml(path))
    return documents


def resource(kind: str) -> dict[str, Any]:
    found = [document for document in manifests() if document.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {K8S}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resource("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod_spec()["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, f"expected one container named {CONTAINER!r} in the Deployment"
    return found[0]


def container_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in container().get("env", []) if "value" in item}


def port_number(port: int | str) -> int:
    """Resolve a probe or Service port, given by number or by container port name."""
    if isinstance(port, int):
        return port
    for declared in container()["ports"]:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {CONTAINER!r} declares no port named {port!r}")


# --- Dockerfiles -------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(name: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continuation lines, without comments."""
    instructions = []
    pending = ""
    for line in (DEPLOY / name).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue

        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, f"{name} ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str] | None:
    """Return the JSON array of an exec-form CMD or ENTRYPOINT, or None for shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def entrypoint(name: str) -> list[str]:
    found = [i for i in dockerfile_instructions(name) if i.keyword == "ENTRYPOINT"]
    assert len(found) == 1, f"expected one ENTRYPOINT in {name}, found {len(found)}"
    command = exec_form(found[0].arguments)
    assert command is not None, f"ENTRYPOINT in {name} is in shell form: {found[0].arguments}"
    return command


def image_user(name: str) -> str:
    users = [i.arguments for i in dockerfile_instructions(name) if i.keyword == "USER"]
    assert users, f"{name} has no USER instruction, so the container runs as root"
    return users[-1].split(":")[0]


def arg_default(name: str, arg: str) -> str:
    for instruction in dockerfile_instructions(name):
        if instruction.keyword == "ARG" and instruction.arguments.startswith(f"{arg}="):
            return instruction.arguments.split("=", 1)[1]
    raise AssertionError(f"{name} has no ARG {arg}=<default>")


def copy_sources(name: str) -> list[str]:
    sources = []
    for instruction in dockerfile_instructions(name):
        if instruction.keyword != "COPY":
            continue
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def dockerignore_admits(rules: list[str], path: str) -> bool:
    """Apply .dockerignore rules to a context path: the last matching rule decides.

    A rule that matches a parent directory matches everything below it, as in Docker.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    admitted = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            admitted = negated
    return admitted


def dockerignore_rules(name: str) -> list[str]:
    lines = (DEPLOY / f"{name}.dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- Launcher settings as the pod runs them ----------------------------------------------


def pod_launcher_config(tmp_path: Path) -> tuple[RunConfig, dict[str, str]]:
    """Resolve the launcher's settings in the pod: image ENTRYPOINT, container args, env.

    Uses the launcher's own parser and config loader. ``tmp_path`` replaces the image's
    working directory /app, which contains no pyproject.toml. The kubelet sets
    ``KUBERNETES_SERVICE_HOST`` in every pod, which changes the default drain time.
    """
    spec = container()
    command = spec.get("command") or entrypoint("Dockerfile")
    argv = [*command[1:], *spec.get("args", [])]
    assert command[0] == "mlmiddleware", f"the container runs {command[0]!r}, not the launcher"

    arguments = build_parser().parse_args(argv)
    assert arguments.command == "run"
    cli = {name: getattr(arguments, name) for name in RUN_SETTINGS}

    environ = {**container_env(), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    config = load_run_config(cli, environ, config_path=arguments.config, cwd=tmp_path)
    return config, environ


# --- The app's routes --------------------------------------------------------------------


def instrument_default(name: str) -> Any:
    return inspect.signature(instrument).parameters[name].default


@pytest.fixture(scope="module")
def served_routes() -> dict[str, Any]:
    """Status of each probe route and the metric names of a real instrumented app.

    The app has a batcher on an identity model, so the batching metrics are registered as
    they are in the example service.
    """
    registry = CollectorRegistry()
    batcher = Batcher(lambda batch: batch, name="identity", registry=registry)
    app = instrument(Starlette(), registry=registry, json_logs=False, batchers=[batcher])
    paths = HealthPaths()

    statuses = {}
    with TestClient(app) as client:
        for path in (paths.startup, paths.live, paths.ready):
            assert path is not None
            statuses[path] = client.get(path).status_code
        metrics = client.get(instrument_default("metrics_path"))
    families = {family.name for family in text_string_to_metric_families(metrics.text)}
    return {"statuses": statuses, "metrics_status": metrics.status_code, "families": families}


# --- Tests: YAML -------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda path: str(path.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = load_yaml(path)
    assert documents, f"{path} has no YAML document"
    for document in documents:
        assert isinstance(document, dict), f"{path} has a document that is not a mapping"


def test_manifests_have_kind_and_name() -> None:
    for document in manifests():
        assert document.get("apiVersion"), f"manifest without apiVersion: {document}"
        assert document.get("kind"), f"manifest without kind: {document}"
        assert document.get("metadata", {}).get("name"), f"manifest without name: {document}"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kustomization_image_is_deployed() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    image_names = {image["name"] for image in kustomization["images"]}
    assert container()["image"].split(":")[0] in image_names


# --- Tests: probes, ports and the grace period -------------------------------------------


def test_probe_paths_match_app() -> None:
    paths = HealthPaths()
    spec = container()
    assert spec["startupProbe"]["httpGet"]["path"] == paths.startup
    assert spec["livenessProbe"]["httpGet"]["path"] == paths.live
    assert spec["readinessProbe"]["httpGet"]["path"] == paths.ready


def test_probe_routes_pass_after_startup(served_routes: dict[str, Any]) -> None:
    for path, status in served_routes["statuses"].items():
        assert status == 200, f"{path} answered {status} after startup"


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_probe_port_matches_launcher(probe: str, tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    assert port_number(container()[probe]["httpGet"]["port"]) == config.port


def test_container_port_matches_launcher(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    assert [p["containerPort"] for p in container()["ports"]] == [config.port]


def test_launcher_listens_on_all_addresses(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    assert config.host == "0.0.0.0"


def test_entrypoint_app_is_example(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    assert config.app == "examples.embedding.app:app"
    assert (REPO / "examples" / "embedding" / "app.py").is_file()


def test_grace_period_covers_shutdown(tmp_path: Path) -> None:
    config, environ = pod_launcher_config(tmp_path)
    drain = config.effective_drain_seconds(environ)
    needed = drain + config.graceful_timeout + GRACE_MARGIN_S
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= needed, (
        f"terminationGracePeriodSeconds={grace} < drain {drain} + graceful timeout "
        f"{config.graceful_timeout} + margin {GRACE_MARGIN_S}"
    )


def test_drain_is_set_explicitly() -> None:
    # The launcher defaults to a 5 s drain only when it detects Kubernetes. An explicit
    # value keeps the grace period arithmetic visible in the manifest.
    assert "MLMW_DRAIN_SECONDS" in container_env()


def test_startup_probe_outlasts_startup_timeout(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    probe = container()["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= config.startup_timeout


def test_liveness_timeout_above_loop_lag_limit() -> None:
    # A shorter probe timeout would count a loop stall under the limit as a failed probe.
    limit = inspect.signature(HealthChecks).parameters["max_loop_lag_seconds"].default
    assert container()["livenessProbe"]["timeoutSeconds"] > limit


def test_deployment_requests_one_gpu() -> None:
    resources = container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1


def test_deployment_selector_matches_pods() -> None:
    deployment = resource("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


# --- Tests: metrics, autoscaling, ingress ------------------------------------------------


def test_metrics_route_serves_text(served_routes: dict[str, Any]) -> None:
    assert served_routes["metrics_status"] == 200


def test_scrape_annotations_match_app(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    annotations = resource("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == instrument_default("metrics_path")
    assert int(annotations["prometheus.io/port"]) == config.port


def test_service_targets_container_port(tmp_path: Path) -> None:
    config, _ = pod_launcher_config(tmp_path)
    for port in resource("Service")["spec"]["ports"]:
        assert port_number(port["targetPort"]) == config.port


def test_service_selects_pods() -> None:
    selector = resource("Service")["spec"]["selector"]
    labels = resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_servicemonitor_scrapes_metrics() -> None:
    monitor = resource("ServiceMonitor")
    service = resource("Service")
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == instrument_default("metrics_path")
        assert endpoint["port"] in service_ports


def test_hpa_scales_on_queue_depth(served_routes: dict[str, Any]) -> None:
    hpa = resource("HorizontalPodAutoscaler")
    names = [metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"]]
    assert names == ["batch_queue_depth"]
    assert "batch_queue_depth" in served_routes["families"]


def test_hpa_targets_deployment() -> None:
    target = resource("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    assert target["name"] == resource("Deployment")["metadata"]["name"]


def test_adapter_rule_serves_hpa_metric() -> None:
    values = load_yaml(DEPLOY / "prometheus-adapter-values.yaml")[0]
    rules = values["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    assert "batch_queue_depth" in served
    assert all("batch_queue_depth" in rule["seriesQuery"] for rule in rules)


def nginx_size_bytes(size: str) -> int:
    """Convert an nginx size ("10m", "512k", "1g", "1048576") to bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", size.strip())
    assert match, f"invalid nginx size {size!r}"
    factor = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    return int(match.group(1)) * factor


def test_nginx_size_units() -> None:
    assert nginx_size_bytes("10m") == 10 * 2**20
    assert nginx_size_bytes("512k") == 512 * 2**10
    assert nginx_size_bytes("100") == 100


def test_ingress_body_size_fits_app() -> None:
    annotations = resource("Ingress")["metadata"]["annotations"]
    limit = nginx_size_bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert limit >= instrument_default("max_body_bytes")


def test_ingress_routes_to_service() -> None:
    service = resource("Service")
    ports = {port["name"] for port in service["spec"]["ports"]}
    for rule in resource("Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in ports


# --- Tests: feedback volume and user -----------------------------------------------------


def test_feedback_dir_is_mounted() -> None:
    directory = container_env()["MLMW_FEEDBACK_DIR"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    assert directory in mounts
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    volume = volumes[mounts[directory]]
    assert "persistentVolumeClaim" in volume or "emptyDir" in volume


def test_feedback_claim_exists() -> None:
    volumes = pod_spec()["volumes"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]
    assert claims == [resource("PersistentVolumeClaim")["metadata"]["name"]]


def test_tmp_is_writable_with_readonly_root() -> None:
    # The launcher's Prometheus multi-process directory and HOME are under /tmp.
    if container()["securityContext"].get("readOnlyRootFilesystem"):
        mounts = {mount["mountPath"] for mount in container()["volumeMounts"]}
        assert "/tmp" in mounts


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_pod_user_matches_image(dockerfile: str) -> None:
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == image_user(dockerfile)


# --- Tests: Dockerfiles ------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_entrypoint_runs_launcher(dockerfile: str) -> None:
    command = entrypoint(dockerfile)
    assert command[:2] == ["mlmiddleware", "run"]
    assert build_parser().parse_args(command[1:]).app == "examples.embedding.app:app"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_shell_form_command(dockerfile: str) -> None:
    for instruction in dockerfile_instructions(dockerfile):
        if instruction.keyword in ("CMD", "ENTRYPOINT"):
            assert exec_form(instruction.arguments) is not None, instruction.arguments


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_stopsignal_is_sigterm(dockerfile: str) -> None:
    instructions = dockerfile_instructions(dockerfile)
    signals = [i.arguments for i in instructions if i.keyword == "STOPSIGNAL"]
    assert signals == ["SIGTERM"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_user_is_not_root(dockerfile: str) -> None:
    assert image_user(dockerfile) not in ("root", "0")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dependencies_before_code(dockerfile: str) -> None:
    instructions = dockerfile_instructions(dockerfile)
    keywords = [(i.keyword, i.arguments) for i in instructions]
    install_requirements = next(
        index
        for index, (keyword, arguments) in enumerate(keywords)
        if keyword == "RUN" and "-r /tmp/requirements.txt" in arguments
    )
    copy_code = next(
        index
        for index, (keyword, arguments) in enumerate(keywords)
        if keyword == "COPY" and arguments.startswith("src ")
    )
    assert install_requirements < copy_code


def test_gpu_image_is_cuda_runtime() -> None:
    base = arg_default("Dockerfile", "BASE_IMAGE")
    assert base.startswith("nvidia/cuda:")
    assert "-runtime-" in base


def test_cpu_image_has_cpu_torch() -> None:
    assert "/whl/cpu" in arg_default("Dockerfile.cpu", "TORCH_INDEX_URL")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerignore_admits_copied_files(dockerfile: str) -> None:
    rules = dockerignore_rules(dockerfile)
    for source in copy_sources(dockerfile):
        assert (REPO / source).exists(), f"{dockerfile} copies {source}, which does not exist"
        assert dockerignore_admits(rules, source), f"{source} is excluded from the context"
    for inside in ("src/mlmiddleware/__init__.py", "examples/embedding/app.py"):
        assert dockerignore_admits(rules, inside), f"{inside} is excluded from the context"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerignore_excludes_the_rest(dockerfile: str) -> None:
    rules = dockerignore_rules(dockerfile)
    for outside in (".git/HEAD", "tests/conftest.py", "benchmarks/results", ".nox/tests"):
        assert not dockerignore_admits(rules, outside), f"{outside} is in the context"
    assert not dockerignore_admits(rules, "src/mlmiddleware/__pycache__/x.pyc")


def test_requirements_cover_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    needed = [*project["dependencies"], *project["optional-dependencies"]["examples"]]
    lines = (DEPLOY / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pinned = {
        canonicalize_name(Requirement(line).name)
        for line in lines
        if line.strip() and not line.startswith("#")
    }
    for requirement in needed:
        name = canonicalize_name(Requirement(requirement).name)
        assert name in pinned, f"{name} from pyproject.toml is missing in requirements.txt"


# --- Tests: CI workflow ------------------------------------------------------------------


def workflow() -> dict[Any, Any]:
    document: dict[Any, Any] = load_yaml(DEPLOY / "github-workflow.yaml")[0]
    return document


def workflow_triggers() -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean True.
    document = workflow()
    triggers: dict[str, Any] = document["on"] if "on" in document else document[True]
    return triggers


def test_workflow_not_active_here() -> None:
    active = REPO / ".github" / "workflows"
    names = {path.name for path in active.glob("*")} if active.is_dir() else set()
    assert "github-workflow.yaml" not in names


def test_workflow_triggers() -> None:
    push = workflow_triggers()["push"]
    assert push["branches"] == ["**"]
    assert push["tags"] == ["model-v*"]


def test_workflow_jobs_use_model_version() -> None:
    for name in ("code-image", "model-image"):
        steps = workflow()["jobs"][name]["steps"]
        scripts = " ".join(step.get("run", "") for step in steps)
        assert "mlmiddleware model-version" in scripts, f"job {name} does not run model-version"


def test_workflow_builds_both_dockerfiles() -> None:
    for job in workflow()["jobs"].values():
        files = {entry["dockerfile"] for entry in job["strategy"]["matrix"]["include"]}
        assert files == {f"examples/deploy/{name}" for name in DOCKERFILES}
        for file in files:
            assert (REPO / file).is_file()


def test_workflow_model_job_runs_on_tags() -> None:
    jobs = workflow()["jobs"]
    assert "model-v" in jobs["model-image"]["if"]
    assert "tag" in jobs["code-image"]["if"]
