"""The one LPS re-indexing helper every module uses (volume.lps_axes and its array forms)."""

from __future__ import annotations


def test_lps_reindexing_round_trips_on_all_48_axis_aligned_grids():
    """array_to_lps / array_from_lps are inverse for every signed axis permutation, and index steps
    in the re-indexed array move +L, +P, +S in world space (checked through index_to_world)."""
    import itertools

    import numpy as np

    from cervicontour.volume import Volume, array_from_lps, array_to_lps, lps_axes

    rng = np.random.default_rng(0)
    array = rng.integers(0, 100, size=(3, 4, 5))
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            direction = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs)):
                direction[row, col] = sign
            lps = array_to_lps(array, direction)
            np.testing.assert_array_equal(array_from_lps(lps, direction), array)
            order, flips = lps_axes(direction)
            volume = Volume(array, (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), direction)
            for w in range(3):  # one step along LPS axis w = one step along array axis order[w]
                start = np.zeros(3)
                if w in flips:
                    start[order[w]] = array.shape[order[w]] - 1
                step = start.copy()
                step[order[w]] += -1 if w in flips else 1
                move = volume.index_to_world(step) - volume.index_to_world(start)
                assert move[w] > 0 and np.count_nonzero(np.abs(move) > 1e-9) == 1
