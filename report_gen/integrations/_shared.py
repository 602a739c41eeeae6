"""What the framework callbacks share: the TrainingMonitor options they pass through, the lazy class."""
from __future__ import annotations

import inspect
from typing import Any, Callable

# TrainingMonitor parameters a callback sets itself (where to write, which rank, which model)
_OWN = {"self", "log_dir_or_writer", "rank", "model", "log_grad_norm"}


def monitor_options(options: dict[str, Any]) -> dict[str, Any]:
    """The TrainingMonitor keyword options given to a callback, checked by name at construction time."""
    from report_gen.monitor import TrainingMonitor

    allowed = [n for n in inspect.signature(TrainingMonitor.__init__).parameters if n not in _OWN]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"ReportGenCallback: unknown option(s) {', '.join(unknown)}; "
                        f"TrainingMonitor options are {', '.join(allowed)}")
    return dict(options)


def lazy_class(namespace: dict[str, Any], name: str, build: Callable[[], type]) -> type:
    """Build `name` on first access (module __getattr__), cache it in the module, make it picklable."""
    cls = build()
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = namespace["__name__"]
    namespace[name] = cls
    return cls
