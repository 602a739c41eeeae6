"""The entry point: the event files of one run -> :class:`report_gen.readers.types.RunLog`."""
from __future__ import annotations

import os
from collections.abc import Collection, Sequence

from report_gen.readers import keras_config
from report_gen.readers.events.decode import ALL_KINDS, decode_file
from report_gen.readers.events.merge import Restarts, appended_evaluations, merge_key, merge_points, merge_scalars
from report_gen.readers.types import RunLog, ScalarTable


def is_event_file_name(name: str) -> bool:
    """True for TensorBoard event file names: any name containing ``tfevents``.

    CatBoost writes exactly ``events.out.tfevents`` (no suffix); only the last path part is looked at.
    """
    return "tfevents" in os.path.basename(name)


def read_events(files: Sequence[tuple[str, str]], *, max_per_tag: int | None = None,
                kinds: Collection[str] = ALL_KINDS) -> RunLog:
    """Read the event files of ONE run.

    files: ``(path, sub)`` pairs; ``sub`` is "" for files directly in the run folder, else the relative
        sub-folder (recorded as the scalar ``run`` column and as a ``sub/`` key prefix elsewhere).
    max_per_tag: keep at most this many values per tag (evenly spaced, first and last kept).
    kinds: which of "scalars", "histograms", "images", "texts", "hparams" to decode.

    Damage never raises: it is listed in ``RunLog.problems``. What is decoded and how damage is
    handled: :mod:`.decode`; how files merge and the step policy: :mod:`.merge`.
    """
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown event kinds {sorted(unknown)}; expected some of {ALL_KINDS}")
    if max_per_tag is not None and max_per_tag < 1:
        raise ValueError("max_per_tag must be >= 1")
    decoded = [decode_file(path, sub, frozenset(kinds)) for path, sub in files]
    decoded.sort(key=merge_key)
    data = RunLog.empty()
    for content in decoded:
        data.files.append(content.path)
        data.problems.extend(content.problems)
        data.hparams.update(content.hparams)
    restarts = Restarts()
    series = []
    for sub in sorted({c.sub for c in decoded}):
        group = [c for c in decoded if c.sub == sub]
        series += merge_scalars(sub, group, max_per_tag, restarts, appended_evaluations(sub, group))
        merge_points(sub, group, max_per_tag, restarts, data)
    data.table = ScalarTable(series)
    data.problems.extend(restarts.problems())
    configs = [(c.path, raw) for c in decoded for raw in c.model_configs]
    if configs:
        data.weight_shapes, problems = keras_config.histogram_shapes(configs, data.histograms)
        data.problems.extend(problems)
    return data
