"""Hugging Face checkpoint folders probe themselves: attention, with no --model.

A folder with config.json + weights (model.safetensors / pytorch_model.bin, sharded or not) is built
from its own config with `transformers` (optional extra `report_gen[hf]`; readers/checkpoint/hfarch:
local config only, no download, remote code refused), in eager attention so the attention modules
return their probabilities. The weights come through the checkpoint reader's safe loaders
(`CheckpointData.load`: safetensors, or torch pickles under the load policy), never from_pretrained.

The probe batch is the user's --probe FILE (a dict of tensors such as input_ids/attention_mask, or a
tensor of token ids) or a seeded synthetic one: 4 sequences of min(64, the model's positions) token
ids drawn uniformly within vocab_size, attention_mask all ones (encoder-decoder models get the same
ids as decoder input). Only attention is kept (probe.probe with no activation layers): activations of
random token ids say little about a language model, and are probed with --model like any model.

Bounded: at most `max_checkpoints` (3) checkpoints (evenly spaced, the last kept), models above
`MAX_PARAMETERS` are not built (CPU-cheap is the point); what was not probed, and why, goes to the
run card (`ProbeOutcome.info["note"]`), never to an error.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import torch

from report_gen.core import InputError, Problem, ProblemKind
from report_gen.facts.activations import even_indices
from report_gen.probe import ProbeOutcome, apply_state_dict, load_probe_input, probe
from report_gen.readers.checkpoint.hfarch import (ArchitectureUnavailable, INSTALL_HINT, build_model, is_hf_config,
                                                  transformers_version)

MAX_PARAMETERS = 350_000_000  # ~1.4 GB of float32: BERT-large size; larger models are not built on CPU
BATCH, MAX_SEQ = 4, 64
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


def hf_checkpoints(checkpoints: list[Any]) -> list[Any]:
    """The checkpoints that are HF model folders (a config.json with a model_type beside the weights)."""
    return [c for c in checkpoints if str(c.format).startswith("hf-folder") and is_hf_config(c.metadata)
            and os.path.isfile(os.path.join(c.path, "config.json"))]


def _config(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        value = json.load(f)
    if not isinstance(value, dict):
        raise ArchitectureUnavailable("config.json is not a JSON object")
    return value


def _positions(config: dict[str, Any]) -> int | None:
    for key in _POSITION_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text = config.get("text_config")
    return _positions(text) if isinstance(text, dict) else None


def token_batch(config: dict[str, Any], shape: str | None = None, seed: int = 0) -> tuple[dict[str, torch.Tensor], str]:
    """Seeded token ids within vocab_size (and attention_mask ones): 4 x min(64, positions), or `shape` "N,L"."""
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        raise ArchitectureUnavailable("config.json has no vocab_size: not a token model (give --model and --probe)")
    if shape is not None:
        parts = [p for p in re.split(r"[,x×\s]+", shape.strip()) if p]
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise InputError(f"--probe-shape {shape!r}: an HF checkpoint takes token batches N,L such as 4,64")
        n, length = int(parts[0]), int(parts[1])
        if n * length > BATCH * 16 * MAX_SEQ:
            raise InputError(f"--probe-shape {shape!r}: at most {BATCH * 16 * MAX_SEQ} tokens for an HF probe")
    else:
        n, length = BATCH, min(MAX_SEQ, _positions(config) or MAX_SEQ)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if config.get("is_encoder_decoder"):
        batch["decoder_input_ids"] = ids.clone()
    return batch, f"synthetic token ids {n}×{length} in [0, {vocab}) (seed {seed}), attention_mask ones"


def _skipped(note: str, checkpoints: int = 0, **info: Any) -> ProbeOutcome:
    return ProbeOutcome([], {"model": info.pop("model", "config.json"), "input": info.pop("input", "-"),
                             "checkpoints": checkpoints, "note": note, "attention_only": True, **info})


def _tied_missing(model: torch.nn.Module, missing: list[str]) -> list[str]:
    """Missing keys that are not tied to a loaded parameter (GPT-2's lm_head.weight is wte.weight)."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    tied = {n for names in owners.values() if len(names) > 1 for n in names}
    return [m for m in missing if m not in tied]


def probe_hf_run(checkpoints: list[Any], *, probe_file: str | None = None, probe_shape: str | None = None,
                 max_checkpoints: int = 3) -> ProbeOutcome | None:
    """Probe the attention of a run's HF checkpoint folders; None when the run has none.

    Raises InputError only for a bad --probe/--probe-shape; an architecture that cannot be built or a
    forward pass that fails is a note in the run card (the rest of the report is unaffected).
    """
    folders = hf_checkpoints(checkpoints)
    if not folders:
        return None
    if transformers_version() is None:
        return _skipped(f"HF checkpoint not probed: transformers is not installed ({INSTALL_HINT}); "
                        f"attention was judged from the weights only")
    last = folders[-1]
    try:
        config = _config(last.path)
    except (OSError, ValueError, RecursionError, ArchitectureUnavailable) as exc:
        return _skipped(f"HF checkpoint not probed: {last.path}/config.json cannot be read ({exc})")
    arch = (config.get("architectures") or ["?"])[0] if isinstance(config.get("architectures"), list) else "?"
    label = f"{os.path.basename(os.path.normpath(last.path))}/config.json: {arch} (transformers {transformers_version()}, " \
            f"eager attention)"
    size = sum(math.prod(t.shape) for t in last.tensors.values())
    if size > MAX_PARAMETERS:
        return _skipped(f"HF checkpoint not probed: {size:,} parameters is above the CPU probe's "
                        f"{MAX_PARAMETERS:,}", model=label)
    if probe_file is not None:
        inputs, description = load_probe_input(probe_file, None)
        if isinstance(inputs, torch.Tensor) and not inputs.is_floating_point():
            inputs = {"input_ids": inputs, "attention_mask": torch.ones_like(inputs)}
    else:
        try:
            inputs, description = token_batch(config, probe_shape)
        except ArchitectureUnavailable as why:
            return _skipped(f"HF checkpoint not probed: {why}", model=label)
    try:
        model = build_model(config, attn_implementation="eager")
    except ArchitectureUnavailable as why:
        return _skipped(f"HF checkpoint not probed: {why}", model=label, input=description)
    chosen = [folders[int(i)] for i in even_indices(len(folders), max(1, max_checkpoints))]
    results, problems = [], []
    for ckpt in chosen:
        try:
            state = {n: ckpt.load(n) for n in ckpt.tensors}
        except Exception as exc:  # noqa: BLE001 - CheckpointError and friends: that checkpoint is not probed
            problems.append(Problem(file=ckpt.path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning",
                                    message=f"not probed: {exc}"))
            continue
        report = apply_state_dict(model, state)
        report["missing"] = _tied_missing(model, report["missing"])
        try:
            result = probe(model, inputs, layers=[], description=description)
        except InputError as exc:
            return _skipped(f"HF checkpoint not probed: {exc}", model=label, input=description)
        result.load_report = report
        results.append((ckpt.step, result))
        if report["missing"] or report["unexpected"] or report["mismatched"]:
            problems.append(Problem(file=ckpt.path, kind=ProblemKind.STATE_DICT_MISMATCH, severity="warning",
                                    message=f"loading into {arch}: {len(report['missing'])} missing, "
                                            f"{len(report['unexpected'])} unexpected, {len(report['mismatched'])} "
                                            f"mismatched keys (e.g. {(report['missing'] or report['unexpected'] or report['mismatched'])[:3]})"))
    info = {"model": label, "input": description, "checkpoints": len(results), "attention_only": True,
            "note": f"HF checkpoint probed itself: attention of {len(results[-1][1].attention) if results else 0} "
                    f"module(s) captured"}
    return ProbeOutcome(results, info, problems)
