"""Attention from the weights alone: where the query/key projections are, and what logits they make.

Finding the projections (by structure; names only break ties)
    * separate projections: named sibling modules (numbered children are layers in a row, not
      parallel projections), at least three reading the same input width E (q, k and v), whose
      weights have the query and key shapes (with the config's heads: query (H·d, E), key (Hkv·d, E);
      without: a shape two of them share). Linear layout (out, in). Same-shape siblings (q, k, v and
      maybe the output projection) leave which two are q and k open: the names settle it
      (`query`/`q`/`q_proj`/`wq`..., `key`/`k`/...), else, when the config says the model has
      attention heads and the file keeps the order, q, k, v as registered; else the module is skipped.
    * fused projections: one matrix whose long axis is 3x the other (nn.MultiheadAttention's
      `in_proj_weight` (3E, E), GPT-2's Conv1D `c_attn` (E, 3E), timm's `qkv`), or (H + 2·Hkv)·d with
      the config's heads, split in thirds (q, k, v) along the long axis. Two such matrices in one
      block (an MLP three times as wide as the model) are told apart by name (attn, qkv, ...) or
      skipped. Model types that interleave heads in a fused matrix (GPT-NeoX, BLOOM, Falcon) are not
      split.
    * heads (H, Hkv, d) come from the checkpoint's config.json (num_attention_heads / n_head,
      num_key_value_heads, head_dim, hidden_size / n_embd); without them the projection counts as one
      head of width D, whose logit scale is the RMS over the real heads' (exact when heads are
      uncorrelated).

Per-head logit scale (a fact, the rule decides)
    For unit-variance inputs with independent coordinates (what a LayerNorm with unit gain hands the
    projections, roughly), the logit s = (W_q x + b_q)·(W_k y)/sqrt(d) has, across keys y, the standard
    deviation sigma_h = sqrt(||W_q^T W_k||_F^2 + ||W_k^T b_q||^2) / sqrt(d) (the key bias is the same
    for every key and cancels in the softmax). ||W_q^T W_k||_F^2 = tr(G_q G_k) with the d x d Gram
    matrices G = W W^T, so nothing of size E x E is formed. Logits with a spread of sigma over S keys
    give a softmax whose largest weight is `expected_peak(sigma, S)` on average.

Identical heads
    The cosine similarity of two heads' bilinear forms A_h = W_q^hT W_k^h (what a head computes, up to
    rotations inside its head space), from d x d cross Gram matrices as well.

Cost: at most `FLOP_BUDGET` multiply-adds per checkpoint; larger models get evenly spaced layers (the
facts say how many were examined).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

FLOP_BUDGET = 2e9
_NAMES_Q = {"q", "query", "wq", "q_proj", "q_lin", "to_q", "query_proj", "q_attn"}
_NAMES_K = {"k", "key", "wk", "k_proj", "k_lin", "to_k", "key_proj"}
_INTERLEAVED = {"gpt_neox", "bloom", "falcon", "persimmon", "stablelm_epoch", "gpt_neox_japanese"}
_NO_SCALING = {"t5", "mt5", "umt5", "longt5", "switch_transformers"}  # logits are not divided by sqrt(d)


@dataclass(frozen=True)
class QKProjection:
    """Where one attention layer's query and key weights are. Rows `q_rows`/`k_rows` of the
    (out, in)-oriented weights (`transposed`: stored (in, out), HF Conv1D)."""

    layer: str
    query: str
    key: str
    query_bias: str | None
    q_rows: tuple[int, int]
    k_rows: tuple[int, int]
    transposed: bool
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    how: str  # "separate" | "fused"


@dataclass
class HeadFacts:
    """Per-head facts of one attention layer (see the module docstring)."""

    layer: str
    heads: int  # heads the numbers are per (1 when the config does not say)
    heads_known: bool
    head_dim: int
    logit_scale: np.ndarray  # sigma per head
    head_similarity: np.ndarray | None  # heads x heads cosine of the query-key forms
    qk_rms: float  # RMS of the query and key weights
    how: str
    query: str
    key: str


@dataclass
class AttentionWeights:
    """The attention facts of one checkpoint."""

    layers: list[HeadFacts] = field(default_factory=list)
    found: int = 0  # projections found
    examined: int = 0  # of which examined (FLOP budget)
    skipped: list[str] = field(default_factory=list)  # modules with q/k candidates that could not be told apart
    other_rms: float | None = None  # RMS of the model's other weight matrices
    seq_len: int = 128  # positions for expected_peak (config's max positions, capped at 512)
    scaled: bool = True  # logits divided by sqrt(d)


def _config_int(meta: Mapping[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = meta.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _heads(meta: Mapping[str, Any]) -> tuple[int | None, int | None, int | None, int | None]:
    """(H, Hkv, d, E) from config.json values, None where not said."""
    heads = _config_int(meta, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
    kv = _config_int(meta, "num_key_value_heads", "n_kv_heads", "num_kv_heads") or heads
    hidden = _config_int(meta, "hidden_size", "n_embd", "d_model", "dim", "embed_dim")
    d = _config_int(meta, "head_dim", "d_kv", "kv_channels")
    if d is None and heads and hidden and hidden % heads == 0:
        d = hidden // heads
    return heads, kv, d, hidden


def _leaf_kind(module_leaf: str) -> str | None:
    """"q" / "k" from a projection module's own name, else None."""
    low = module_leaf.lower()
    if low in _NAMES_Q:
        return "q"
    if low in _NAMES_K:
        return "k"
    return None


