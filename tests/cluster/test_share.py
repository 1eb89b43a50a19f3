"""Events partitions shared by measured traffic; the leader asks for a rebalance only when it clearly pays."""

from __future__ import annotations

import pytest

from alarmd.cluster.share import EventRatios, PartitionRates, TrafficShare, assign, deviation, fill, heard
from alarmd.metrics import Metrics
from alarmd.testing import FakeClock

PARTITIONS = list(range(12))
#: messages/s by partition: three hot keys (as a flapping device's traps), the rest light
SKEWED = {0: 900.0, 1: 40.0, 2: 60.0, 3: 700.0, 4: 50.0, 5: 30.0, 6: 80.0, 7: 20.0, 8: 500.0, 9: 70.0}
SKEWED[10] = 40.0
ROUND_ROBIN = {"a": {0, 3, 6, 9}, "b": {1, 4, 7, 10}, "c": {2, 5, 8, 11}}


def measured(rates: dict[int, float], half_life: float = 10.0) -> PartitionRates:
    """Rates as read from two end-offset samples 10 s apart."""
    out = PartitionRates(half_life)
    out.observe(0.0, dict.fromkeys(PARTITIONS, 0))
    out.observe(10.0, {p: round(rates.get(p, 0.0) * 10) for p in PARTITIONS})
    return out


def leader(rates: dict[int, float], held: dict[str, set[int]]) -> tuple[TrafficShare, Metrics]:
    """The group's leader after it assigned ``held``'s members with no rates yet, then measured ``rates``."""
    metrics = Metrics()
    share = TrafficShare(60.0, metrics, FakeClock())
    share.balance(PARTITIONS, held)  # a cold start: no rates, an even count
    share.assigned({0})
    share.rates = measured(rates)
    return share, metrics


def requests(metrics: Metrics) -> float:
    return metrics.rebalance_requests.labels("events")._value.get()


def test_rates_are_the_growth_of_end_offsets_smoothed_over_the_half_life() -> None:
    rates = PartitionRates(half_life=10.0)
    rates.observe(0.0, {0: 0, 1: 0})
    assert rates.rates() == {}, "one reading is no rate"
    rates.observe(10.0, {0: 1000, 1: 100})
    assert rates.rates() == {0: 100.0, 1: 10.0}
    rates.observe(20.0, {0: 1000, 1: 1100})  # one half-life later: half old, half new
    assert rates.rates() == pytest.approx({0: 50.0, 1: 55.0})


def test_without_traffic_every_partition_weighs_the_same() -> None:
    assert PartitionRates(10.0).weights(PARTITIONS) == dict.fromkeys(PARTITIONS, 1)
    share = TrafficShare(60.0, Metrics(), FakeClock())
    shares = share.balance(PARTITIONS, {"a": set(), "b": set(), "c": set()})
    assert sorted(len(s) for s in shares.values()) == [4, 4, 4]


def test_a_hot_partition_weighs_its_share_of_the_traffic() -> None:
    weights = measured(SKEWED).weights(PARTITIONS)
    assert weights[0] > 20 * weights[7]
    assert weights[11] == 1, "an idle partition still weighs a little, so it is assigned too"


def test_balance_by_traffic_shares_it_evenly_where_round_robin_does_not() -> None:
    rates = measured(SKEWED)
    assert rates.deviation(ROUND_ROBIN) > 0.3
    share = TrafficShare(60.0, Metrics(), FakeClock())
    share.rates = rates
    shares = share.balance(PARTITIONS, ROUND_ROBIN)
    assert rates.deviation(shares) < 0.1
    assert set().union(*shares.values()) == set(PARTITIONS)


def test_the_leader_asks_once_for_a_rebalance_that_clearly_pays() -> None:
    share, metrics = leader(SKEWED, {"a": set(), "b": set(), "c": set()})
    asked: list[bool] = []
    decision = share.judge()
    assert decision is not None
    before, after = decision
    assert before > 0.2 and after < 0.15
    assert share.request_if_better(lambda: asked.append(True))
    assert asked == [True] and requests(metrics) == 1
    assert not share.request_if_better(lambda: asked.append(True)), "one request per assignment"
    assert asked == [True] and requests(metrics) == 1


def test_after_the_traffic_assignment_no_further_rebalance_is_asked() -> None:
    share, metrics = leader(SKEWED, {"a": set(), "b": set(), "c": set()})
    share.balance(PARTITIONS, ROUND_ROBIN)  # the rebalance, now with rates
    share.assigned({0})
    assert share.judge() is None
    assert not share.request_if_better(lambda: None) and requests(metrics) == 0


