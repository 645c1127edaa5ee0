"""The migration phase table: every allowed move, and every refused one with a useful message."""

from __future__ import annotations

import itertools

import pytest

from gateway.domain.errors import IllegalTransition
from gateway.domain.phases import TRANSITIONS, Action, Phase, allowed_actions, next_phase

# The phase machine as docs/design.md describes it, written out by hand and independently of
# gateway/domain/phases.py: "phase --action--> next phase".
EXPECTED_MOVES = """
steady     --start-->          dual_write
dual_write --backfill_done-->  ready
dual_write --forced_cutover--> cutover
dual_write --abort-->          steady
ready      --shadow-->         shadow
ready      --cutover-->        cutover
ready      --forced_cutover--> cutover
ready      --abort-->          steady
shadow     --shadow-->         shadow
shadow     --unshadow-->       ready
shadow     --cutover-->        cutover
shadow     --forced_cutover--> cutover
shadow     --abort-->          steady
cutover    --shadow-->         cutover
cutover    --unshadow-->       cutover
cutover    --rollback-->       ready
cutover    --retire-->         steady
cutover    --abort-->          steady
"""
EXPECTED = {}
for line in EXPECTED_MOVES.strip().splitlines():
    before, action, after = line.replace("-->", " ").replace("--", " ").split()
    EXPECTED[(before, action)] = after
REFUSED = [(p, a) for p, a in itertools.product(Phase, Action) if (p.value, a.value) not in EXPECTED]


def test_the_table_allows_exactly_the_documented_moves():
    assert {(p.value, a.value): n.value for (p, a), n in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("phase", "action", "after"), [(p, a, n) for (p, a), n in EXPECTED.items()])
def test_an_allowed_action_moves_to_its_documented_phase(phase, action, after):
    assert next_phase(Phase(phase), Action(action)) == Phase(after)


@pytest.mark.parametrize(("phase", "action"), REFUSED)
def test_a_refused_action_names_the_phase_and_what_is_allowed(phase, action):
    with pytest.raises(IllegalTransition) as caught:
        next_phase(phase, action)
    assert caught.value.status == 409 and caught.value.code == "illegal_transition"
    assert phase.value in caught.value.message
    for allowed in allowed_actions(phase):
        assert allowed.value in caught.value.message


def test_the_whole_story_is_a_path_through_the_table():
    phase = Phase.STEADY
    for action in (
        Action.START,
        Action.BACKFILL_DONE,
        Action.SHADOW,
        Action.CUTOVER,
        Action.ROLLBACK,
        Action.CUTOVER,
        Action.RETIRE,
    ):
        phase = next_phase(phase, action)
    assert phase == Phase.STEADY


def test_abort_is_possible_from_every_phase_before_retire_and_nowhere_else():
    assert {p for (p, a) in TRANSITIONS if a == Action.ABORT} == set(Phase) - {Phase.STEADY}


def test_only_a_forced_cutover_can_leave_dual_write_for_cutover():
    assert (Phase.DUAL_WRITE, Action.CUTOVER) not in TRANSITIONS
    assert next_phase(Phase.DUAL_WRITE, Action.FORCED_CUTOVER) == Phase.CUTOVER
