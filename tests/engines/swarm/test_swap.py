"""Blue/green on Swarm: promotion swaps which service is stable without restarting a task,
and the end of the rollout undoes the swap without dropping traffic."""

from __future__ import annotations

from mso.engines.swarm.plan import Ensure, Progress, Want, plan_service
from mso.engines.swarm.swap import Swap, plan_swap
from tests.engines.swarm.test_plan import svc

# v1 was stable, v2 the preview; promoted: the rollout wants stable v2, previous v1
SWAP = Swap(Want(1, 2, "previous", "main-v1"), Want(2, 2, "stable", "second-v2"))
STABLE_V2 = Want(2, 2, "stable", "main-v2")
STANDIN_V2 = Want(2, 2, "canary", "second-v2")
PROMOTED = {"stable": 100, "previous": 0}


def test_promotion_relabels_both_services_and_switches_traffic_in_one_table() -> None:
    main, other = svc("main", 1, "main-v1"), svc("second", 2, "second-v2", subset="preview")
    plan = plan_swap(SWAP, STABLE_V2, STANDIN_V2, PROMOTED, main, other, Progress())
    assert plan is not None
    # same deploy hashes: only labels change, so Swarm restarts no task
    assert plan.actions == [Ensure("main", SWAP.main), Ensure("second", SWAP.second)]
    assert plan.subsets == {"main": "previous", "second": "stable"}
    assert plan.weights == PROMOTED and plan.progress.swapped


def test_swap_once_in_place_does_nothing_but_keep_the_subsets() -> None:
    main = svc("main", 1, "main-v1", subset="previous")
    other = svc("second", 2, "second-v2", subset="stable")
    plan = plan_swap(SWAP, STABLE_V2, STANDIN_V2, PROMOTED, main, other,
                     Progress(swapped=True))
    assert plan is not None and plan.actions == []
    assert plan.subsets == {"main": "previous", "second": "stable"}


def test_promotion_before_the_preview_is_ready_falls_back_to_the_handoff() -> None:
    main = svc("main", 1, "main-v1")
    other = svc("second", 2, "second-v2", subset="preview", ready=False)
    assert plan_swap(SWAP, STABLE_V2, STANDIN_V2, PROMOTED, main, other, Progress()) is None
    handoff = plan_service(STABLE_V2, Want(1, 2, "previous", "second-v1"), PROMOTED,
                           STANDIN_V2, main, other, Progress())
    assert handoff.progress.phase == "standin" and handoff.weights["stable"] == 100


def test_no_swap_wanted_and_none_in_place_leaves_the_ordinary_plan() -> None:
    main, other = svc("main", 1, "main-v1"), svc("second", 2, "second-v2", subset="preview")
    assert plan_swap(None, STABLE_V2, STANDIN_V2, {"stable": 100}, main, other,
                     Progress()) is None


def test_finished_rollout_hands_the_new_release_back_to_the_main_service() -> None:
    main = svc("main", 1, "main-v1", subset="previous")
    other = svc("second", 2, "second-v2", subset="stable")
    plan = plan_swap(None, STABLE_V2, STANDIN_V2, {"stable": 100}, main, other,
                     Progress(swapped=True))
    assert plan is not None
    assert plan.actions == [Ensure("second", STANDIN_V2)]  # a relabel: same deploy hash
    assert plan.weights == {"stable": 0, "canary": 100}
    assert plan.subsets == {"main": "stable", "second": "canary"}
    assert plan.progress == Progress("shift", "main-v2")
    # the ordinary handoff takes over: drain the main service, then update it to v2
    relabelled = svc("second", 2, "second-v2", subset="canary")
    drain = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, relabelled,
                         plan.progress)
    assert drain.weights == {"stable": 0, "canary": 100} and drain.progress.phase == "drain"


def test_aborted_rollout_makes_the_main_service_stable_again_at_once() -> None:
    main = svc("main", 1, "main-v1", subset="previous")
    other = svc("second", 2, "second-v2", subset="stable")
    stable_v1 = Want(1, 2, "stable", "main-v1")
    plan = plan_swap(None, stable_v1, Want(1, 2, "canary", "second-v1"), {"stable": 100},
                     main, other, Progress(swapped=True))
    assert plan is not None
    assert plan.actions == [Ensure("main", Want(1, 2, "stable", "main-v1")),
                            Ensure("second", Want(2, 2, "previous", "second-v2"))]
    assert plan.weights == {"stable": 100, "previous": 0}
    assert plan.subsets == {"main": "stable", "second": "previous"}
    assert not plan.progress.swapped
    # next tick the ordinary plan retires the second service, never touching stable
    relabelled = svc("second", 2, "second-v2", subset="previous")
    main_stable = svc("main", 1, "main-v1")
    retire = plan_service(stable_v1, None, {"stable": 100}, Want(1, 2, "canary", "second-v1"),
                          main_stable, relabelled, plan.progress)
    assert retire.weights == {"stable": 100, "previous": 0} and retire.progress.retiring
