"""The same pixels as the stored reference: fixed-seed tiny runs (tests/pixel_runs.py) of every path a step can take
(plain, coarse-to-fine, tiled, averaging, LBFGS, several pairs and blended styles, the command line). A refactor
must not move them; a deliberate change of the maths regenerates the reference with `python tests/pixel_runs.py`.

The reference of this CPU's instruction set is matched to 1e-6. On an instruction set without one, another's is
matched to 1e-2 (the last bits differ and five steps carry them to 7e-3): a coarse check until its own is made."""

from __future__ import annotations

import pytest
import torch
from pixel_runs import REFERENCES, reference_path, run_all

SAME_CPU, OTHER_CPU = 1e-6, 1e-2
OWN = reference_path()
REFERENCE, TOLERANCE = (OWN, SAME_CPU) if OWN.exists() else (sorted(REFERENCES.glob("pixels-*.pt"))[0], OTHER_CPU)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("pixels"))


@pytest.mark.parametrize("name", list(torch.load(REFERENCE, weights_only=True)))
def test_the_pixels_are_the_stored_references(pixels, name):
    reference = torch.load(REFERENCE, weights_only=True)[name]
    assert set(pixels[name]) == set(reference)
    for key, expected in reference.items():
        got = pixels[name][key]
        assert type(got) is type(expected) and len(got) == len(expected), key
        for a, b in zip(got, expected) if isinstance(expected, list) else [(got, expected)]:
            assert a.shape == b.shape, (key, a.shape, b.shape)
            assert (a - b).abs().max().item() <= TOLERANCE, f"{name}/{key}: max |difference| {(a - b).abs().max()}"
