"""Hugging Face Trainer `trainer_state.json` reader: `log_history` -> RunLog series, state -> run facts.

The Trainer writes `trainer_state.json` into every `checkpoint-N/` folder of its `output_dir` (and into
the `output_dir` itself on `save_state()`). Its `log_history` is the whole history up to that step, so
the files of one run are merged: the file with the highest `global_step` (of equal ones, the longest log_history: the final
`save_state()` adds the summary entry) wins every step it holds,
older files only add steps it does not hold (a rotated-away prefix, a checkpoint of a resumed run).

Keys -> tags: the same rewrite as the Trainer's own TensorBoardCallback (`rewrite_logs`), so one run
read from its event files or from trainer_state.json has the same tag names (DESIGN §6):

    eval_<name>  -> eval/<name>     eval_loss -> eval/loss, eval_accuracy -> eval/accuracy
    test_<name>  -> test/<name>
    <name>       -> train/<name>    loss -> train/loss, learning_rate -> train/learning_rate,
                                    grad_norm -> train/grad_norm, epoch -> train/epoch

`step` is the step of the entry (an entry without an integer step is skipped, with the count in one
Problem). Values are numbers; `NaN`, `Infinity` and `-Infinity` (bare tokens, as Python's json writes
them) are kept as such: a non-finite loss is a finding, not damage. Strings, lists and dicts (a
classification report) are not series. Wall times are unknown (NaN).

Run facts -> `RunLog.hparams`: from the newest file `global_step`, `max_steps`, `num_train_epochs`,
`train_batch_size`, `logging_steps`, `eval_steps`, `save_steps`, `epoch`, `best_metric`,
`best_model_checkpoint`, `best_global_step`, `total_flos`, `num_input_tokens_seen`, `trial_name` and
`trial_params.*`; the end-of-training summary entry of `log_history` (the one holding `train_runtime`:
`train_runtime`, `train_samples_per_second`, `train_steps_per_second`, `train_loss` (the mean loss),
`total_flos`) goes there too, never into a series (a one-point "train_loss" is not a curve); and the
`TrainingArguments` in `training_args.bin` beside the newest trainer_state.json (or in the run folder)
as `args.<field>`: that file is a pickle, read only through report_gen's restricted unpickler
(nothing from it is constructed or run; the dataclass is a placeholder whose state is plain values).

Damage: a file that is not JSON is one "bad-json" Problem with its line and column; when only the end
is cut (a killed write) the complete `log_history` entries before the cut are still read. Files above
`textlogs.MAX_LOG_BYTES` are not read ("too-large"), nor files resolving outside the run folder.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from report_gen.core import Problem, ProblemKind
from report_gen.readers.textlogs import (SeriesBuilder, flatten_hparams, plain_value, read_text, run_log, run_root,
                                         to_float)
from report_gen.safe_open import open_regular

FILE_NAME = "trainer_state.json"
_STATE_FACTS = ("global_step", "max_steps", "num_train_epochs", "train_batch_size", "logging_steps", "eval_steps",
                "save_steps", "epoch", "best_metric", "best_model_checkpoint", "best_global_step", "total_flos",
                "num_input_tokens_seen", "trial_name")
_SUMMARY_MARK = "train_runtime"
_MAX_ARGS_BYTES = 1024 * 1024


def is_trainer_state_name(name: str) -> bool:
    return name == FILE_NAME


def hf_tag(key: str) -> str:
    """The tag of a log_history key (the TensorBoardCallback's rewrite, see the module docstring)."""
    for prefix, group in (("eval_", "eval/"), ("test_", "test/")):
        if key.startswith(prefix) and len(key) > len(prefix):
            return group + key[len(prefix):]
    return "train/" + key


def _load_state(path: str, text: str, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(path, ProblemKind.BAD_JSON,
                                f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}", offset=e.pos))
        history = _salvage_history(text)
        if history:
            problems.append(Problem(path, ProblemKind.TRUNCATED_RECORD,
                                    f"{path}: {len(history)} complete log_history entries before the damage were read",
                                    count=len(history)))
            return {"log_history": history}
        return None
    if not isinstance(state, dict):
        problems.append(Problem(path, ProblemKind.BAD_JSON, f"{path}: a JSON {type(state).__name__}, "
                                "not the Trainer's state object"))
        return None
    return state


def _salvage_history(text: str) -> list[dict]:
    """The complete log_history entries of a cut or damaged file, in order (up to the damage)."""
    m = re.search(r'"log_history"\s*:\s*\[', text)
    if not m:
        return []
    decoder, pos, out = json.JSONDecoder(), m.end(), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        try:
            entry, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out
        if isinstance(entry, dict):
            out.append(entry)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return to_float(value)  # (float() of a 5,000-digit JSON int raises)


def read_trainer_states(files: Sequence[tuple[str, str]]) -> Any:
    problems: list[Problem] = []
    states = []  # (global_step, path, history, state)
    for path, sub in files:
        state = None
        text = read_text(path, problems, root=run_root(path, sub), what="trainer_state.json")
        if text is not None:
            state = _load_state(path, text, problems)
        if state is None:
            continue
        history = state.get("log_history")
        if not isinstance(history, list):
            problems.append(Problem(path, ProblemKind.BAD_JSON, f"{path}: no log_history list in this trainer state"))
            history = []
        steps = [e.get("step") for e in history if isinstance(e, dict) and isinstance(e.get("step"), int)]
        global_step = state.get("global_step") if isinstance(state.get("global_step"), int) else max(steps, default=-1)
        states.append((global_step, path, sub, history, state))
    states.sort(key=lambda s: (-s[0], -len(s[3]), s[1]))  # newest first; of equals, the longest history
    series = SeriesBuilder("")
    claimed: set[int] = set()
    summary: dict[str, Any] = {}
    for _, path, _, history, _ in states:
        held, skipped = set(), 0
        for entry in history:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int) or isinstance(entry.get("step"), bool):
                skipped += 1
                continue
            step = entry["step"]
            if step in claimed:
                continue
            held.add(step)
            if _SUMMARY_MARK in entry:
                for key, value in entry.items():
                    if key not in ("step", "epoch"):
                        summary.setdefault(key, plain_value(value))
                continue
            for key, value in entry.items():
                number = _number(value)
                if key != "step" and number is not None:
                    series.add(hf_tag(key), step, number, file=path)
        claimed |= held
        if skipped:
            problems.append(Problem(path, ProblemKind.BAD_JSON, f"{path}: {skipped} log_history entries without an "
                                    "integer step were skipped", severity="info", count=skipped))
    hparams: dict[str, Any] = {}
    if states:
        _, newest, sub, _, state = states[0]
        for key in _STATE_FACTS:
            if key in state:
                hparams[key] = plain_value(state[key])
        if isinstance(state.get("trial_params"), dict):
            flatten_hparams(state["trial_params"], "trial_params", hparams)
        hparams.update({k: v for k, v in summary.items() if k not in hparams})
        hparams.update(_training_args(newest, sub, problems))
    return run_log([series.scalar_series()], problems, [p for _, p, *_ in sorted(states, key=lambda s: (s[0], s[1]))], hparams)


def _training_args(state_path: str, sub: str, problems: list[Problem]) -> dict[str, Any]:
    """`args.<field>` from the TrainingArguments pickle next to the newest state (restricted unpickler)."""
    root = run_root(state_path, sub)
    for folder in dict.fromkeys((os.path.dirname(state_path), root)):
        path = os.path.join(folder, "training_args.bin")
        if os.path.isfile(path):
            return _read_training_args(path, root, problems)
    return {}


def _read_training_args(path: str, root: str, problems: list[Problem]) -> dict[str, Any]:
    import io
    import zipfile

    from report_gen.readers.textlogs import inside

    try:
        if not inside(path, root) or os.path.getsize(path) > _MAX_ARGS_BYTES:
            return {}
        from report_gen.readers.safe_unpickle import Placeholder, restricted_load

        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            raw = f.read(_MAX_ARGS_BYTES + 1)
        if raw.startswith(b"PK"):
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                name = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
                raw = z.read(name)
        obj, _ = restricted_load(io.BytesIO(raw), persistent_load=lambda pid: None)
    except Exception as e:  # noqa: BLE001 - a damaged side file costs its facts, never the run
        problems.append(Problem(path, ProblemKind.UNREADABLE, f"{path}: the training arguments could not be read "
                                f"({type(e).__name__}); their values are not in the run card", severity="info"))
        return {}
    fields = obj.attributes if isinstance(obj, Placeholder) else obj if isinstance(obj, dict) else {}
    out = {}
    for key, value in fields.items():
        if isinstance(value, Placeholder):  # a transformers enum (lr_scheduler_type, optim): its value is its arg
            enum = value.global_name.startswith("transformers.") and len(value.args) == 1
            value = value.args[0] if enum and isinstance(value.args[0], (str, int, float)) else None
        if isinstance(value, (bool, int, float, str)) and not str(key).startswith("_"):
            out[f"args.{key}"] = plain_value(value)
    return out