def test_a_follower_never_asks() -> None:
    share, _ = leader(SKEWED, {"a": set(), "b": set(), "c": set()})
    share.assigned({1})  # a later assignment that another member made
    assert not share.leading and share.judge() is None


def test_a_small_or_unhelpful_improvement_is_not_worth_a_rebalance() -> None:
    nearly_even = dict.fromkeys(PARTITIONS, 100.0) | {0: 160.0}  # 'a' carries 15% more than even
    share, _ = leader(nearly_even, {"a": set(), "b": set(), "c": set()})
    assert share.judge() is None
    one_giant = dict.fromkeys(PARTITIONS, 1.0) | {0: 1000.0}  # no assignment can share one key
    share, _ = leader(one_giant, {"a": set(), "b": set(), "c": set()})
    assert share.judge() is None


def test_a_trickle_of_traffic_is_noise_and_asks_for_nothing() -> None:
    trickle = {p: rate / 1000 for p, rate in SKEWED.items()}  # as polls alone at night: about 2 messages/s
    share, _ = leader(trickle, {"a": set(), "b": set(), "c": set()})
    assert measured(trickle).deviation(ROUND_ROBIN) > 0.3
    assert share.judge() is None


def test_deviation_is_the_largest_distance_from_an_even_share() -> None:
    assert deviation({"a": 120.0, "b": 90.0, "c": 90.0}) == pytest.approx(0.2)
    assert deviation({"a": 1.0}) == 0.0
    assert deviation({"a": 0.0, "b": 0.0}) == 0.0


def test_an_even_assignment_stays_as_it_is() -> None:
    assert assign(dict.fromkeys(PARTITIONS, 5), ROUND_ROBIN) == ROUND_ROBIN


def test_a_fresh_share_goes_to_the_members_that_held_most_of_it() -> None:
    weights = measured(SKEWED).weights(PARTITIONS)
    shares = assign(weights, ROUND_ROBIN)
    assert 0 in shares["a"], "the hottest partition stays where it was"
    assert 8 in shares["c"]


# Events, not messages: a poll's message carries one sample per interface, a trap's one event.
POLLS, TRAPS = 50.0, 1.0  # events per message
#: messages/s: 'a' holds four partitions of polls, 'b' four of traps with twice the messages
BY_KIND = {"a": {0, 1, 2, 3}, "b": {4, 5, 6, 7}}
MESSAGES = {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 20.0, 5: 20.0, 6: 20.0, 7: 20.0}
TOLD = {"a": dict.fromkeys(BY_KIND["a"], POLLS), "b": dict.fromkeys(BY_KIND["b"], TRAPS)}
EIGHT = list(range(8))


def consumed(ratios: EventRatios, partition: int, events: list[int]) -> None:
    for count in events:
        ratios.consumed(partition, count)


def test_a_partitions_ratio_is_its_events_per_message_smoothed() -> None:
    ratios = EventRatios(half_life=10.0)
    consumed(ratios, 0, [50, 48, 52])  # polls
    consumed(ratios, 1, [1] * 30)  # traps
    consumed(ratios, 2, [1, 1, 1, 49])  # a mix: three traps and a poll
    ratios.consumed(None, 50)  # not a partition's message: nothing
    assert ratios.ratios() == {}, "nothing counts until observed"
    ratios.observe(0.0)
    assert ratios.ratios() == {0: 50.0, 1: 1.0, 2: 13.0}
    consumed(ratios, 1, [50] * 30)  # the traps' partition now carries polls, one half-life later
    ratios.observe(10.0)
    assert ratios.ratios()[1] == pytest.approx((15 + 1500) / (15 + 30))
    ratios.observe(10_000.0)
    assert ratios.ratios() == {}, "a partition long unconsumed is forgotten"


def test_partitions_of_polls_outweigh_partitions_of_traps_with_more_messages() -> None:
    rates = measured(MESSAGES)
    ratios = heard(TOLD, BY_KIND)
    assert rates.deviation(BY_KIND) == pytest.approx(1 / 3), "by messages 'b' carries twice what 'a' does"
    by_events = rates.deviation(BY_KIND, ratios)
    assert by_events == pytest.approx(2000 / 1040 - 1), "by events 'a' carries 2,000/s against 80 of 'b'"
    weights = rates.weights(EIGHT, ratios)
    assert weights[0] > 20 * weights[4]
    share = TrafficShare(60.0, Metrics(), FakeClock())
    share.rates = rates
    shares = share.balance(EIGHT, BY_KIND, TOLD)
    assert [len(shares[m] & BY_KIND["a"]) for m in ("a", "b")] == [2, 2], "the polls are shared"
    assert rates.deviation(shares, ratios) < 0.05


