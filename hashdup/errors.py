"""Exception hierarchy. The CLI maps :class:`HashdupError` to exit status 1."""

from __future__ import annotations


class HashdupError(Exception):
    """Base class of every error hashdup raises on purpose."""


class ImageError(HashdupError):
    """An image file that cannot be read; ``reason`` is a one-line explanation."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IndexFileError(HashdupError):
    """A file of the on-disk index is missing, corrupt or inconsistent with the rest."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class NoIndexError(HashdupError):
    """No index exists at the given location."""


class NotFittedError(HashdupError):
    """An encoder was used before ``fit``."""
