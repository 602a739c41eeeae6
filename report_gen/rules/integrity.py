"""I: input integrity: what the readers found wrong with the run's files."""
from __future__ import annotations

from dataclasses import dataclass

from report_gen.core import severity_rank
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import Signal



@dataclass(frozen=True)
class IntegrityOptions:
    min_severity: str = opt("warning", "lowest problem severity turned into a finding; problems below it stay in "
                                       "inputs.runs[].problems only")


@rule("I101", "damaged-input", "warning",
      needs=(Signal.INPUT_PROBLEMS,), options=IntegrityOptions, category="input-integrity")
def damaged_input(run, opts: IntegrityOptions):
    """
    What it detects:
        An input file that is unreadable, truncated in the middle, corrupt (bad CRC, junk bytes such as a
        text log written into an event file), unsafe (a pickle that would run code), or not what its name
        says (a Git LFS pointer or an HTML page named .pt). Each is reported with the file and, where
        known, the byte offset; the rest of the report is built from what could be read.
    Why it matters:
        A report built from damaged inputs may miss data: findings (and the absence of findings) for the
        affected run are less certain.
    Typical causes:
        Interrupted copies or uploads, two processes writing one file, Git LFS files not fetched, logs
        redirected into the wrong file.
    What to try:
        Re-copy or regenerate the file; if a run was killed mid-write this is expected for the last
        record only.

        Run `git lfs pull` for LFS pointers, or re-run the export; a truncated last record from a killed
        run is normal and is listed only as information.
    """
    floor = severity_rank(opts.min_severity)
    for p in run.problems:
        if severity_rank(p.severity) < floor:
            continue
        where = f" at byte {p.offset}" if p.offset is not None else ""
        count = f" ({p.count}×)" if p.count and p.count > 1 else ""
        yield Hit(p.file, f"{p.kind}{where}{count}: {p.message}",
                  {"file": p.file, "kind": p.kind, "offset": p.offset, "count": p.count},
                  severity=p.severity)
