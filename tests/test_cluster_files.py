"""The deployment files in ``cluster/`` and the runbook ``docs/cluster.md`` are checked as the tools would read them.

* every YAML parses and starts with a comment showing its command;
* Ray cluster launcher files pass Ray's own ``prepare_config`` + ``validate_config`` (``ray-schema.json``);
* KubeRay manifests have the fields the operator needs (``ray.io/v1``, head/worker groups, entrypoint), GPU
  requests with node selection and tolerations, and credentials only from Secrets through env;
* the Serve config validates with Ray Serve's ``ServeDeploySchema``, equals the RayService's ``serveConfigV2`` and
  names an import path that exists;
* the runtime env validates with ``RuntimeEnv``; the Dockerfile installs the CUDA build of the pinned torch;
* every job command written anywhere in ``cluster/``, in a ``conf/`` comment, the README or ``docs/`` names a real
  entry point under ``pipelines/``, only options its own argument parser has, real ``--config`` files under
  ``conf/`` and only keys of that job's config dataclass (loaded with the job's own loader, so values are
  type-checked too), and no ``<placeholder>`` a shell would read as a redirection;
* the shard-storage figures of the runbook are recomputed from the shard schema and the real L4P preset.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import re
import shlex
import subprocess
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RUNBOOK = ROOT / "docs" / "cluster.md"
YAML_FILES = sorted(CLUSTER.rglob("*.yaml"))
LAUNCHER_FILES = sorted(CLUSTER.glob("aws-*.yaml"))
KUBERAY_FILES = sorted((CLUSTER / "kuberay").glob("*.yaml"))
COMMAND_SOURCES = [
    *sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.suffix in {".yaml", ".sh", ""}),
    *sorted((ROOT / "conf").rglob("*.yaml")),
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
# `python pipelines/x.py ...`, `python -m pipelines.x ...`, `.venv/bin/python ...`; the rest of the line follows
JOB_COMMAND = re.compile(r"(?<![\w-])(?:\S*/)?python3? (?:-m )?pipelines[/.](\w+)(?:\.py)?\b(.*)")

CREDENTIAL_ENV = re.compile(r"(^|_)(ACCESS_KEY|SECRET|PASSWORD|TOKEN|USERNAME|CREDENTIALS?)(_|$)", re.IGNORECASE)
KUBERAY_CLUSTER_OF = {
    "RayCluster": lambda d: d["spec"],
    "RayJob": lambda d: d["spec"]["rayClusterSpec"],
    "RayService": lambda d: d["spec"]["rayClusterConfig"],
}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(package: str) -> str:
    """The exact version pyproject.toml pins for ``package`` (e.g. ``"2.13.0"``)."""
    for dep in _pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml does not pin {package}==...")


# ---- every YAML ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses_and_starts_with_its_command(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), f"{_rel(path)} must begin with a comment showing the command that uses it"
    assert isinstance(_load_yaml(path), dict), f"{_rel(path)}: top level must be a mapping"


def test_every_expected_file_exists() -> None:
    expected = [
        "aws-a100.yaml", "aws-h100.yaml", "runtime_env.yaml", "serve_config.yaml", "docker/Dockerfile",
        "kuberay/raycluster.yaml", "kuberay/rayjob-precompute.yaml", "kuberay/rayjob-distill.yaml",
        "kuberay/rayservice.yaml", "slurm/ray_sbatch.sh",
    ]  # fmt: skip
    missing = [f for f in expected if not (CLUSTER / f).is_file()]
    assert not missing, f"missing cluster files: {missing}"


# ---- Ray cluster launcher -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=_rel)
def test_launcher_config_passes_rays_validation(path: Path) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _load_yaml(path)
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in cfg, f"{_rel(path)}: the launcher needs '{key}'"
    validate_config(prepare_config(copy.deepcopy(cfg)))  # raises jsonschema.ValidationError / ValueError

    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    workers = {name: t for name, t in types.items() if name != head}
    assert workers, f"{_rel(path)}: no worker node type"
    for name, t in workers.items():
        instance = t["node_config"]["InstanceType"]
        assert re.match(r"p[45]", instance), f"{_rel(path)}: worker type {name} is {instance}, not an A100/H100 node"
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    assert not re.match(r"[gp]\d", types[head]["node_config"]["InstanceType"]), "the head should be a CPU node"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=_rel)
def test_launcher_installs_cuda_torch_and_this_package(path: Path) -> None:
    cfg = _load_yaml(path)
    setup = "\n".join(cfg["setup_commands"])
    torch_pin = _pin("torch")
    assert f"torch=={torch_pin}" in setup and "download.pytorch.org/whl/cu" in setup, "CUDA torch build not installed"
    mounted = [remote for remote, local in cfg["file_mounts"].items() if local in (".", "./")]
    assert mounted, "the checkout is not mounted on the nodes"
    assert any(f"pip install -e {m}" in setup for m in mounted), "setup does not install the mounted checkout"
    assert cfg["docker"]["image"], "docker image option missing"
    # Ray processes and drivers must agree on RAY_AUTH_MODE (stack-notes §9.3)
    modes = {
        re.search(r"RAY_AUTH_MODE=(\w+)", " ".join(cfg[k])).group(1)  # type: ignore[union-attr]
        for k in ("head_start_ray_commands", "worker_start_ray_commands")
    }
    assert len(modes) == 1, f"head and workers start with different RAY_AUTH_MODE: {modes}"


def test_launcher_variants_differ_only_in_hardware() -> None:
    a100, h100 = (_load_yaml(CLUSTER / f) for f in ("aws-a100.yaml", "aws-h100.yaml"))
    for key in ("docker", "setup_commands", "head_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands", "file_mounts", "provider", "head_node_type"):  # fmt: skip
        assert a100[key] == h100[key], f"aws-a100.yaml and aws-h100.yaml disagree on '{key}'"
    assert a100["available_node_types"][a100["head_node_type"]] == h100["available_node_types"][h100["head_node_type"]]


# ---- KubeRay --------------------------------------------------------------------------------------------------------


def _pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    cluster = KUBERAY_CLUSTER_OF[doc["kind"]](doc)
    yield "head", cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster["workerGroupSpecs"]:
        yield group["groupName"], group["template"]["spec"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield "submitter", doc["spec"]["submitterPodTemplate"]["spec"]


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=_rel)
def test_kuberay_manifest_has_what_the_operator_needs(path: Path) -> None:
    doc = _load_yaml(path)
    assert doc["apiVersion"] == "ray.io/v1", f"{_rel(path)}: apiVersion must be ray.io/v1"
    assert doc["kind"] in KUBERAY_CLUSTER_OF, f"{_rel(path)}: unexpected kind {doc['kind']}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), "name is not DNS-1123"
    if doc["kind"] == "RayJob":
        assert isinstance(doc["spec"]["entrypoint"], str) and doc["spec"]["entrypoint"].strip()
        yaml.safe_load(doc["spec"].get("runtimeEnvYAML", "{}"))
    cluster = KUBERAY_CLUSTER_OF[doc["kind"]](doc)
    assert cluster["rayVersion"] == _pin("ray"), "rayVersion must match the Ray pinned in pyproject.toml"
    head = cluster["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values must be strings"
    assert cluster["workerGroupSpecs"], "no worker group"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"group {group['groupName']}"
        assert isinstance(group["rayStartParams"], dict)
    for name, pod in _pod_specs(doc):
        assert pod["containers"] and all(c.get("image") for c in pod["containers"]), f"{name}: no image"


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=_rel)
def test_kuberay_gpu_pods_request_gpus_and_select_gpu_nodes(path: Path) -> None:
    doc = _load_yaml(path)
    for group in KUBERAY_CLUSTER_OF[doc["kind"]](doc)["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        res = pod["containers"][0]["resources"]
        gpus = res["limits"].get("nvidia.com/gpu")
        assert gpus and res["requests"].get("nvidia.com/gpu") == gpus, f"{group['groupName']}: GPU request != limit"
        assert pod.get("nodeSelector") or pod.get("affinity", {}).get("nodeAffinity"), "GPU pods select no nodes"
        assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", [])), "no toleration for GPU taint"


def _walk(node: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=_rel)
def test_kuberay_credentials_come_only_from_secrets_via_env(path: Path) -> None:
    doc = _load_yaml(path)
    mounted = [key for key, _ in _walk(doc) if key == "secret"]
    assert not mounted, f"{_rel(path)}: a Secret is mounted as a volume; pass it through env instead"
    for name, pod in _pod_specs(doc):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            for var, entry in env.items():
                if CREDENTIAL_ENV.search(var):
                    assert "value" not in entry, f"{name}: {var} has a literal value in {_rel(path)}"
                    assert entry["valueFrom"]["secretKeyRef"]["name"], f"{name}: {var} not from a Secret"
            if name != "submitter":
                for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"):
                    assert var in env, f"{name} container in {_rel(path)} lacks {var} (S3 / MLflow)"


# ---- Serve ----------------------------------------------------------------------------------------------------------


def _serve_configs() -> list[tuple[str, dict[str, Any]]]:
    service = _load_yaml(CLUSTER / "kuberay" / "rayservice.yaml")
    return [
        ("cluster/serve_config.yaml", _load_yaml(CLUSTER / "serve_config.yaml")),
        ("rayservice.yaml serveConfigV2", yaml.safe_load(service["spec"]["serveConfigV2"])),
    ]


def test_serve_configs_validate_and_agree() -> None:
    from ray.serve.schema import ServeDeploySchema

    (_, standalone), (_, embedded) = _serve_configs()
    for where, cfg in _serve_configs():
        schema = ServeDeploySchema.model_validate(cfg)
        assert schema.applications, f"{where}: no application"
    assert standalone == embedded, "cluster/serve_config.yaml and the RayService's serveConfigV2 differ"


def test_serve_config_keeps_the_lean_request_path() -> None:
    from pipelines._serve_job import LEAN_SERVE_ENV

    key = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"  # read by the replicas (server.lean_request_path)
    for where, cfg in _serve_configs():
        assert cfg["applications"][0]["runtime_env"]["env_vars"][key] == LEAN_SERVE_ENV[key], where


@pytest.mark.parametrize("app", _serve_configs()[0][1]["applications"], ids=lambda a: a["import_path"])
def test_serve_import_path_exists(app: dict[str, Any]) -> None:
    module_name, _, attr = app["import_path"].partition(":")
    source = ROOT / (module_name.replace(".", "/") + ".py")
    assert source.is_file(), f"import_path {app['import_path']}: {_rel(source)} does not exist"
    target = getattr(importlib.import_module(module_name), attr, None)
    assert target is not None, f"import_path {app['import_path']}: {module_name} has no attribute {attr!r}"
    config = app.get("args", {}).get("config")
    if config:
        assert (ROOT / config).is_file(), f"serve app args.config {config} does not exist"
    # what `serve deploy` does: call the builder with args; the deployments the config tunes must be in the app,
    # and user_config may only carry keys the deployment reconfigures from
    built = target(app.get("args", {})) if callable(target) else target
    bound = built._bound_deployment
    names = {bound.name}
    for deployment in app.get("deployments", []):
        assert deployment["name"] in names, f"serve config tunes deployment {deployment['name']}, app has {names}"
        defaults = bound._deployment_config.user_config or {}
        unknown = set(deployment.get("user_config", {})) - set(defaults)
        assert not unknown, f"user_config keys {sorted(unknown)} are not the deployment's ({sorted(defaults)})"


# ---- runtime env, image, Slurm ----------------------------------------------------------------------------------------


def test_runtime_env_is_valid_and_carries_no_credentials() -> None:
    from ray.runtime_env import RuntimeEnv

    cfg = _load_yaml(CLUSTER / "runtime_env.yaml")
    RuntimeEnv(**cfg)
    leaked = [k for k in cfg.get("env_vars", {}) if CREDENTIAL_ENV.search(k)]
    assert not leaked, f"credentials in runtime_env.yaml: {leaked}"
    assert ".venv/" in cfg["excludes"] and ".git/" in cfg["excludes"], "the upload would include .venv/.git"


def test_dockerfile_installs_cuda_torch_pin_and_this_package() -> None:
    text = (CLUSTER / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.MULTILINE))
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:"), "base image is not a CUDA image"
    assert args["TORCH_VERSION"] == _pin("torch"), "image torch differs from pyproject's pin"
    assert re.fullmatch(r"cu\d{3}", args["TORCH_CUDA"]) and "download.pytorch.org/whl/${TORCH_CUDA}" in text
    torch_step = text.index('"torch==${TORCH_VERSION}"')
    assert torch_step < text.index("pip install ."), "torch must be installed before the package resolves its pin"
    assert "python3.11" in text and _pyproject()["project"]["requires-python"] == ">=3.11"
    for package in _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = package.rstrip("*")
        assert f"COPY {top} " in text, f"the image does not copy the package {top}"
    assert "COPY conf " in text, "the image lacks conf/, which every entry point's --config names"


def test_slurm_script_is_valid_bash_and_starts_head_workers_and_job() -> None:
    script = CLUSTER / "slurm" / "ray_sbatch.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --nodes=" in text and "#SBATCH --gpus-per-node=" in text
    lines = [line for _, line in _logical_lines(text, comments_only=False)]
    assert any(re.search(r"\bsrun .*-w .*\bray start --head", line) for line in lines), "no srun'd Ray head"
    assert any(re.search(r"\bsrun .*--exclude.*\bray start --address", line) for line in lines), "no srun'd workers"
    assert "ray job submit" in text


# ---- job commands: real entry points, real config files, real keys --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobCommand:
    where: str
    script: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    options: tuple[str, ...]
    tokens: tuple[str, ...]


def _logical_lines(text: str, comments_only: bool) -> Iterator[tuple[int, str]]:
    """``(first line number, line)`` with backslash continuations joined and comment markers removed."""
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        is_comment = raw.lstrip().startswith("#")
        if comments_only and not is_comment and not buf:
            continue
        line = re.sub(r"^\s*#\s?", "", raw) if is_comment else raw
        if not buf:
            start = no
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield start, buf + line
        buf = ""
    if buf:
        yield start, buf


def _parse_command(script: str, tokens: list[str], where: str) -> JobCommand:
    """``tokens``: the arguments after the entry point, up to the end of the shell command."""
    configs, overrides, options, kept = [], [], [], []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in {"&&", ";", "|", ")", "&", "||"} or tok.startswith("#"):
            break
        kept.append(tok)
        if tok == "--config":
            if i + 1 == len(tokens):  # a command wrapped after its flag: say where, instead of an IndexError
                raise ValueError(f"{where}: '--config' without its file (keep a documented command on one line)")
            configs.append(tokens[i + 1])
            kept.append(tokens[i + 1])
            i += 2
            continue
        if tok.startswith("--config="):
            configs.append(tok.split("=", 1)[1])
        elif tok.startswith("-"):
            options.append(tok.split("=", 1)[0])
        elif "=" in tok:
            overrides.append(tok.rstrip(")"))
        i += 1
    return JobCommand(where, script, tuple(configs), tuple(overrides), tuple(options), tuple(kept))


def _commands_in_text(text: str, where: str, comments_only: bool = False) -> Iterator[JobCommand]:
    for no, line in _logical_lines(text, comments_only):
        for m in JOB_COMMAND.finditer(line):
            rest = m.group(2).split("`")[0].split("  #")[0]  # a Markdown code span or a trailing comment ends it
            yield _parse_command(f"pipelines/{m.group(1)}.py", shlex.split(rest), f"{where}:{no}")


def discover_job_commands() -> list[JobCommand]:
    """Every ``python pipelines/<job>.py ...`` / ``python -m pipelines.<job>`` written in cluster/ files, conf/
    comments, the README and docs/.

    YAML files are scanned in their comments only; RayJob entrypoints are read from the parsed manifest.
    """
    found: list[JobCommand] = []
    for path in COMMAND_SOURCES:
        found += _commands_in_text(path.read_text(), _rel(path), comments_only=path.suffix == ".yaml")
    for path in KUBERAY_FILES:
        doc = _load_yaml(path)
        if doc["kind"] == "RayJob":
            found += _commands_in_text(doc["spec"]["entrypoint"], f"{_rel(path)}:spec.entrypoint")
    return found


JOB_COMMANDS = discover_job_commands()


def test_job_commands_were_discovered() -> None:
    scripts = {c.script for c in JOB_COMMANDS}
    every_entry_point = {_rel(p) for p in (ROOT / "pipelines").glob("[!_]*.py") if p.name != "__init__.py"}
    assert every_entry_point <= scripts, f"entry points no doc or config comment shows: {every_entry_point - scripts}"
    sources = {c.where.split(":")[0] for c in JOB_COMMANDS}
    assert {"README.md", "docs/cluster.md", "conf/serve/tiny.yaml", "conf/synth/demo.yaml"} <= sources, sources
    entrypoints = [c for c in JOB_COMMANDS if ":spec.entrypoint:" in c.where]
    assert len(entrypoints) == 2, f"expected the two RayJob entrypoints, found {entrypoints}"


def _job_config_class(module: Any, source: Path) -> type:
    """The dataclass the entry point hands to ``rgpt4d_core.config.load`` or to ``pipelines._cli.job_from_args`` (found
    by AST, resolved on the module)."""
    names = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if fname in {"load", "load_config", "job_from_args"}:
                names.append(node.args[0].id)
    classes = {n: getattr(module, n, None) for n in names}
    classes = {n: c for n, c in classes.items() if dataclasses.is_dataclass(c)}
    assert len(classes) == 1, f"{_rel(source)}: expected one config dataclass passed to load(...), found {names}"
    return next(iter(classes.values()))  # type: ignore[return-value]


def _field_type(cls: type, dotted: str) -> Any:
    """Type of the dataclass field at ``dotted`` (``None`` when a dict-valued field is entered)."""
    typ: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(typ):
            return None if typing.get_origin(typ) is dict or typ is dict else typ
        hints = typing.get_type_hints(typ)
        assert part in hints, f"unknown config key '{dotted}' ('{part}' is not a field of {getattr(typ, '__name__', typ)})"
        typ = hints[part]
    return typ


def _fill_shell_variables(cls: type, override: str) -> str:
    """``key=$VAR`` is expanded by the shell at launch; here it becomes a placeholder of the field's type."""
    key, _, value = override.partition("=")
    typ = _field_type(cls, key)
    if "$" not in value:
        return override
    assert typ in (str, str | None), f"{key} gets a shell variable but is not a str field"
    placeholder = re.sub(r"\$\{?\w+(:-[^}]*)?\}?", "placeholder", value)
    return f"{key}={placeholder}"