def find_projections(shapes: Mapping[str, tuple[int, ...]], meta: Mapping[str, Any],
                     ordered: bool) -> tuple[list[QKProjection], list[str]]:
    """The query/key projections in a checkpoint (names -> shapes of its parameters, in file order),
    and the modules whose candidates could not be told apart."""
    heads, kv, d, hidden = _heads(meta)
    interleaved = str(meta.get("model_type", "")).lower() in _INTERLEAVED
    found: list[QKProjection] = []
    skipped: list[str] = []
    children: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {}
    fused: dict[str, list[tuple[str, tuple]]] = {}  # block -> fused candidates
    for name, shape in shapes.items():
        if len(shape) != 2:
            continue
        if name.endswith("in_proj_weight") and shape[0] == 3 * shape[1]:  # nn.MultiheadAttention
            e = shape[1]
            layer = name[: -len(".in_proj_weight")] if "." in name else ""
            bias = name[: -len("weight")] + "bias"
            h = heads if heads and e % heads == 0 else None
            found.append(QKProjection(layer, name, name, bias if bias in shapes else None, (0, e), (e, 2 * e),
                                      False, h, h, e // h if h else None, "fused"))
            continue
        if not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        container, _, child = module.rpartition(".")
        children.setdefault(container, []).append((child, name, tuple(shape)))
        split = None if interleaved else _fused(tuple(shape), heads, kv, d, hidden)
        if split is not None:
            fused.setdefault(container.rpartition(".")[0], []).append((name, split))
    for block, candidates in fused.items():
        if len(candidates) > 1:  # e.g. an MLP 3x as wide as the model beside c_attn: the name decides
            candidates = [c for c in candidates if _FUSED_NAME.search(c[0].rsplit(".", 2)[-2])]
            if len(candidates) != 1:
                skipped.append(block)
                continue
        name, (q_rows, k_rows, transposed) = candidates[0]
        module = name[: -len(".weight")]
        bias = module + ".bias"
        known = (heads, kv, d) if heads and kv and d else (None, None, None)
        found.append(QKProjection(module, name, name, bias if bias in shapes else None, q_rows, k_rows,
                                  transposed, *known, "fused"))
    for container, kids in children.items():
        pair = _separate_pair(kids, heads, kv, d, ordered)
        if pair == "ambiguous":
            skipped.append(container)
        elif pair is not None:
            (qname, qshape), (kname, kshape) = pair
            qbias = qname[: -len("weight")] + "bias"
            found.append(QKProjection(container, qname, kname, qbias if qbias in shapes else None,
                                      (0, qshape[0]), (0, kshape[0]), False, heads, kv, d, "separate"))
    return found, skipped


_FUSED_NAME = re.compile(r"attn|attention|qkv|query_key_value|in_proj", re.IGNORECASE)


def _fused(shape: tuple[int, ...], heads, kv, d, hidden):
    """(q rows, k rows, transposed) when `shape` is a fused q/k/v matrix, else None."""
    a, b = shape
    for transposed, (big, small) in ((False, (a, b)), (True, (b, a))):
        if heads and kv and d:
            if (hidden is None or small == hidden) and big == (heads + 2 * kv) * d:
                return (0, heads * d), (heads * d, (heads + kv) * d), transposed
        elif big == 3 * small:
            return (0, small), (small, 2 * small), transposed
    return None


def _separate_pair(kids, heads, kv, d, ordered: bool):
    """((q name, shape), (k name, shape)) among a module's children, "ambiguous", or None.

    Parallel projections are named attributes of one module (numbered children are layers in a row);
    the query and key read the same input as the value, so at least three children read that width.
    """
    by_input: dict[int, list[tuple[str, str, tuple[int, ...]]]] = {}
    for child, name, shape in kids:
        if not child.isdigit():
            by_input.setdefault(shape[1], []).append((child, name, shape))
    for group in by_input.values():
        if len(group) < 3:
            continue
        if heads and kv and d:
            qs = [g for g in group if g[2][0] == heads * d]
            ks = [g for g in group if g[2][0] == kv * d]
        else:
            counts: dict[tuple[int, ...], int] = {}
            for g in group:
                counts[g[2]] = counts.get(g[2], 0) + 1
            qs = ks = [g for g in group if counts[g[2]] >= 2]
        if not qs or not ks or len({g[1] for g in qs + ks}) < 2:
            continue  # one tensor cannot be both the query and the key
        named_q = [g for g in qs if _leaf_kind(g[0]) == "q"]
        named_k = [g for g in ks if _leaf_kind(g[0]) == "k"]
        if len(named_q) == 1 and len(named_k) == 1:
            return (named_q[0][1], named_q[0][2]), (named_k[0][1], named_k[0][2])
        if heads and kv and d and ordered and len(group) == 3 and len(qs) >= 1 and len(ks) >= 2:
            q, k, _ = group  # the config says attention; q, k, v as registered (the file keeps the order)
            if q in qs and k in ks:
                return (q[1], q[2]), (k[1], k[2])
        if any(_leaf_kind(g[0]) for g in group) or (heads and kv and d):
            return "ambiguous"
    return None


def _gram(w: torch.Tensor, d: int) -> torch.Tensor:
    """(heads, d, d) Gram matrices W_h W_h^T of the (heads*d, E) rows."""
    h = w.shape[0] // d
    blocks = w.reshape(h, d, -1)
    return blocks @ blocks.transpose(1, 2)


def head_facts(proj: QKProjection, load: Callable[[str], torch.Tensor], scaled: bool = True) -> HeadFacts | None:
    """Per-head logit scale and similarity of one projection (None when its tensors are not finite)."""
    import torch  # here: loading the rules must not import torch (an event-only run never needs it)

    wq = load(proj.query).to(torch.float64)
    wk = wq if proj.key == proj.query else load(proj.key).to(torch.float64)
    if proj.transposed:
        wq, wk = wq.T, wk.T
    q = wq[proj.q_rows[0]:proj.q_rows[1]]
    k = wk[proj.k_rows[0]:proj.k_rows[1]]
    bq = None
    if proj.query_bias:
        b = load(proj.query_bias).to(torch.float64).reshape(-1)
        bq = b[proj.q_rows[0]:proj.q_rows[1]] if b.numel() >= proj.q_rows[1] else None
    if not (torch.isfinite(q).all() and torch.isfinite(k).all()) or q.shape[1] != k.shape[1]:
        return None
    known = bool(proj.heads and proj.head_dim and q.shape[0] == proj.heads * proj.head_dim
                 and proj.kv_heads and k.shape[0] == proj.kv_heads * proj.head_dim)
    heads, d = (proj.heads, proj.head_dim) if known else (1, q.shape[0])
    kv = proj.kv_heads if known else 1
    if not known and k.shape[0] != q.shape[0]:
        return None
    gq, gk = _gram(q, d), _gram(k, d)
    group = heads // kv
    gk_per_q = gk.repeat_interleave(group, dim=0)
    frob_sq = (gq * gk_per_q.transpose(1, 2)).sum(dim=(1, 2))  # tr(Gq Gk) per head
    bias_sq = torch.zeros(heads, dtype=torch.float64)
    if bq is not None and torch.isfinite(bq).all():
        kh = k.reshape(kv, d, -1).repeat_interleave(group, dim=0)  # (heads, d, E)
        bias_sq = torch.einsum("hd,hde->he", bq.reshape(heads, d), kh).pow(2).sum(dim=1)
    scale = 1 / math.sqrt(d) if scaled else 1.0
    sigma = torch.sqrt(frob_sq.clamp_min(0) + bias_sq) * scale
    similarity = _similarity(q, k, heads, kv, d, frob_sq) if heads > 1 else None
    qk = torch.cat([q.reshape(-1), k.reshape(-1)])
    return HeadFacts(proj.layer, heads, known, d, sigma.numpy(), similarity,
                     float(qk.pow(2).mean().sqrt()), proj.how, proj.query, proj.key)


def _similarity(q, k, heads, kv, d, frob_sq) -> np.ndarray:
    """Cosine of the heads' forms A_h = Wq_h^T Wk_h: <A_h, A_g> = tr((Wq_h Wq_g^T)(Wk_g Wk_h^T))."""
    import torch

    qh = q.reshape(heads, d, -1)
    kh = k.reshape(kv, d, -1).repeat_interleave(heads // kv, dim=0)
    cross_q = torch.einsum("hde,gfe->hgdf", qh, qh)  # Wq_h Wq_g^T
    cross_k = torch.einsum("gfe,hde->hgfd", kh, kh)  # Wk_g Wk_h^T
    inner = torch.einsum("hgdf,hgfd->hg", cross_q, cross_k)
    norms = frob_sq.clamp_min(1e-300).sqrt()
    return (inner / (norms[:, None] * norms[None, :])).numpy()


def _flops(proj: QKProjection, shapes: Mapping[str, tuple[int, ...]]) -> float:
    rows = proj.q_rows[1] - proj.q_rows[0]
    width = min(shapes[proj.query])
    d = proj.head_dim or rows
    heads = max(rows // max(d, 1), 1)
    return 2.0 * rows * d * width + (heads * heads * d * d * width if heads <= 64 else 0.0)


def attention_weights(shapes: Mapping[str, tuple[int, ...]], meta: Mapping[str, Any], ordered: bool,
                      load: Callable[[str], torch.Tensor], other_rms: float | None = None) -> AttentionWeights:
    """The attention facts of one checkpoint (`load(name)` gives one tensor)."""
    projections, skipped = find_projections(shapes, meta, ordered)
    out = AttentionWeights(found=len(projections), skipped=skipped, other_rms=other_rms)
    positions = _config_int(meta, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
    out.seq_len = min(positions or 128, 512)
    out.scaled = str(meta.get("model_type", "")).lower() not in _NO_SCALING
    if not projections:
        return out
    cost = [_flops(p, shapes) for p in projections]
    keep = len(projections)
    while keep > 1 and sum(sorted(cost)[:keep]) > FLOP_BUDGET:
        keep -= 1
    chosen = np.unique(np.linspace(0, len(projections) - 1, keep).round().astype(int)).tolist()
    for i in chosen:
        facts = head_facts(projections[i], load, out.scaled)
        if facts is not None:
            out.layers.append(facts)
    out.examined = len(chosen)
    return out


def expected_peak(sigma: float, positions: int, samples: int = 512) -> float:
    """Mean largest softmax weight over `positions` keys whose logits are N(0, sigma^2) (seeded Monte Carlo)."""
    if not math.isfinite(sigma) or positions < 2:
        return math.nan
    z = np.random.default_rng(0).standard_normal((samples, positions)) * sigma
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return float((p.max(axis=1) / p.sum(axis=1)).mean())


def projection_names(proj: QKProjection) -> set[str]:
    return {proj.query, proj.key} | ({proj.query_bias} if proj.query_bias else set())
