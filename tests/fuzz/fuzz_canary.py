"""The canary of the fuzz run: every fuzzed pickle references `pwn`, which would create a file if called.

Nothing report_gen does without --trust-pickles may ever call it; the fuzzer checks after each input
that no marker file exists. Importable by name in the fuzz harness (tests/fuzz is on its sys.path),
so an unpickler that resolves globals for real would find it.
"""
from __future__ import annotations


def pwn(marker: str) -> str:
    with open(marker, "w", encoding="utf-8") as f:
        f.write("code from a fuzzed input ran\n")
    return marker


class Payload:
    """Pickles as a call of `pwn(marker)`: what a hostile checkpoint carries."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pwn, (self.marker,))
