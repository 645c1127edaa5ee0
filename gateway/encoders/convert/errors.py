"""The one error the converter raises: its message names what is wrong and what to do."""

from __future__ import annotations


class CheckpointError(ValueError):
    """The checkpoint is incomplete, unsafe, or asks for something the converter does not support."""
