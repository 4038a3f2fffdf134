"""Poolings: how the RNN's outputs over time become one vector before the Dense layer.

The choices are defined here once. Each graph family (the Keras model, the ONNX graph, both TFLite
graphs, the bench's PyTorch reference) writes one implementation per name and picks it with
`choose`, which fails loudly on a name it does not know and on a family that lacks one. Adding a
pooling therefore means: its name here, the Keras model, and one entry per graph family.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from kerasrnn.errors import InternalError

POOLINGS = ("last", "max", "mean")
DEFAULT = "max"  # max over the real time steps: far better than the last state on long texts

T = TypeVar("T")


def check(name: str) -> str:
    """`name` if it is a known pooling, else ValueError naming the choices."""
    if name not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {name!r}")
    return name


def choose(name: str, implementations: Mapping[str, T]) -> T:
    """The implementation of pooling `name` among one graph family's `implementations`.

    The family must implement every pooling: a missing one is our bug, reported as such, not read
    as another pooling."""
    check(name)
    missing = [p for p in POOLINGS if p not in implementations]
    if missing:  # exit 70 through cli_main: our bug, not the user's input
        raise InternalError(f"this graph family has no implementation of pooling {', '.join(missing)}")
    return implementations[name]
