"""Migration phases and the pure table of which operator action moves a collection where.

    steady(A) --start--> dual_write(A->B) --backfill_done--> ready --shadow--> shadow
    ready|shadow --cutover--> cutover(reads B) --rollback--> ready(reads A)
    cutover --retire(A)--> steady(B)          any phase but steady --abort--> steady(A)

A refused move raises `IllegalTransition`, which the API answers with 409 naming the
current phase and the actions allowed from it.
"""

from __future__ import annotations

import enum

from gateway.domain.errors import IllegalTransition


class Phase(enum.StrEnum):
    STEADY = "steady"
    DUAL_WRITE = "dual_write"  # writes go to both models; the backfill re-embeds older rows
    READY = "ready"  # the new model's index is complete; reads still on the old model
    SHADOW = "shadow"  # reads on the old model, sampled shadow queries on the new one
    CUTOVER = "cutover"  # reads on the new model, both still written: rollback is a flip


class Action(enum.StrEnum):
    START = "start"
    BACKFILL_DONE = "backfill_done"
    SHADOW = "shadow"
    UNSHADOW = "unshadow"
    CUTOVER = "cutover"
    FORCED_CUTOVER = "forced_cutover"  # onto an index not known complete; logged and audited
    ROLLBACK = "rollback"
    RETIRE = "retire"
    ABORT = "abort"


TRANSITIONS: dict[tuple[Phase, Action], Phase] = {
    (Phase.STEADY, Action.START): Phase.DUAL_WRITE,
    (Phase.DUAL_WRITE, Action.BACKFILL_DONE): Phase.READY,
    (Phase.DUAL_WRITE, Action.FORCED_CUTOVER): Phase.CUTOVER,
    (Phase.DUAL_WRITE, Action.ABORT): Phase.STEADY,
    (Phase.READY, Action.SHADOW): Phase.SHADOW,
    (Phase.READY, Action.CUTOVER): Phase.CUTOVER,
    (Phase.READY, Action.FORCED_CUTOVER): Phase.CUTOVER,
    (Phase.READY, Action.ABORT): Phase.STEADY,
    (Phase.SHADOW, Action.SHADOW): Phase.SHADOW,
    (Phase.SHADOW, Action.UNSHADOW): Phase.READY,
    (Phase.SHADOW, Action.CUTOVER): Phase.CUTOVER,
    (Phase.SHADOW, Action.FORCED_CUTOVER): Phase.CUTOVER,
    (Phase.SHADOW, Action.ABORT): Phase.STEADY,
    (Phase.CUTOVER, Action.SHADOW): Phase.CUTOVER,  # shadow the old model after cutover
    (Phase.CUTOVER, Action.UNSHADOW): Phase.CUTOVER,
    (Phase.CUTOVER, Action.ROLLBACK): Phase.READY,
    (Phase.CUTOVER, Action.RETIRE): Phase.STEADY,
    (Phase.CUTOVER, Action.ABORT): Phase.STEADY,
}


def allowed_actions(phase: Phase) -> list[Action]:
    return [action for (source, action) in TRANSITIONS if source == phase]


def next_phase(phase: Phase, action: Action) -> Phase:
    """The phase after `action`, or IllegalTransition naming what is allowed instead."""
    try:
        return TRANSITIONS[(phase, action)]
    except KeyError:
        allowed = ", ".join(a.value for a in allowed_actions(phase)) or "none"
        raise IllegalTransition(
            f"cannot {action.value} a collection in phase {phase.value!r}; allowed from here: {allowed}"
        ) from None
