"""Typed job configuration: OmegaConf structured defaults ⊕ YAML files ⊕ ``key=value`` overrides.

Every job owns a frozen-by-convention dataclass tree (each component defines its own section next to its
code). ``load`` merges, in increasing precedence:

1. the dataclass defaults (``OmegaConf.structured``), which fixes the set of keys and their types;
2. one or more YAML files (short deltas, see ``conf/``);
3. command-line ``key=value`` overrides (dotted paths, e.g. ``train.lr=1e-4``);
4. typed ``values`` a program sets (``{"data.shards": Path(...)}``), never parsed from text.

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the offending key, so a typo in
a YAML file fails before any Ray worker starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration could not be loaded; the message names the file and key at fault."""


def _merge_one(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(base, layer)
    except OmegaConfBaseException as exc:  # unknown key, wrong type, bad interpolation
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: invalid config key '{key}': {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    assert isinstance(merged, DictConfig)
    return merged


def load(job_cls: type[T], files: Sequence[str | Path] = (), overrides: Sequence[str] = (),
         values: Mapping[str, Any] | None = None) -> T:  # fmt: skip
    """Build a ``job_cls`` instance from defaults, YAML ``files``, ``key=value`` ``overrides`` and typed ``values``.

    Args:
        job_cls: a dataclass type; its defaults are the base layer.
        files: YAML files merged in order (later wins).
        overrides: ``dotted.key=value`` strings (a user's command line), merged after the files.
        values: ``{"dotted.key": value}`` with Python values (paths, numbers, lists), merged last and checked
            against the fields' types like the rest, never parsed from text: how a program that chains jobs
            sets the paths it decides (``pipelines/_chain.py``).

    Returns:
        An instance of ``job_cls`` (nested dataclasses are real dataclass instances, not DictConfigs).

    Raises:
        ConfigError: on a missing file, an unknown key, a wrong type or a missing mandatory value.
    """
    if not dataclasses.is_dataclass(job_cls):
        raise ConfigError(f"{job_cls!r} is not a dataclass")
    cfg = OmegaConf.structured(job_cls)
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layer = OmegaConf.load(path)
        except Exception as exc:  # YAML syntax errors
            raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
        if not isinstance(layer, DictConfig):
            raise ConfigError(f"{path}: top level must be a mapping")
        cfg = _merge_one(cfg, layer, str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    if overrides:
        dotlist = OmegaConf.from_dotlist(list(overrides))
        cfg = _merge_one(cfg, dotlist, "command line")
    if values:
        cfg = _merge_one(cfg, OmegaConf.create(_nested(values)), "values set by the program")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"mandatory config keys without a value: {', '.join(missing)}")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    assert isinstance(obj, job_cls)
    return obj


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}`` (paths become ``str``)."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = str(value) if isinstance(value, PurePath) else value
    return tree


#: field metadata: leave the field out of :func:`to_container` / :func:`to_yaml` while it holds an empty value. For
#: options added to a config after records of it exist (world identities, reuse keys, dataset cards): at the
#: default they leave every earlier record, and the caches keyed by it, unchanged.
OMIT_WHEN_EMPTY = "omit_when_empty"

#: field metadata: leave the field out while it holds its default, for options whose meaningful values include empty
#: ones (a layer index of 0), so that :data:`OMIT_WHEN_EMPTY` would drop a real setting.
OMIT_AT_DEFAULT = "omit_at_default"


def to_container(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain dicts and lists, without the :data:`OMIT_WHEN_EMPTY` fields that are empty and
    the :data:`OMIT_AT_DEFAULT` fields at their default."""
    tree = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(tree, dict)
    _prune_empty(cfg, tree)
    return tree  # type: ignore[return-value]


def _prune_empty(obj: Any, tree: dict[Any, Any]) -> None:
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if (f.metadata.get(OMIT_WHEN_EMPTY) and not value) or (
            f.metadata.get(OMIT_AT_DEFAULT) and value == f.default
        ):
            tree.pop(f.name, None)
        elif isinstance(tree.get(f.name), dict):
            _prune_empty(value, tree[f.name])


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (for MLflow params, checkpoints, reuse keys and ``--print-config``)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))


def to_flat_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config flattened to ``{"a.b.c": value}`` (MLflow params)."""
    container = to_container(cfg)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", container)
    return flat


def from_yaml(job_cls: type[T], text: str) -> T:
    """Rebuild a config saved with :func:`to_yaml` (checkpoints carry their resolved config)."""
    saved = OmegaConf.create(text)
    if not isinstance(saved, DictConfig):
        raise ConfigError("saved config must be a mapping")
    cfg = _merge_one(OmegaConf.structured(job_cls), saved, "saved config")
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, job_cls)
    return obj
