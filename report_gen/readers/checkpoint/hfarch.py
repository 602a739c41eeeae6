"""Hugging Face architectures from a checkpoint folder's own config.json (`transformers`, optional extra `hf`).

The model is built from the local config only: the config class of its `model_type` (transformers'
CONFIG_MAPPING) reads the dict, and the first class named in `architectures` that transformers itself
exports builds the model (else AutoModel). Nothing is downloaded and no code from the folder runs: a
config with `auto_map` (a model that needs `trust_remote_code`) or a model type the installed
transformers does not know is refused, and `trust_remote_code` is never passed. Weights are never read
here: the callers load them through the checkpoint reader's safe loaders.

Every refusal is an `ArchitectureUnavailable` with a one-line reason (said in the run card), never an
exception from transformers.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import torch

INSTALL_HINT = "pip install 'report_gen[hf]'"


class ArchitectureUnavailable(Exception):
    """The architecture cannot be built here; str() is a one-line reason."""


def transformers_version() -> str | None:
    """The installed transformers version, or None (imports nothing heavy when absent)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("transformers")
    except PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a broken installation counts as absent
        return None


def is_hf_config(meta: Mapping[str, Any]) -> bool:
    """Whether checkpoint metadata comes from an HF config.json (a model_type string is its mark)."""
    return isinstance(meta.get("model_type"), str) and bool(meta.get("model_type"))


def _transformers():
    if transformers_version() is None:
        raise ArchitectureUnavailable(f"transformers is not installed ({INSTALL_HINT})")
    try:
        import transformers
    except Exception as exc:  # noqa: BLE001 - an unusable installation
        raise ArchitectureUnavailable(f"transformers cannot be imported ({type(exc).__name__})") from None
    return transformers


def build_model(config: Mapping[str, Any], *, device: str = "cpu", attn_implementation: str | None = None
                ) -> torch.nn.Module:
    """The model `config` (a config.json dict) describes, with freshly initialised weights.

    device="meta" builds the structure only (no memory, for parameter names and order). Raises
    ArchitectureUnavailable when transformers is missing, the config needs remote code or is unknown
    to the installed transformers, or building fails.
    """
    transformers = _transformers()
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ArchitectureUnavailable("config.json has no model_type")
    if config.get("auto_map"):
        raise ArchitectureUnavailable(f"model type {model_type!r} needs remote code (auto_map in config.json); "
                                      f"never run")
    mapping = transformers.CONFIG_MAPPING
    if model_type not in mapping:
        raise ArchitectureUnavailable(f"model type {model_type!r} is unknown to transformers "
                                      f"{transformers_version()} (remote code is never run)")
    cls = _model_class(transformers, config)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        cfg = mapping[model_type].from_dict(dict(config))
        with torch.device(device), _quiet(transformers):
            if cls is None:
                return transformers.AutoModel.from_config(cfg, **kwargs)
            return cls._from_config(cfg, **kwargs)
    except ArchitectureUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of transformers becomes one line
        text = " ".join(str(exc).split())[:200]
        raise ArchitectureUnavailable(f"transformers could not build {model_type!r} from config.json "
                                      f"({type(exc).__name__}: {text})") from None


def _model_class(transformers: Any, config: Mapping[str, Any]) -> Any:
    """The first class of `architectures` that transformers exports as a PreTrainedModel, else None."""
    archs = config.get("architectures")
    for name in archs if isinstance(archs, list) else []:
        if not isinstance(name, str) or not name.isidentifier():
            continue
        try:
            cls = getattr(transformers, name, None)
        except Exception:  # noqa: BLE001 - lazy import of an optional backend failed
            cls = None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return None


@contextlib.contextmanager
def _quiet(transformers: Any):
    """transformers' own logging at error level while building (its warnings are not ours to print)."""
    logging = getattr(getattr(transformers, "utils", None), "logging", None)
    previous = logging.get_verbosity() if logging else None
    try:
        if logging:
            logging.set_verbosity_error()
        yield
    finally:
        if logging and previous is not None:
            logging.set_verbosity(previous)


def parameter_count(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


_META_CACHE: dict[str, tuple[torch.nn.Module | None, str]] = {}


def meta_model(config: Mapping[str, Any]) -> tuple[torch.nn.Module | None, str]:
    """(the architecture on the meta device, "") or (None, why not); one build per distinct config.

    Structure only (no memory): for parameter names, order and module types. Never raises.
    """
    import json

    try:
        key = json.dumps(config, sort_keys=True, default=str)
    except (TypeError, ValueError):
        key = repr(sorted(config.items(), key=lambda kv: str(kv[0])))
    if key not in _META_CACHE:
        try:
            _META_CACHE[key] = (build_model(config, device="meta"), "")
        except ArchitectureUnavailable as why:
            _META_CACHE[key] = (None, str(why))
        if len(_META_CACHE) > 16:
            _META_CACHE.pop(next(iter(_META_CACHE)))
    return _META_CACHE[key]


def in_model_order(names: list[str], model: torch.nn.Module) -> list[str] | None:
    """`names` in the model's state_dict() order (named_parameters() order for parameters), or None
    when the names are not exactly the model's (a tied weight saved once may be missing)."""
    order = [n for n in model.state_dict(keep_vars=True)]
    position = {n: i for i, n in enumerate(order)}
    if not set(names) <= set(position) or len(names) < len(set(n for n, _ in model.named_parameters())):
        return None
    return sorted(names, key=position.__getitem__)
