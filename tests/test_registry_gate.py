"""The champion gate: promote only a candidate that beats the champion on the same stars."""

from __future__ import annotations

import pytest

from rrlfeh.serving.registry import gate, training_digest


def tags(rrab: float | None, rrc: float | None, digest: str = "d") -> dict[str, str]:
    out: dict[str, str] = {}
    kinds = []
    for kind, rmse in (("RRab", rrab), ("RRc", rrc)):
        if rmse is not None:
            kinds.append(kind)
            out[f"{kind}.oof_rmse"] = f"{rmse:.6f}"
            out[f"{kind}.data_digest"] = f"{digest}-{kind}"
    out["types"] = ",".join(kinds)
    return out


def test_first_candidate_becomes_champion():
    d = gate(tags(0.3, 0.4), None, None)
    assert d.promote and "no champion" in d.reason


def test_better_on_one_type_and_equal_on_the_other_is_promoted():
    d = gate(tags(0.30, 0.40), tags(0.32, 0.40), "3")
    assert d.promote and "RRab 0.3000 < 0.3200" in d.reason and "v3" in d.reason
    assert d.compared["RRab"] == {"candidate_oof_rmse": 0.30, "champion_oof_rmse": 0.32,
                                  "same_stars": True}


def test_worse_on_any_type_is_not_promoted():
    d = gate(tags(0.30, 0.45), tags(0.32, 0.40), "3")
    assert not d.promote and "RRc 0.4500 > 0.4000" in d.reason


def test_equal_is_not_promoted():
    assert not gate(tags(0.3, 0.4), tags(0.3, 0.4), "1").promote


def test_a_tie_goes_to_the_errors_that_fit_held_out_stars_better():
    """Equal out-of-fold RMSE (the same values, e.g. a new feh_std calibration): promoted only
    if no type's held-out feh_std NLL is worse and one is lower; unknown on either side keeps
    the champion."""
    def with_nll(t: dict[str, str], rrab: float, rrc: float) -> dict[str, str]:
        return {**t, "RRab.feh_std_held_out_nll": f"{rrab:.6f}",
                "RRc.feh_std_held_out_nll": f"{rrc:.6f}"}

    d = gate(with_nll(tags(0.3, 0.4), -1.60, -1.20), with_nll(tags(0.3, 0.4), -1.50, -1.20), "4")
    assert d.promote and "RRab NLL -1.6000 < -1.5000" in d.reason and "v4" in d.reason
    assert not gate(with_nll(tags(0.3, 0.4), -1.60, -1.10), with_nll(tags(0.3, 0.4), -1.50, -1.20),
                    "4").promote  # worse on RRc
    assert not gate(with_nll(tags(0.3, 0.4), -1.60, -1.20), tags(0.3, 0.4), "4").promote
    # an RMSE that is worse is not rescued by the errors
    assert not gate(with_nll(tags(0.31, 0.4), -9.0, -9.0), with_nll(tags(0.3, 0.4), -1.5, -1.2),
                    "4").promote


def test_other_stars_are_not_compared():
    d = gate(tags(0.1, 0.1, digest="new"), tags(0.3, 0.4), "2")
    assert not d.promote and "other RRab, RRc stars" in d.reason


def test_losing_a_type_is_not_promoted_and_a_new_type_counts():
    assert not gate(tags(0.1, None), tags(0.3, 0.4), "2").promote
    d = gate(tags(0.3, 0.4), tags(0.3, None), "2")
    assert d.promote and "RRc (new type)" in d.reason


def test_policy_overrides():
    assert gate(tags(0.9, 0.9), tags(0.3, 0.4), "2", policy="always").promote
    assert not gate(tags(0.1, 0.1), None, None, policy="never").promote
    with pytest.raises(ValueError, match="register.promote"):
        gate(tags(0.1, 0.1), None, None, policy="sometimes")


def test_training_digest_ignores_order_but_not_labels():
    a = training_digest([3, 1, 2], [0.1, -1.0, -2.0])
    assert a == training_digest([1, 2, 3], [-1.0, -2.0, 0.1])
    assert a != training_digest([1, 2, 3], [-1.0, -2.0, 0.2])
    assert a != training_digest([1, 2, 4], [-1.0, -2.0, 0.1])


def test_a_candidate_worse_than_the_classical_relation_is_never_promoted():
    cand = {**tags(0.20, 0.30), "RRab.relation_oof_rmse": "0.150000",
            "RRc.relation_oof_rmse": "0.400000"}
    for champion, policy in ((None, "auto"), (tags(0.5, 0.5), "auto"),
                             (tags(0.5, 0.5), "always")):
        d = gate(cand, champion, "1" if champion else None, policy)
        assert not d.promote
        assert "worse than the classical relation" in d.reason and "RRab 0.2000" in d.reason
    ok = {**cand, "RRab.relation_oof_rmse": "0.200000"}  # no worse: promoted
    assert gate(ok, None, None).promote
