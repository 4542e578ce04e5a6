"""A deploy that cuts a promotion short keeps the Deployment serving the promoted release
in front until `svc` runs its target."""

from __future__ import annotations

from mso.controllers.rollouts import SubsetTarget
from mso.engines.kubernetes.handoff import serving_elsewhere
from mso.strategies.state import RolloutState

OLD_STABLE = ((1, True),) * 3  # `svc` still runs release 1, which release 2 replaced
ROLLED = ((2, True),) * 3


def rollout(strategy: str, from_release: int = 2, to: int = 3) -> RolloutState:
    return RolloutState("web", strategy, from_release, to, started=0.0)


def test_a_blue_green_deploy_within_keep_previous_leaves_the_preview_serving() -> None:
    targets = [SubsetTarget("stable", 2, 3), SubsetTarget("preview", 3, 3)]
    traffic = serving_elsewhere(rollout("blue_green"), targets,
                                {"preview": (2, 3), "canary": (None, 0)}, OLD_STABLE)
    assert traffic is not None and traffic.handoff
    assert traffic.targets == [SubsetTarget("stable", 2, 3), SubsetTarget("preview", 2, 3)]
    assert traffic.weights == {"stable": 0, "preview": 100}


def test_a_canary_deploy_during_a_promotion_leaves_the_promoted_canary_serving() -> None:
    targets = [SubsetTarget("stable", 2, 3), SubsetTarget("canary", 3, 1)]
    traffic = serving_elsewhere(rollout("canary"), targets,
                                {"canary": (2, 3), "preview": (None, 0)}, OLD_STABLE)
    assert traffic is not None
    assert traffic.targets == [SubsetTarget("stable", 2, 3), SubsetTarget("canary", 2, 3)]
    assert traffic.weights == {"stable": 0, "canary": 100}


def test_a_rolling_deploy_during_a_promotion_rolls_svc_to_the_new_release_behind_it() -> None:
    traffic = serving_elsewhere(rollout("rolling"), [SubsetTarget("stable", 3, 3)],
                                {"canary": (2, 3), "preview": (None, 0)}, OLD_STABLE)
    assert traffic is not None
    assert traffic.targets == [SubsetTarget("stable", 3, 3), SubsetTarget("canary", 2, 3)]


def test_once_svc_is_rolled_the_new_rollout_takes_over() -> None:
    targets = [SubsetTarget("stable", 2, 3), SubsetTarget("preview", 3, 3)]
    assert serving_elsewhere(rollout("blue_green"), targets,
                             {"preview": (2, 3), "canary": (None, 0)}, ROLLED) is None


def test_an_unpromoted_canary_is_never_kept_in_front() -> None:
    # a deploy during an ordinary canary: the new rollout starts from release 1 again,
    # and the canary Deployment runs release 2, the one that was being tried
    targets = [SubsetTarget("stable", 1, 1), SubsetTarget("canary", 3, 1)]
    assert serving_elsewhere(rollout("canary", from_release=1), targets,
                             {"canary": (2, 1), "preview": (None, 0)}, ((1, True),)) is None


def test_a_second_deployment_not_yet_at_full_size_is_not_kept_in_front() -> None:
    targets = [SubsetTarget("stable", 2, 3), SubsetTarget("canary", 3, 1)]
    assert serving_elsewhere(rollout("canary"), targets,
                             {"canary": (2, 2), "preview": (None, 0)}, OLD_STABLE) is None


def test_without_an_active_rollout_nothing_is_kept() -> None:
    assert serving_elsewhere(None, [SubsetTarget("stable", 2, 3)],
                             {"canary": (2, 3)}, OLD_STABLE) is None