def test_a_partition_nobody_measured_weighs_the_mean_ratio_or_one_event_per_message() -> None:
    assert fill({0: 50.0, 1: 10.0}, [0, 1, 2]) == {0: 50.0, 1: 10.0, 2: 30.0}
    assert fill({}, [0, 1]) == {0: 1.0, 1: 1.0}
    rates = measured(MESSAGES)
    assert rates.events([0, 4], {}) == {0: 10.0, 4: 20.0}, "no ratios: messages"
    assert rates.events([0, 4], {0: 50.0}) == {0: 500.0, 4: 1000.0}, "4 takes the mean of the known"


def test_a_partitions_holder_has_the_last_word_on_its_ratio() -> None:
    told = {"a": {0: 50.0, 1: 7.0}, "b": {1: 2.0, 2: 3.0}, "c": {2: 9.0}}  # 'b' and 'c' held 1 and 2 before
    assert heard(told, {"a": {0, 1}, "b": set(), "c": set()}) == {0: 50.0, 1: 7.0, 2: 3.0}
    assert heard(told, {"a": {0}, "b": {1}, "c": {2}}) == {0: 50.0, 1: 2.0, 2: 9.0}


def test_the_leader_weighs_its_check_by_the_ratios_told_at_the_last_assignment() -> None:
    share = TrafficShare(60.0, (metrics := Metrics()), FakeClock())
    share.balance(EIGHT, {"a": set(), "b": set()})  # a cold start: no rates, no ratios
    share.balance(EIGHT, BY_KIND, TOLD)  # a rebalance (say a member joined), no rates yet: 4 and 4
    share.assigned(BY_KIND["a"])
    share.rates = measured(MESSAGES)
    decision = share.judge()
    assert decision is not None, "even by messages, uneven by events"
    assert decision[0] > 0.9 and decision[1] < 0.05
    assert share.request_if_better(lambda: None) and requests(metrics) == 1


def test_unheard_ratios_ask_for_one_probing_rebalance_which_assigns_by_them() -> None:
    share = TrafficShare(60.0, (metrics := Metrics()), FakeClock())
    cold = share.balance(EIGHT, {"a": set(), "b": set()}, {"a": {}, "b": {}})  # nothing consumed yet
    share.assigned(cold["a"])
    share.rates = measured(dict.fromkeys(EIGHT, 15.0))  # even by messages
    assert share.judge() is None, "by messages nothing pays"
    assert share.unheard() == EIGHT
    asked: list[bool] = []
    assert share.request_if_better(lambda: asked.append(True)) and asked == [True]
    assert requests(metrics) == 1
    told = {m: {p: POLLS if p < 4 else TRAPS for p in cold[m]} for m in cold}
    probed = share.balance(EIGHT, cold, told)  # the probe's rebalance hears them
    share.assigned(probed["a"])
    assert share.rates.deviation(probed, heard(told, cold)) < 0.05, "the probe itself evens the events out"
    assert share.judge() is None and share.unheard() == []
    assert not share.request_if_better(lambda: asked.append(True)) and requests(metrics) == 1


def test_a_probe_is_asked_once_and_never_for_members_of_an_earlier_version() -> None:
    share = TrafficShare(60.0, Metrics(), FakeClock())
    share.balance(EIGHT, BY_KIND, {"a": {}})  # 'b' speaks the list form: it never tells ratios
    share.assigned(BY_KIND["a"])
    share.rates = measured(dict.fromkeys(EIGHT, 15.0))
    assert share.unheard() == [0, 1, 2, 3]
    assert share.request_if_better(lambda: None)
    again = share.balance(EIGHT, BY_KIND, {"a": {}})  # 'a' still consumed nothing of them (lagging)
    share.assigned(again["a"])
    assert share.unheard() == [], "no probe after a probe"
    assert not share.request_if_better(lambda: None)


def test_a_dead_members_partitions_keep_the_ratio_last_heard_and_ask_for_no_probe() -> None:
    share = TrafficShare(60.0, Metrics(), FakeClock())
    share.balance(EIGHT, BY_KIND, TOLD)
    share.rates = measured(MESSAGES)
    after = share.balance(EIGHT, {"b": BY_KIND["b"], "c": set()}, {"b": TOLD["b"], "c": {}})  # 'a' was killed
    share.assigned(after["b"])
    assert share.known() == heard(TOLD, BY_KIND), "the polls' partitions still weigh 50 events a message"
    assert share.unheard() == []
    assert share.rates.deviation(after, share.known()) < 0.05, "the polls are shared out by their events"
