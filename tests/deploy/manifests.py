"""Readers for the deployment files, for the consistency tests: the compose
file, the Kubernetes manifests, the Dockerfile's stages, PromQL metric names,
and the set of real ``MODELTAP_*`` settings (from the settings dataclasses)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from capture.settings import PREFIX, CaptureSettings
from server.settings import ProxySettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def setting_names() -> set[str]:
    """Every ``MODELTAP_*`` variable the proxy reads (also a CLI flag)."""
    return {
        PREFIX + f.name.upper()
        for cls in (ProxySettings, CaptureSettings)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name != "capture"
    }


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, ``${VAR:-default}`` read as its default."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def interpolate(text: str) -> str:
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)


def command(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> dict[str, Stage]:
    """The Dockerfile's stages in order: ``(INSTRUCTION, argument)`` pairs each,
    continuation lines joined and comments dropped; ``ARG``s before the first
    ``FROM`` substituted into the ``FROM`` lines."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in filter(str.strip, lines):
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            for name, value in args.items():
                rest = rest.replace("${" + name + "}", value)
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stage = stages[name] = Stage(name, parts[0])
        elif stage is not None:
            stage.instructions.append((word, rest))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """``name`` and the stages it is built FROM, base first."""
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def stage_env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """``ENV`` of a stage, inherited ones included (``KEY=value`` pairs, shell-quoted)."""
    env: dict[str, str] = {}
    for stage in stage_chain(stages, name):
        for word, rest in stage.instructions:
            if word == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
    return env


def stage_last(stages: dict[str, Stage], name: str, word: str) -> str | None:
    """The last ``word`` instruction's argument in a stage or those it is built on."""
    found = None
    for stage in stage_chain(stages, name):
        for w, rest in stage.instructions:
            if w == word:
                found = rest
    return found


def exec_form(argument: str) -> list[str]:
    value = json.loads(argument)
    assert isinstance(value, list), f"not exec (JSON) form: {argument}"
    return [str(v) for v in value]


_NOT_METRICS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names (in ``{}`` or after ``by``/``without``), strings,
    durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # $model, $__rate_interval
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if m.group(2) is None and m.group(1).lower() not in _NOT_METRICS:
            names.add(m.group(1))
    return names


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "modeltap.json").read_text())


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in dashboard()["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        query = var.get("definition", "")
        exprs += re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)", query)
    return exprs


def rule_exprs() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]
