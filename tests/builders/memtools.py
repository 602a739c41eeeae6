"""Memory measurement for tests: how much Python allocated at most inside a block."""
import tracemalloc
from contextlib import contextmanager


@contextmanager
def peak_memory():
    """`with peak_memory() as mem: ...` then `mem["peak"]` is the peak of traced allocations (bytes)."""
    box = {"peak": 0}
    tracemalloc.start()
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
