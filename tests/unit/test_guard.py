"""The removal guard's arithmetic, and an emptied file marked as such."""

from __future__ import annotations

import pytest

from ipvsmgr.config import load_text
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile import guard

A, B = ServiceKey(2, 6, "198.18.0.1", 80), ServiceKey(2, 6, "198.18.0.2", 80)


def reals(*hosts: str) -> list[DestKey]:
    return [DestKey(2, h, 8080) for h in hosts]


OLD = {A: reals("198.18.1.1", "198.18.1.2"), B: reals("198.18.1.3", "198.18.1.4")}


def config(reals_per_vs: int, services: int = 2, extra: str = "") -> str:
    text = extra + "virtual_servers:\n" + ("  []\n" if services == 0 else "")
    for n in range(services):
        text += f"  - name: web{n}\n    address: 198.18.0.{n + 1}\n    port: 80\n    reals:\n"
        text += "".join(f"      - {{address: 198.18.1.{i + 1}, port: 8080}}\n" for i in range(reals_per_vs))
    return text


def test_counts() -> None:
    r = guard.removal(OLD, {A: reals("198.18.1.1")}, {"198.18.0.100"}, {"198.18.0.100"})
    assert (r.services, r.services_removed, r.reals, r.reals_removed, r.vips, r.vips_removed) == (
        2,
        1,
        4,
        3,
        1,
        0,
    )


@pytest.mark.parametrize(
    ("new", "old_vips", "new_vips", "share", "words"),
    [
        ({}, (), (), 1.0, "every virtual server"),  # even with the share guard off
        (OLD, {"198.18.0.100"}, (), 0.5, "every VRRP VIP"),
        ({A: reals("198.18.1.1"), B: reals("198.18.1.3")}, (), (), 0.4, "50% of the owned reals"),
        (
            {A: reals("198.18.1.1")},
            (),
            (),
            0.5,
            "75% of the owned reals, more than ipvs.max_removed_reals (50%)",
        ),
    ],
)
def test_refused(new: guard.Reals, old_vips: set[str], new_vips: set[str], share: float, words: str) -> None:
    why = guard.refusal(guard.removal(OLD, new, old_vips, new_vips), share)
    assert why is not None and words in why and "--force" in why


@pytest.mark.parametrize(
    ("new", "share"),
    [
        (OLD, 0.0),  # nothing removed
        ({A: reals("198.18.1.1"), B: reals("198.18.1.3")}, 0.5),  # exactly the share
        ({A: reals("198.18.1.1", "198.18.1.2")}, 0.5),  # one service of two, half the reals
        ({A: reals("198.18.1.9")}, 1.0),  # most reals, share guard off
    ],
)
def test_allowed(new: guard.Reals, share: float) -> None:
    assert guard.refusal(guard.removal(OLD, new), share) is None


def test_nothing_owned_is_never_refused() -> None:
    assert guard.refusal(guard.removal({}, {}), 0.0) is None


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n", "---\n", "{}\n"])
def test_empty_files_are_marked(text: str) -> None:
    assert load_text(text, "t.yaml").empty


def test_explicitly_empty_lists_are_not_empty_files() -> None:
    cfg = load_text(config(0, services=0), "t.yaml")
    assert not cfg.empty and cfg.virtual_servers == ()


def test_share_from_the_file() -> None:
    assert load_text(config(1), "t.yaml").max_removed_reals == 0.5
    cfg = load_text(config(1, extra="ipvs: {max_removed_reals: 0.9}\n"), "t.yaml")
    assert cfg.max_removed_reals == 0.9
    old, new = load_text(config(4), "t.yaml"), cfg
    assert guard.refusal(guard.removal(guard.config_reals(old), guard.config_reals(new)), 0.5) is not None
    assert guard.refusal(guard.removal(guard.config_reals(old), guard.config_reals(new)), 0.9) is None
