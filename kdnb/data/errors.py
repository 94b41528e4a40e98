"""The two ways loading data can fail that a reader can fix, each with a message saying how."""
from __future__ import annotations


class DatasetNotFound(FileNotFoundError):
    """The files of a data set are not where they are expected (and no download was asked for)."""


class DatasetDamaged(RuntimeError):
    """The files of a data set are present but fail their checksums."""
