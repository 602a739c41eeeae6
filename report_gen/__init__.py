"""report_gen: post-hoc diagnostic reports for PyTorch training runs.

    import report_gen
    report = report_gen.diagnose("runs/exp42")     # -> report_gen.Report (see report_gen.api)

`import report_gen` stays cheap: torch, matplotlib and the engine are imported when first used.
"""
__version__ = "0.1.0"

__all__ = ["Report", "diagnose", "__version__"]


def __getattr__(name: str):
    if name in ("diagnose", "Report"):
        from report_gen import api

        return getattr(api, name)
    raise AttributeError(f"module 'report_gen' has no attribute {name!r}")
