"""Lifecycle table of replica states."""

from __future__ import annotations

import pytest

from mso.engines.local.states import (
    ALLOWED, ALIVE_STATES, TERMINAL_STATES, IllegalTransition, ReplicaState as S,
    check_transition,
)


def test_every_state_has_a_row() -> None:
    assert set(ALLOWED) == set(S)


def test_terminal_states_have_no_exit() -> None:
    for state in TERMINAL_STATES:
        assert ALLOWED[state] == frozenset()


def test_alive_and_terminal_are_disjoint() -> None:
    assert not ALIVE_STATES & TERMINAL_STATES


@pytest.mark.parametrize("old,new", [
    (S.PENDING, S.STARTING), (S.STARTING, S.RUNNING), (S.RUNNING, S.READY),
    (S.READY, S.RUNNING), (S.READY, S.BACKOFF), (S.BACKOFF, S.STARTING),
    (S.STARTING, S.EXITED), (S.RUNNING, S.FAILED), (S.READY, S.STOPPING),
    (S.BACKOFF, S.STOPPING), (S.STOPPING, S.STOPPED), (S.PENDING, S.RUNNING),
    (S.RUNNING, S.RUNNING),
])
def test_transition_allowed(old: S, new: S) -> None:
    check_transition(old, new)


@pytest.mark.parametrize("old,new", [
    (S.STOPPED, S.STARTING), (S.FAILED, S.STARTING), (S.STOPPING, S.RUNNING),
    (S.STARTING, S.READY), (S.BACKOFF, S.READY), (S.EXITED, S.STOPPING),
    (S.PENDING, S.READY),
])
def test_transition_illegal_raises(old: S, new: S) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)


def test_every_nonterminal_state_can_be_stopped() -> None:
    for state in set(S) - TERMINAL_STATES - {S.STOPPING}:
        check_transition(state, S.STOPPING)
