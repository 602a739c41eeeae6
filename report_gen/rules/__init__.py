"""The rule catalogue: one module per family.

L: loss and metric curves · G: gradients · W: weight distributions · K: conv kernels and units ·
U: updates and training dynamics · A: activations (activations.py) and attention (attention.py) ·
I: input integrity.
"""
import importlib

FAMILIES = ("curves", "gradients", "weights", "kernels", "dynamics", "activations", "attention", "integrity")


def load_all() -> None:
    for mod in FAMILIES:
        importlib.import_module(f"report_gen.rules.{mod}")
