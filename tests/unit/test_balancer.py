from gateway.call import Target
from gateway.routing.balancer import RoundRobin


def test_round_robin_rotates_over_targets() -> None:
    a, b, c = Target("a", "m"), Target("b", "m"), Target("c", "m")
    rr = RoundRobin({"chat": (a, b, c), "one": (a,)})
    firsts = [rr.targets("chat")[0] for _ in range(6)]
    assert firsts == [a, b, c, a, b, c]
    assert rr.targets("chat") == (a, b, c)
    assert rr.targets("one") == (a,)
    assert "chat" in rr and "nope" not in rr
