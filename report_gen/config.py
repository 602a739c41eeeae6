"""Configuration: `[tool.report_gen]` in pyproject.toml, or a TOML file given with --config.

```toml
[tool.report_gen]
select = ["L", "G", "K101"]          # codes, prefixes or rule names; default: every rule
ignore = ["W104", "bimodal-weights"] # longest matching selector wins between select and ignore
fail-on = "error"                    # error | warning | never
fail-on-unknown = false              # also exit 1 when nothing about the training could be judged
[tool.report_gen.severity]           # per-rule severity overrides
K101 = "warning"
[tool.report_gen.per-subject-ignores] # subject glob -> codes/prefixes/names
"backbone.*" = ["U101"]
[tool.report_gen.rules.K101]          # per-rule options (see `report-gen rules explain K101`)
threshold = 0.005
[tool.report_gen.tags]                # extra tag prefixes per signal family
grad_hist = ["my_grads/"]
[tool.report_gen.roles]               # a tag (or glob, or list of them) per role; `ignore` leaves tags out
train_loss = "my/total"
val_loss = ["validation/epoch_loss", "eval/*loss"]
ignore = ["train/entropy_loss"]
```
Unknown keys and unknown roles are rejected with a one-line message. `--role ROLE=TAG` (repeatable) adds
to, and for the same role replaces, the configured roles.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report_gen.core import InputError, Severity
from report_gen.readers.signals import TagConventions
from report_gen.vocab import USER_ROLES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KNOWN_KEYS = {"select", "ignore", "fail-on", "fail-on-unknown", "severity", "per-subject-ignores", "rules", "tags",
              "roles"}
FAIL_ON = ("error", "warning", "never")


@dataclass
class Config:
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    fail_on: str = "error"
    fail_on_unknown: bool = False
    severity: dict[str, str] = field(default_factory=dict)
    per_subject_ignores: dict[str, list[str]] = field(default_factory=dict)
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: TagConventions = field(default_factory=TagConventions)
    roles: dict[str, list[str]] = field(default_factory=dict)  # role -> tag patterns (readers.signals)
    source: str | None = None

    def with_roles(self, pairs: list[str] | None) -> "Config":
        """This config with `--role ROLE=TAG` pairs on top (a role given there replaces the configured one)."""
        if not pairs:
            return self
        given: dict[str, list[str]] = {}
        for pair in pairs:
            role, sep, tag = pair.partition("=")
            if not sep or not tag.strip():
                raise InputError(f"--role {pair}: expected ROLE=TAG, e.g. --role train_loss=my/total")
            given.setdefault(check_role(role.strip(), "--role"), []).append(tag.strip())
        return dataclasses.replace(self, roles={**self.roles, **given})

    # ---- selection ------------------------------------------------------------------------------
    def is_enabled(self, rule) -> bool:
        """Longest matching selector wins; ignore beats select on a tie; no match → enabled iff no select."""
        best_len, verdict = -1, self.select is None
        for sel, on in [(s, True) for s in (self.select or [])] + [(s, False) for s in self.ignore]:
            n = match_length(sel, rule)
            if n > best_len or (n == best_len and n >= 0 and not on):
                if n >= 0:
                    best_len, verdict = n, on
        return verdict

    def unused_selectors(self, rules) -> list[str]:
        sels = list(self.select or []) + list(self.ignore) + list(self.severity) + list(self.rule_options)
        for codes in self.per_subject_ignores.values():
            sels += codes
        return sorted({s for s in sels if not any(match_length(s, r) >= 0 for r in rules)})

    def subject_ignored(self, finding, rules_by_code) -> str | None:
        """The per-subject-ignores glob that suppresses this finding, if any."""
        rule = rules_by_code.get(finding.code)
        for glob, codes in self.per_subject_ignores.items():
            if fnmatch.fnmatchcase(finding.subject, glob) or fnmatch.fnmatchcase(f"{finding.run}/{finding.subject}", glob):
                if rule is not None and any(match_length(c, rule) >= 0 for c in codes):
                    return glob
        return None

    def options_for(self, rule) -> dict[str, Any]:
        out: dict[str, Any] = {}
        matching = [(match_length(k, rule), k) for k in self.rule_options if match_length(k, rule) >= 0]
        for _, key in sorted(matching):  # least specific first, so [rules.L102] beats [rules.L10]
            out.update(self.rule_options[key])
        return out

    def severity_for(self, rule) -> str | None:
        best, sev = -1, None
        for key, value in self.severity.items():
            n = match_length(key, rule)
            if n > best:
                best, sev = n, value
        return sev


def match_length(selector: str, rule) -> int:
    """How specifically `selector` matches `rule`: -1 no match; names and full codes beat prefixes."""
    s = selector.strip()
    if s.lower() == rule.name:
        return len(rule.code)  # a name is as specific as the full code (ignore wins a tie)
    if s.upper() == "ALL":
        return 0
    if s and rule.code.startswith(s.upper()):
        return len(s)
    return -1


def check_role(role: str, where: str) -> str:
    if role not in USER_ROLES:
        raise InputError(f"{where}: unknown role {role!r} (known: {', '.join(USER_ROLES)})")
    return role


def _roles(table: Any, src: str) -> dict[str, list[str]]:
    if not isinstance(table, dict):
        raise InputError(f"{src}: [tool.report_gen.roles] must be a table of role = tag")
    out = {}
    for role, tags in table.items():
        check_role(str(role), f"{src}: [tool.report_gen.roles]")
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
            raise InputError(f"{src}: [tool.report_gen.roles] {role} must be a tag or a list of tags")
        out[str(role)] = list(tags)
    return out


def _strlist(value: Any, key: str, src: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{src}: [tool.report_gen] {key} must be a list of rule codes, prefixes or names")
    return list(value)


def from_table(table: dict[str, Any], src: str) -> Config:
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise InputError(f"{src}: unknown key(s) in [tool.report_gen]: {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(KNOWN_KEYS))})")
    cfg = Config(source=src)
    if "select" in table:
        cfg.select = _strlist(table["select"], "select", src)
    cfg.ignore = _strlist(table.get("ignore", []), "ignore", src)
    fail_on = str(table.get("fail-on", "error")).lower()
    if fail_on not in FAIL_ON:
        raise InputError(f"{src}: fail-on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
    cfg.fail_on = fail_on
    fail_on_unknown = table.get("fail-on-unknown", False)
    if not isinstance(fail_on_unknown, bool):
        raise InputError(f"{src}: fail-on-unknown must be true or false, got {fail_on_unknown!r}")
    cfg.fail_on_unknown = fail_on_unknown
    if not isinstance(table.get("severity", {}), dict) or not isinstance(table.get("per-subject-ignores", {}), dict):
        raise InputError(f"{src}: severity and per-subject-ignores must be tables ([tool.report_gen.severity])")
    for code, sev in dict(table.get("severity", {})).items():
        try:
            cfg.severity[code] = Severity.parse(sev).value
        except ValueError as e:
            raise InputError(f"{src}: severity.{code}: {e}") from None
    for glob, codes in dict(table.get("per-subject-ignores", {})).items():
        cfg.per_subject_ignores[str(glob)] = _strlist(codes, f"per-subject-ignores.{glob}", src)
    rules = table.get("rules", {})
    if not isinstance(rules, dict) or not all(isinstance(v, dict) for v in rules.values()):
        raise InputError(f"{src}: [tool.report_gen.rules.CODE] tables must hold option = value pairs")
    cfg.rule_options = {str(k): dict(v) for k, v in rules.items()}
    cfg.roles = _roles(table.get("roles", {}), src)
    tags = table.get("tags", {})
    if tags:
        fields = {f.name: f for f in dataclasses.fields(TagConventions)}
        bad = sorted(set(tags) - set(fields))
        if bad:
            raise InputError(f"{src}: unknown tag family {', '.join(bad)} in [tool.report_gen.tags] "
                             f"(known: {', '.join(fields)})")
        defaults = TagConventions()
        cfg.tags = dataclasses.replace(defaults, **{k: tuple(_strlist(v, f"tags.{k}", src)) + getattr(defaults, k)
                                                    for k, v in tags.items()})
    return cfg


def load_config(path: str | None = None, search_from: str | None = None) -> Config:
    """--config FILE (a report_gen TOML: top-level keys, or a pyproject with [tool.report_gen]);
    otherwise the nearest pyproject.toml above `search_from` (default: cwd) that has [tool.report_gen]."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: config file not found")
        data = _read_toml(p)
        table = data.get("tool", {}).get("report_gen") if isinstance(data.get("tool"), dict) else data
        if not isinstance(table, dict):
            raise InputError(f"{p}: [tool.report_gen] must be a table")
        return from_table(table, str(p))
    start = Path(search_from or ".").resolve()
    for d in [start, *start.parents]:
        py = d / "pyproject.toml"
        if py.is_file():
            data = _read_toml(py)
            tool = data.get("tool", {})
            table = tool.get("report_gen") if isinstance(tool, dict) else None
            if isinstance(table, dict):
                return from_table(table, str(py))
            break
    return Config()


#: a config file larger than this is not one (pyproject.toml files are KB)
MAX_CONFIG_BYTES = 16 << 20


def _read_toml(p: Path) -> dict[str, Any]:
    from report_gen.safe_open import read_regular

    try:
        return tomllib.loads(read_regular(p, MAX_CONFIG_BYTES).decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p}: invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{p}: invalid TOML: {e}") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
