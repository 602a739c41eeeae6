"""report_gen: post-hoc diagnostic reports for PyTorch training runs."""
__version__ = "0.1.0"
