"""The index path, top to bottom (:mod:`hashdup.indexing.build`): walk → collect (:mod:`~hashdup.indexing.collect`,
with what the previous index and an interrupted run's journal hold, :mod:`~hashdup.indexing.previous`) → train and
encode (:mod:`~hashdup.indexing.train`) → write a new generation (:mod:`hashdup.io.store`)."""

from hashdup.indexing.previous import library_paths

__all__ = ["library_paths"]
