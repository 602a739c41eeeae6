"""A: attention, from a probe's attention probabilities (A106) and from the query/key weights alone (A107).

Calibration of both (benchmarks/calibrate_attention.py): the real HF Trainer runs of
tests/fixtures/real/hf (tiny BERT and GPT-2, transformers 5.23), the healthy cases with seeds 0, 1 and
2, against bert-attention-collapse (query/key weights re-initialised 50x wide) with the same seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.rules.activations import _last_probe, _maps_plot
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import Key, Signal


@dataclass(frozen=True)
class AttentionOptions:
    uniform_entropy: float = opt(0.98, "normalised entropy above this: uniform attention (an untrained head: the "
                                       "HF fixtures with lr 0 or a frozen model measure 1.00)")
    collapsed_entropy: float = opt(0.09, "normalised entropy below this: all attention on one position. Calibration "
                                         "(benchmarks/calibrate_attention.py: HF self-probe, 4 x 24 synthetic tokens, seeds 0-2): healthy heads at least "
                                         "0.14 (0.20 on gpt2-spike), bert-attention-collapse at most 0.060 (seed 1, tests/fixtures/real/hf-seeds; 0.049 on "
                                         "its own eval data, per its manifest); 0.09 is their geometric middle")
    min_seq_len: int = opt(4, "ignore attention over fewer positions")


@rule("A106", "degenerate-attention", "warning", needs=(Signal.ATTENTION,), options=AttentionOptions)
def degenerate_attention(run, opts: AttentionOptions):
    """
    What it detects:
        Attention heads whose attention is uniform (normalised entropy near 1: the head attends to
        everything equally) or collapsed onto one position (entropy near 0), on the probe batch:
        a user's --model/--probe, or an HF checkpoint folder probing itself (built from its
        config.json with transformers, a seeded batch of token ids). Probabilities are captured from
        HF attention modules (eager attention), nn.MultiheadAttention and
        F.scaled_dot_product_attention calls.
    Why it matters:
        A uniform head computes an average and carries no positional selection; a collapsed head may
        be stuck on a padding or BOS token, and attention entropy collapse goes with unstable
        training (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention
        Entropy Collapse").
    Typical causes:
        Untrained or dead heads, masking bugs, missing positional encoding, too high a learning rate,
        query/key weights initialised or grown too wide.
    What to try:
        Check the attention mask and positional information; uniform heads can often be pruned;
        collapsed heads may indicate a too-high learning rate, a padding/mask bug or too wide
        query/key weights (see degenerate-attention-weights).

        Inspect the heatmaps in this report and check the positional encodings.
    """
    probe = _last_probe(run)
    if probe is None:
        return
    for layer, at in probe.attention.items():
        if at.seq_len < opts.min_seq_len:
            continue
        ent = np.asarray(at.entropy, dtype=float)
        uniform = np.flatnonzero(ent > opts.uniform_entropy).tolist()
        collapsed = np.flatnonzero(ent < opts.collapsed_entropy).tolist()
        if uniform or collapsed:
            parts = []
            if uniform:
                parts.append(f"{len(uniform)} uniform (heads {uniform[:8]})")
            if collapsed:
                parts.append(f"{len(collapsed)} collapsed (heads {collapsed[:8]})")
            yield Hit(layer, f"{' and '.join(parts)} of {at.heads} attention heads",
                      {"uniform_heads": uniform, "collapsed_heads": collapsed, "heads": at.heads,
                       "entropy": ent.round(3).tolist(),
                       "max_weight": np.asarray(at.max_weight, dtype=float).round(3).tolist()},
                      plot=_maps_plot(run, Key.ATTENTION, layer, at.maps))


@dataclass(frozen=True)
class AttentionWeightOptions:
    max_logit_scale: float = opt(10.0, "a head's query/key logit scale (std of q.k/sqrt(d) across keys for "
                                       "unit-variance inputs) above this: near one-hot attention. Calibration "
                                       "(benchmarks/calibrate_attention.py): "
                                       "healthy runs at most 0.90 (gpt2-healthy-tensorboard seed 1), 3.4 on "
                                       "gpt2-spike (lr 30x for 16 steps, recovered); bert-attention-collapse 30.6-34.1 "
                                       "over seeds 0-2; 10 is about the geometric mean of 3.4 and 30.6")
    identical_heads: float = opt(0.99, "cosine similarity of two heads' query-key forms above this: they compute "
                                       "the same attention pattern (info). Calibration (benchmarks/calibrate_attention.py): healthy at most "
                                       "0.968 (bert-healthy-none seed 2, tests/fixtures/real/hf-seeds, 2 heads of a model close to rank 1)")


@rule("A107", "degenerate-attention-weights", "warning", needs=(Signal.ATTENTION_WEIGHTS,),
      options=AttentionWeightOptions, category="degenerate-attention")
def degenerate_attention_weights(run, opts: AttentionWeightOptions):
    """
    What it detects:
        Attention that must be near one-hot whatever the input, read from the checkpoint alone (no
        model code, no probe, no transformers): per head, the spread of the query/key logits
        q.k/sqrt(d) across keys for unit-variance inputs, sqrt(||Wq^T Wk||_F^2 + ||Wk^T bq||^2)/sqrt(d),
        from the query and key projections found by structure (sibling projections reading the same
        input, or a fused q/k/v matrix; names only break ties) and the heads of the checkpoint's
        config.json. With logits spread that wide the softmax puts almost all weight on one key.
        Heads whose query-key forms are the same (cosine above `identical_heads`) are reported at
        info.
    Why it matters:
        Near one-hot attention passes one token's value on and blocks the gradient to the others;
        growing attention logits are a known cause of training instability and entropy collapse
        (Dehghani et al. 2023, ViT-22B; Wortsman et al. 2023, "Small-scale proxies for large-scale
        Transformer training instabilities"). Identical heads waste the layer's width.
    Typical causes:
        Query/key weights initialised far wider than the rest (a custom init that ignores
        initializer_range), a learning rate too high for the attention weights, no weight decay
        on them, missing 1/sqrt(d) scaling in a custom attention.
    What to try:
        Check the initialisation of the query/key projections (HF models use initializer_range, 0.02),
        lower the learning rate or add QK-LayerNorm; with a probe, the attention heatmaps show where
        the heads look.

        Compare with degenerate-attention when a probe ran (an HF folder probes itself when
        transformers is installed).
    """
    from report_gen.facts.attention import expected_peak  # with the checkpoints that have projections

    facts = run.attention_weights
    for layer in facts.layers:
        sigma = np.asarray(layer.logit_scale, dtype=float)
        wide = np.flatnonzero(sigma > opts.max_logit_scale)
        heads = f"{layer.heads} heads" if layer.heads_known else "the projection (heads unknown: their RMS)"
        evidence = {"logit_scale": sigma.round(3).tolist(), "heads": layer.heads, "heads_known": layer.heads_known,
                    "head_dim": layer.head_dim, "query": layer.query, "key": layer.key, "found_as": layer.how,
                    "qk_weight_rms": layer.qk_rms, "other_weight_rms": facts.other_rms,
                    "threshold": opts.max_logit_scale, "layers_examined": facts.examined,
                    "layers_found": facts.found}
        if wide.size:
            peak = expected_peak(float(np.min(sigma[wide])), facts.seq_len)
            width = ""
            if facts.other_rms:
                width = f"; its query/key weights are {layer.qk_rms / facts.other_rms:.0f}x the RMS of the model's " \
                        f"other weight matrices"
            which = f"{wide.size} of {heads}" if layer.heads_known else heads
            yield Hit(layer.layer, f"{which} give query/key logits spread {sigma[wide].min():.3g}-{sigma[wide].max():.3g} "
                                   f"(> {opts.max_logit_scale:g}) for unit-variance inputs: softmax over "
                                   f"{facts.seq_len} positions puts {peak:.0%} on one key on average{width}",
                      {**evidence, "wide_heads": wide.tolist(), "expected_peak": peak, "positions": facts.seq_len})
        sim = layer.head_similarity
        if sim is not None:
            pairs = [(i, j, float(sim[i, j])) for i in range(len(sim)) for j in range(i + 1, len(sim))
                     if sim[i, j] > opts.identical_heads]
            if pairs:
                shown = ", ".join(f"{i}~{j} ({c:.3f})" for i, j, c in pairs[:6])
                yield Hit(layer.layer, f"{len(pairs)} pair(s) of heads compute the same attention (cosine of their "
                                       f"query-key forms above {opts.identical_heads:g}: {shown})",
                          {**evidence, "identical_pairs": [[i, j, c] for i, j, c in pairs[:32]],
                           "similarity_threshold": opts.identical_heads}, severity="info",
                          suggestion="Heads that compute the same pattern can be pruned; if many do, check that the "
                                     "heads were initialised independently.")
