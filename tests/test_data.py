"""Tests for nst_pl.data's pair naming: safe, unique (also on case-insensitive file systems) and stable names."""

from __future__ import annotations

from pathlib import Path

import pytest

from nst_pl.data import pair_names


def test_pair_names_sanitised_dedup_stable():
    contents = [Path(p) for p in ("x/a.jpg", "y/a.png", "a;b $(x) & `y`.jpg", "Ünïcødé 画.png", "A.jpg")]
    styles = [[Path("s/starry night.jpg")]] * 2 + [[Path("m.jpg"), Path("n/o.png")]] * 2 + [[Path("starry_night")]]
    names = pair_names(contents, styles)
    assert names == [
        "a__starry_night",
        "a__starry_night-2",
        "a_b_x_y__m+o",
        "Ünïcødé_画__m+o",
        "A__starry_night-3",  # case-insensitive file systems would merge it with the first
    ]
    assert pair_names(contents, styles) == names  # stable
    assert len({n.casefold() for n in names}) == len(names)
    assert all("/" not in n and " " not in n and "$" not in n for n in names)


def test_pair_names_suffix_never_steals_a_later_name():
    names = pair_names([Path("a.jpg")] * 3, [[Path("s-2.jpg")], [Path("s.jpg")], [Path("s.jpg")]])
    assert names == ["a__s-2", "a__s", "a__s-3"]
    bases = pair_names([Path("a")] * 3 + [Path("b")], [[Path("s")]] * 3 + [[Path("s")]])
    assert bases == ["a__s", "a__s-2", "a__s-3", "b__s"]
    tricky = pair_names([Path("a"), Path("a"), Path("a")], [[Path("s")], [Path("s")], [Path("s-2")]])
    assert tricky == ["a__s", "a__s-3", "a__s-2"]
    with pytest.raises(ValueError):
        pair_names([Path("a")], [])
