"""The files in cluster/ agree with Ray, KubeRay and the code they launch.

Launcher YAMLs go through Ray's own schema and config preparation; KubeRay manifests are
checked for the ray.io/v1 fields KubeRay requires; every entrypoint's command and options
must exist in the `sarl` app and its config and overrides must load; image names, ports and
pins must match each other, pyproject.toml and the Makefile.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import typer.main
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from typer.testing import CliRunner

from sarl_dist.cli.main import app
from sarl_dist.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DOCKERFILE = (CLUSTER / "Dockerfile").read_text()
LAUNCHERS = ["onprem.yaml", "aws.yaml"]
PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
GPU = "nvidia.com/gpu"
SERVER_RESOURCE = "vla_server"


def _image() -> str:
    """The name the Dockerfile says to build; every cluster file must run it."""
    found = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", DOCKERFILE)
    assert found, "cluster/Dockerfile must say how it is built"
    return found.group(1)


IMAGE = _image()


def _workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", DOCKERFILE, re.MULTILINE)
    return workdir


def _yaml_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def _kuberay(name: str, kind: str) -> dict:
    (doc,) = [d for d in _yaml_docs(name) if d.get("kind") == kind]
    return doc


def _cluster_specs() -> dict[str, dict]:
    return {
        "RayCluster": _kuberay("kuberay-raycluster.yaml", "RayCluster")["spec"],
        "RayJob": _kuberay("kuberay-rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"],
    }


def _option_names(command: str) -> set[str]:
    click_cmd = typer.main.get_command(app).commands[command]
    return {o for p in click_cmd.params for o in (*p.opts, *p.secondary_opts)}


def _check_train_command(argv: list[str], path_map: dict[str, Path]) -> None:
    """argv is `sarl train CONFIG [options]` (or python -m sarl_dist.cli.main train ...)."""
    if argv[:3] == ["python", "-m", "sarl_dist.cli.main"]:
        argv = ["sarl", *argv[3:]]
    assert argv[:2] == ["sarl", "train"], argv
    args = argv[2:]
    options = _option_names("train")
    config, overrides = None, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            assert arg in options, f"`sarl train` has no option {arg}"
            if arg in ("--progress", "--no-progress"):
                i += 1
                continue
            value = args[i + 1]
            if arg == "--set":
                overrides.append(value)
            if arg == "--address":
                assert value == "auto", "inside a job the driver joins the cluster it runs on"
            i += 2
        else:
            assert config is None, f"one positional CONFIG, got {config} and {arg}"
            config = arg
            i += 1
    assert "--address" in args
    assert config is not None
    for prefix, local in path_map.items():
        if config.startswith(prefix):
            config = str(local / config.removeprefix(prefix))
    path = Path(config) if Path(config).is_absolute() else ROOT / config
    assert path.is_file(), f"the entrypoint's config does not exist here: {config}"
    load_config(path, overrides)  # every --set must name a real field with a valid value
    shown = CliRunner().invoke(
        app, ["show-config", str(path), *(a for o in overrides for a in ("--set", o))]
    )
    assert shown.exit_code == 0, shown.output


# ------------------------------------------------------------------ cluster launcher
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_passes_rays_own_validation(name):
    config = _yaml_docs(name)[0]
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    # What `ray up` does before anything else: fill in the provider's defaults, validate.
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_runs_the_image_with_token_auth_on_the_known_ports(name):
    config = _yaml_docs(name)[0]
    assert config["docker"]["image"] == IMAGE
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--head" in head
    assert "RAY_AUTH_MODE=token" in head
    assert f"--port={PORTS['gcs-server']}" in head
    assert f"--dashboard-port={PORTS['dashboard']}" in head
    assert f"--ray-client-server-port={PORTS['client']}" in head
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` (SSH)
    (worker,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert "RAY_AUTH_MODE=token" in worker
    assert f"--address=$RAY_HEAD_IP:{PORTS['gcs-server']}" in worker
    # The token travels to every node as a file Ray reads by default.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_aws_has_cpu_simulator_and_gpu_policy_server_node_types():
    config = _yaml_docs("aws.yaml")[0]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    cpu = [t for n, t in types.items() if n != config["head_node_type"] and t not in gpu]
    assert cpu and gpu
    for node_type in gpu:
        assert node_type["resources"][SERVER_RESOURCE] == node_type["resources"]["GPU"]
        assert "--gpus all" in node_type["docker"]["worker_run_options"]


# ------------------------------------------------------------------ KubeRay
def test_kuberay_manifests_are_ray_io_v1_with_required_fields():
    cluster_docs = _yaml_docs("kuberay-raycluster.yaml")
    job_docs = _yaml_docs("kuberay-rayjob.yaml")
    kinds = {(d["apiVersion"], d["kind"]) for d in cluster_docs + job_docs}
    assert ("ray.io/v1", "RayCluster") in kinds
    assert ("ray.io/v1", "RayJob") in kinds
    for doc in cluster_docs + job_docs:
        assert doc["metadata"]["name"]
    job = _kuberay("kuberay-rayjob.yaml", "RayJob")["spec"]
    assert job["entrypoint"]
    assert job["shutdownAfterJobFinishes"] is True
    for kind, spec in _cluster_specs().items():
        assert spec["rayVersion"] == ray.__version__, kind
        assert spec["authOptions"]["mode"] == "token", kind
        head = spec["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict)
        assert head["template"]["spec"]["containers"]
        for group in spec["workerGroupSpecs"]:
            # Fields the ray.io/v1 CRD requires of a worker group.
            for key in ("groupName", "minReplicas", "maxReplicas", "template", "rayStartParams"):
                assert key in group, f"{kind} worker group lacks {key}"
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_kuberay_pods_run_the_image_and_expose_the_known_ports():
    for kind, spec in _cluster_specs().items():
        pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
        for pod in pods:
            for container in pod["template"]["spec"]["containers"]:
                assert container["image"] == IMAGE, kind
        (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert {p["name"]: p["containerPort"] for p in head["ports"]} == PORTS, kind


def test_kuberay_has_cpu_simulator_and_gpu_policy_server_groups():
    for kind, spec in _cluster_specs().items():
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert set(groups) == {"cpu-sim", "gpu-vla"}, kind
        (sim,) = groups["cpu-sim"]["template"]["spec"]["containers"]
        assert GPU not in sim["resources"]["limits"]
        gpu_group = groups["gpu-vla"]
        (server,) = gpu_group["template"]["spec"]["containers"]
        gpus = int(server["resources"]["limits"][GPU])
        assert gpus >= 1
        params = gpu_group["rayStartParams"]
        assert int(params["num-gpus"]) == gpus
        # KubeRay passes `resources` to `ray start --resources` as a quoted JSON string.
        custom = json.loads(json.loads(params["resources"]))
        assert custom == {SERVER_RESOURCE: gpus}


def test_dashboard_binds_localhost_unless_the_manifest_says_why_not():
    specs = _cluster_specs()
    assert specs["RayCluster"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    # The RayJob's submitter reaches the job server through the head Service: pod network.
    job_params = specs["RayJob"]["headGroupSpec"]["rayStartParams"]
    assert job_params["dashboard-host"] == "0.0.0.0"
    assert "submitter" in (CLUSTER / "kuberay-rayjob.yaml").read_text()
    for spec in specs.values():
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    # Apart from that, the RayJob's cluster is the RayCluster.
    job = copy.deepcopy(specs["RayJob"])
    job["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    assert job == specs["RayCluster"]


def test_rayjob_entrypoint_is_a_real_sarl_command_writing_to_the_runs_volume():
    job = _kuberay("kuberay-rayjob.yaml", "RayJob")["spec"]
    argv = shlex.split(job["entrypoint"])
    # The image's WORKDIR holds this repository's configs/ (COPY configs ./configs).
    assert re.search(r"^COPY configs \./configs$", DOCKERFILE, re.MULTILINE)
    _check_train_command(argv, {_workdir().rstrip("/") + "/": ROOT})
    out = Path(argv[argv.index("--out") + 1])
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])}
    assert any(out.is_relative_to(m) for m in mounts), f"{out} is on no volume of the head"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in head["volumes"]}
    defined = {
        d["metadata"]["name"]
        for d in _yaml_docs("kuberay-raycluster.yaml")
        if d["kind"] == "PersistentVolumeClaim"
    }
    assert claims <= defined


# ------------------------------------------------------------------ container recipe
def _pin(name: str) -> str:
    specs = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["train"]
    (spec,) = [d for d in specs if re.match(rf"{name}\b", d)]
    return spec.replace(" ", "")


def test_dockerfile_pins_what_pyproject_pins():
    # A Debian-based Python 3.11, one of the two pyproject allows (docs/python.md).
    assert re.search(r"^FROM python:3\.11-\S*(bookworm|trixie)$", DOCKERFILE, re.M)
    assert PYPROJECT["requires-python"] == ">=3.11,<3.13"
    for name in ("torch", "numpy"):
        assert f'"{_pin(name)}"' in DOCKERFILE, f"the Dockerfile must install {_pin(name)}"
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE  # the CPU build, as on the dev machines
    assert 'pip install ".[train]"' in DOCKERFILE  # the learner's side: torch, Ray, LIBERO
    assert IMAGE.rsplit(":", 1)[1] == PYPROJECT["version"]


def test_dockerfile_installs_the_gl_libraries_the_makefile_does():
    (line,) = re.findall(r"^GL_PACKAGES := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    for package in line.split():
        assert re.search(rf"\b{re.escape(package)}\b", DOCKERFILE), package
    assert re.search(r"\bwget\b", DOCKERFILE)  # KubeRay's probes run wget in the container
    assert "RAY_AUTH_MODE=token" in DOCKERFILE


# ------------------------------------------------------------------ submit_job.sh
SUBMIT = CLUSTER / "submit_job.sh"


def test_submit_script_runs_a_real_train_command():
    assert subprocess.run(["bash", "-n", str(SUBMIT)], check=False).returncode == 0
    (line,) = [x for x in SUBMIT.read_text().splitlines() if "sarl_dist.cli.main train" in x]
    # `-- python -m sarl_dist.cli.main train "$config" --out "$out" ... "$@"`
    words = shlex.split(line.split("--", 1)[1])
    values = {"$config": "configs/skill_chain.yaml", "$out": "/tmp/out"}
    _check_train_command([values.get(w, w) for w in words if w != "$@"], {})


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["configs/skill_chain.yaml", "runs/x"], "must be absolute"),
        (["/etc/hostname", "/tmp/x"], "must be inside"),
        (["configs/nope.yaml", "/tmp/x"], "no such config"),
    ],
)
def test_submit_script_refuses_what_would_go_wrong_on_the_cluster(args, complaint):
    proc = subprocess.run(
        ["bash", str(SUBMIT), *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert proc.returncode == 2
    assert complaint in proc.stderr
