"""The model's geometry both ways lives in ``pneumo.data.preprocess``: resize, its inverse, the valid
region and the display size. Checked on a real original film and on random shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pneumo.data import PreprocessSpec, read_image
from pneumo.data.preprocess import fit_long_side, placement, resize_image, undo_resize, valid_region


@pytest.mark.parametrize("rule", ["stretch", "letterbox", "center_crop"])
def test_undo_resize_puts_the_grid_back_on_the_film(val_originals, rule):
    film = read_image(val_originals[0].path)[0]
    spec = PreprocessSpec(size=224, resize=rule)
    grid = resize_image(film, 224, rule)
    back = undo_resize(grid, film.shape, spec)
    assert back.shape == film.shape
    h, w = film.shape
    rows, cols = slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4)  # inside the crop for center_crop
    err = np.abs(back[rows, cols] - film[rows, cols]).mean()
    assert err < 0.03, err  # what is left is the detail a 224-px grid cannot hold
    if rule == "center_crop":  # the margins the model never saw come back empty
        nh, nw, top, left = placement(film.shape, 224, rule)
        assert w > h and back[:, : max(1, left * w // nw - 2)].max() == 0.0


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 4000), w=st.integers(1, 4000), side=st.integers(8, 2048))
def test_fit_long_side_keeps_the_aspect_and_never_enlarges(h, w, side):
    nh, nw = fit_long_side((h, w), side)
    assert max(nh, nw) <= max(side, 1) or (nh, nw) == (h, w)
    assert nh <= h and nw <= w and nh >= 1 and nw >= 1
    if max(h, w) <= side:
        assert (nh, nw) == (h, w)
    elif min(nh, nw) > 20:
        assert abs(nh / nw - h / w) / (h / w) < 0.1


@settings(max_examples=60, deadline=None)
@given(h=st.integers(2, 3000), w=st.integers(2, 3000), rule=st.sampled_from(["stretch", "letterbox", "center_crop"]))
def test_valid_region_is_where_the_film_lands(h, w, rule):
    spec = PreprocessSpec(size=64, resize=rule)
    grid = resize_image(np.ones((h, w), np.float32), 64, rule)
    rows, cols = valid_region((h, w), spec)
    assert grid[rows, cols].min() > 0.99  # all film inside
    outside = grid.copy()
    outside[rows, cols] = 0.0
    assert outside.max() == 0.0  # nothing but padding outside
