"""The one error the converter raises: its message names what is wrong and what to do."""

from __future__ import annotations

from gateway.domain.errors import CheckpointError

__all__ = ["CheckpointError"]
