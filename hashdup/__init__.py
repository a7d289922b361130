"""hashdup: find duplicate and similar images with compact binary codes."""

__version__ = "0.1.0"