def _options_of(module: Any, capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The ``--options`` the entry point's own argument parser accepts (read from its ``--help``)."""
    with pytest.raises(SystemExit):
        module.main(["--help"])
    return set(re.findall(r"(?<![\w-])--[\w-]+", capsys.readouterr().out))


@pytest.mark.parametrize("cmd", JOB_COMMANDS, ids=lambda c: f"{c.where}:{Path(c.script).stem}")
def test_job_command_names_real_entry_point_configs_and_keys(
    cmd: JobCommand, capsys: pytest.CaptureFixture[str]
) -> None:
    from rgpt4d_core.config import load

    source = ROOT / cmd.script
    assert source.is_file(), f"{cmd.where}: entry point {cmd.script} does not exist"
    redirect = [t for t in cmd.tokens if re.search(r"<\w|\w>", t)]
    assert not redirect, f"{cmd.where}: {redirect} is a shell redirection as written; use a real value or $VARIABLE"
    for conf in cmd.configs:
        assert conf.startswith("conf/") and (ROOT / conf).is_file(), f"{cmd.where}: config file {conf} does not exist"
    module = importlib.import_module(cmd.script[:-3].replace("/", "."))
    unknown = set(cmd.options) - _options_of(module, capsys)
    assert not unknown, f"{cmd.where}: {cmd.script} has no option {sorted(unknown)}"
    job_cls = _job_config_class(module, source)
    overrides = [_fill_shell_variables(job_cls, o) for o in cmd.overrides]
    load(job_cls, [ROOT / c for c in cmd.configs], overrides)  # unknown key / wrong type / missing value raise


# ---- the runbook's storage arithmetic --------------------------------------------------------------------------------


def test_runbook_shard_bytes_match_schema_for_real_l4p() -> None:
    import numpy as np
    import torch

    from rgpt4d_core.experts.l4p import L4PExpert, build_model
    from rgpt4d_core.shards.schema import TENSOR_DTYPE, tensor_shapes

    spec = L4PExpert(build_model("l4p_vitg", device="meta"), "l4p_vitg", "untrained", torch.device("meta"),
                     torch.bfloat16).spec  # fmt: skip
    shapes = tensor_shapes(spec)
    itemsize = np.dtype(TENSOR_DTYPE).itemsize
    per_column = {name: int(np.prod(shape)) * itemsize for name, shape in shapes.items() if shape}
    text = RUNBOOK.read_text()
    for name, nbytes in per_column.items():
        assert re.search(rf"`{name}` \|[^|]*\| {nbytes:,} \|", text), f"runbook row for {name} should say {nbytes:,}"
    total = sum(per_column.values())
    assert f"**{total:,} ({total / 1e6:.1f} MB)**" in text, f"runbook total should be {total:,} bytes"
    assert f"16,000 x {total / 1e6:.1f} MB ≈ {16_000 * total / 1e12:.2f} TB" in text
    # schema v2 vs v1 at the paper's mixture (210k questions on 16k clips; frames ~1 MB of JPEG per clip)
    per_clip = 210_000 / 16_000
    assert f"{per_clip:.1f} questions per clip that is **{total / per_clip / 1e6:.2f} MB of targets per question**" in text
    assert f"**210,000 x {total / 1e6:.1f} MB ≈ {210_000 * total / 1e12:.1f} TB**" in text
    distinct_per_8_rows = 1 + 7 / per_clip
    assert f"about {distinct_per_8_rows:.1f} distinct clips were stored per 8 rows" in text
    assert f"≈ {210_000 * (total + 1e6) * distinct_per_8_rows / 8 / 1e12:.1f} TB (`bench/shards.py`" in text
    decoded = total + 16 * 448 * 448 * 3
    assert f"256 / {per_clip:.1f} questions per clip ≈ {256 / per_clip:.0f} clips x ≈ {decoded / 1e6:.0f} MB" in text
    assert f"≈ {256 / per_clip * decoded / 1e9:.1f} GB per worker" in text


def test_runbook_parameter_counts_match_the_real_presets() -> None:
    """The sizing table's counts are those of our ``nvila_lite_8b`` student (+ D_4DP) and ``l4p_vitg`` heads."""
    import torch

    from rgpt4d_core.experts.l4p import L4PExpert, build_model
    from rgpt4d_core.model.presets import student_config
    from rgpt4d_core.model.student import Student

    teacher = build_model("l4p_vitg", device="meta")
    spec = L4PExpert(teacher, "l4p_vitg", "untrained", torch.device("meta"), torch.bfloat16).spec
    with torch.device("meta"):
        student = Student(student_config("nvila_lite_8b"), spec)

    def count(module: torch.nn.Module | None) -> int:
        assert module is not None
        return sum(p.numel() for p in module.parameters())

    parts = {
        "Qwen2-7B LLM": count(student.llm),
        "projector": count(student.projector),
        "D_4DP": count(student.decoder),
        "SigLIP": count(student.vision),
        "L4P DPT heads": count(teacher.heads),
    }
    text = RUNBOOK.read_text()
    for name, n in parts.items():
        assert re.search(rf"\| {re.escape(name)}[^|]*\| {n:,} \|", text), f"runbook row '{name}' should say {n:,}"
    trainable = parts["Qwen2-7B LLM"] + parts["projector"] + parts["D_4DP"]
    frozen = parts["SigLIP"] + parts["L4P DPT heads"]
    assert f"**{trainable:,} / {frozen:,}**" in text
    assert f"{trainable:,} x 16 B / 64 = {trainable * 16 / 64 / 1e9:.2f} GB per GPU" in text
