"""Regions: box/mask conversions, COCO RLE round trip, ``<obj_k>`` validation, Set-of-Marks drawing."""

from __future__ import annotations

import numpy as np
import pytest

from rgpt4d_core.regions import (
    RegionError,
    box_to_pixels,
    draw_set_of_marks,
    find_object_refs,
    mark_colour,
    mask_to_box,
    obj_token,
    region_from_box,
    region_from_mask,
    rle_decode,
    rle_encode,
    validate_refs,
)


def test_obj_token_and_find_refs_keep_first_appearance_order() -> None:
    text = f"Is {obj_token(3)} closer than {obj_token(1)}? And {obj_token(3)} vs <obj_12>?"
    assert find_object_refs(text) == [3, 1, 12]
    assert find_object_refs("no regions here <obj_> <obj_x>") == []
    with pytest.raises(RegionError):
        obj_token(0)


def test_validate_refs_names_the_missing_id() -> None:
    regions = [region_from_box(1, (0.1, 0.1, 0.5, 0.5)), region_from_box(2, (0.5, 0.5, 0.9, 0.9))]
    validate_refs("How far is <obj_1> from <obj_2>?", regions)
    with pytest.raises(RegionError, match=r"<obj_3>") as info:
        validate_refs("How far is <obj_1> from <obj_3>?", regions)
    assert "<obj_1>" not in str(info.value).split("but")[0]


@pytest.mark.parametrize(
    "box", [(0.5, 0.1, 0.4, 0.9), (0.0, 0.0, 1.2, 0.5), (0.1, 0.1, 0.2), (float("nan"), 0, 1, 1)]
)
def test_invalid_boxes_are_rejected_naming_the_region(box: tuple[float, ...]) -> None:
    with pytest.raises(RegionError, match="region 4"):
        region_from_box(4, box)


def _random_mask(seed: int, h: int = 37, w: int = 53) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[y0 : y0 + rng.integers(3, h // 2), x0 : x0 + rng.integers(3, w // 2)] = True
    mask ^= rng.random((h, w)) < 0.05  # speckle so runs are irregular
    return mask


@pytest.mark.parametrize("seed", range(5))
def test_rle_round_trip(seed: int) -> None:
    mask = _random_mask(seed)
    rle = rle_encode(mask)
    assert rle["size"] == [37, 53] and sum(rle["counts"]) == 37 * 53
    np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_follows_coco_column_major_convention() -> None:
    mask = np.array([[0, 1], [0, 1], [1, 0]], bool)  # column-major flat: 0 0 1 1 1 0
    assert rle_encode(mask)["counts"] == [2, 3, 1]
    starts_set = np.array([[1, 0]], bool)
    assert rle_encode(starts_set)["counts"] == [0, 1, 1]
    with pytest.raises(RegionError, match="expected H\\*W"):
        rle_decode({"size": [2, 2], "counts": [1, 1]})


def test_rle_declaring_a_huge_mask_is_refused_before_allocating() -> None:
    import tracemalloc

    bomb = {"size": [100000, 100000], "counts": [10_000_000_000]}  # consistent counts: sums to H * W
    tracemalloc.start()
    try:
        with pytest.raises(RegionError, match="exceeds the limit"):
            rle_decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # nothing near the 10 GB the size declares
    with pytest.raises(RegionError, match="exceeds the limit of 100 pixels"):
        rle_decode(rle_encode(np.ones((11, 10), bool)), max_pixels=100)
    with pytest.raises(RegionError, match="positive"):
        rle_decode({"size": [0, 5], "counts": [0]})
    assert rle_decode(rle_encode(np.ones((10, 10), bool)), max_pixels=100).all()


def test_mask_to_box_is_tight_and_region_from_rle_matches() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:5, 4:9] = True
    assert mask_to_box(mask) == (4 / 20, 2 / 10, 9 / 20, 5 / 10)
    region = region_from_mask(2, rle_encode(mask), label="car")
    assert region.box == mask_to_box(mask) and region.mask is not None and region.mask.sum() == 15
    with pytest.raises(RegionError, match="region 5"):
        region_from_mask(5, np.zeros((4, 4), bool))


@pytest.mark.parametrize("size", [64, 224])
def test_set_of_marks_draws_outline_and_tag_where_the_box_is(size: int) -> None:
    frame = np.full((size, size, 3), 90, np.uint8)
    boxes = {1: (0.1, 0.15, 0.45, 0.5), 2: (0.55, 0.5, 0.95, 0.9)}
    regions = [region_from_box(k, b) for k, b in boxes.items()]
    out = draw_set_of_marks(frame, regions)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, 90)  # input untouched
    changed = np.any(out != frame, axis=-1)
    near_any = np.zeros_like(changed)
    for k, box in boxes.items():
        x0, y0, x1, y1 = box_to_pixels(box, size, size)
        # the outline: every side of the box carries the region's colour
        colour = np.array(mark_colour(k))
        for side in (out[y0, x0:x1], out[y1 - 1, x0:x1], out[y0:y1, x0], out[y0:y1, x1 - 1]):
            assert (np.abs(side.astype(int) - colour).sum(-1) < 10).mean() > 0.5, f"region {k} outline missing"
        # the label tag: a filled block of the region's colour at the box's top-left corner
        corner = out[y0 : y0 + 4, x0 : x0 + 4].reshape(-1, 3)
        assert (np.abs(corner.astype(int) - colour).sum(-1) < 10).sum() >= 8
        margin = max(2, size // 10)
        near_any[max(y0 - margin, 0) : y1 + margin, max(x0 - margin, 0) : x1 + margin] = True
    assert changed.any()
    assert not (changed & ~near_any).any(), "marks drawn far away from every box"
    # the box interior away from tag and outline keeps the original pixels
    x0, y0, x1, y1 = box_to_pixels(boxes[2], size, size)
    cy, cx = (y0 + y1) // 2 + 2, (x0 + x1) // 2 + 2
    assert not changed[cy, cx]


def test_set_of_marks_with_mask_outlines_the_mask_contour() -> None:
    frame = np.zeros((96, 96, 3), np.uint8)
    mask = np.zeros((96, 96), bool)
    mask[40:70, 30:60] = True
    out = draw_set_of_marks(frame, [region_from_mask(3, mask)])
    changed = np.any(out != 0, axis=-1)
    assert changed[69, 45] and changed[55, 59]  # bottom and right contour
    assert not changed[55, 45]  # interior
    assert not changed[:35].any() and not changed[:, :25].any()
    with pytest.raises(RegionError, match="region 3"):
        draw_set_of_marks(np.zeros((50, 50, 3), np.uint8), [region_from_mask(3, mask)])
