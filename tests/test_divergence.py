"""The divergence check of the monitor (and of `kvclient status`), without a broker."""

from __future__ import annotations

from kvwire.messages import Heartbeat
from monitor.divergence import DivergenceCheck


def beat(i: int, position: int, digest: str, mode: str = "live") -> Heartbeat:
    return Heartbeat.model_validate(
        {"idServ": i, "modo": mode, "posicao": position, "resumo": digest}
    )


def test_same_position_same_digest_is_fine() -> None:
    check = DivergenceCheck()
    assert check.observe(beat(0, 10, "aa")) == []
    assert check.observe(beat(1, 10, "aa")) == []
    assert check.observe(beat(1, 11, "bb")) == []


def test_same_position_different_digest_is_reported_once() -> None:
    check = DivergenceCheck()
    check.observe(beat(0, 10, "aa"))
    found = check.observe(beat(1, 10, "ab"))
    assert [(d.position, d.digests) for d in found] == [(10, {0: "aa", 1: "ab"})]
    assert check.observe(beat(2, 10, "ac")) == []


def test_checkpoints_are_compared_even_when_positions_never_meet() -> None:
    check = DivergenceCheck()
    first = Heartbeat.model_validate(
        {"idServ": 0, "posicao": 1500, "resumo": "x", "marco": 1000, "resumomarco": "m1"}
    )
    second = Heartbeat.model_validate(
        {"idServ": 1, "posicao": 1700, "resumo": "y", "marco": 1000, "resumomarco": "m2"}
    )
    check.observe(first)
    assert [d.position for d in check.observe(second)] == [1000]


def test_joining_replicas_are_not_compared() -> None:
    check = DivergenceCheck()
    check.observe(beat(0, 10, "aa"))
    assert check.observe(beat(1, 10, "zz", mode="joining")) == []
