"""What the audit log records: every state change of a collection names one of these actions.

The console's phase timeline and `migrate status`'s recent actions read them back; a new
kind of change gets a member here, never a bare string at the call site.
"""

from __future__ import annotations

import enum

from gateway.domain.backfill import BackfillAction, BackfillState
from gateway.domain.phases import Action


class AuditAction(enum.StrEnum):
    START = "start"
    SHADOW = "shadow"
    CUTOVER = "cutover"
    FORCED_CUTOVER = "forced_cutover"
    ROLLBACK = "rollback"
    RETIRE = "retire"
    ABORT = "abort"
    BACKFILL_DONE = "backfill_done"
    BACKFILL_FAILED = "backfill_failed"
    BACKFILL_PAUSE = "backfill_pause"
    BACKFILL_RESUME = "backfill_resume"
    BACKFILL_RATE = "backfill_rate"  # only the rate cap changed
    ADOPT = "adopt"
    ADOPT_IMPORTED = "adopt_imported"
    ADOPT_DONE = "adopt_done"
    ADOPT_STOP = "adopt_stop"
    ADAPTER_FIT = "adapter_fit"  # a new adapter version (services/adapter.py)
    READ_MODE = "read_mode"  # native or adapted reads, translated vectors on or off

    @classmethod
    def of_switch(cls, action: Action) -> AuditAction:
        """The audit entry of a read-model switch (cutover, forced cutover or rollback)."""
        return cls(action.value)

    @classmethod
    def of_backfill_end(cls, state: BackfillState) -> AuditAction:
        return cls.BACKFILL_DONE if state == BackfillState.DONE else cls.BACKFILL_FAILED

    @classmethod
    def of_backfill_control(cls, action: BackfillAction | None) -> AuditAction:
        return cls.BACKFILL_RATE if action is None else cls(f"backfill_{action.value}")
