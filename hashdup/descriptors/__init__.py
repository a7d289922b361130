"""Descriptors: images to float32 feature vectors.

``make_descriptor(name, **params)`` builds one by name; every descriptor follows
:class:`~hashdup.descriptors.base.Descriptor`.
"""

from __future__ import annotations

from typing import Any, Literal

from hashdup.descriptors.base import Descriptor
from hashdup.descriptors.color import ColorHistogram
from hashdup.descriptors.combined import GistColor
from hashdup.descriptors.gist import Gist

DescriptorName = Literal["gist", "color", "gist+color"]
DESCRIPTORS: dict[str, type[Descriptor]] = {"gist": Gist, "color": ColorHistogram, "gist+color": GistColor}


def make_descriptor(name: DescriptorName | str, **params: Any) -> Descriptor:
    """Build a descriptor from its registry name and keyword parameters."""
    try:
        cls = DESCRIPTORS[name]
    except KeyError:
        raise ValueError(f"unknown descriptor {name!r}; choose from {', '.join(DESCRIPTORS)}") from None
    return cls(**params)


__all__ = ["DESCRIPTORS", "ColorHistogram", "Descriptor", "DescriptorName", "Gist", "GistColor", "make_descriptor"]
