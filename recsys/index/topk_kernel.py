"""The exact path's selection in compiled code: one pass over a tile of scores per row,
against the row's running top-k.

Imported only when an exact search runs (numba's import and the kernel's first compile
are paid by the runs that use it). Compiled kernels are cached on disk beside this file,
or in the user's cache folder where this folder is read-only; where neither can be
written the kernel is compiled in memory for each process.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _compile(function):
    try:
        return njit(nogil=True, cache=True)(function)
    except RuntimeError:  # no writable cache location: compile in memory only
        return njit(nogil=True)(function)


# Scores tested at once against the threshold: a whole group in vector instructions (a
# fixed count: the compiler unrolls and vectorizes the test), then the rare group holding
# a score above it scanned one score at a time.
GROUP = 128


def _select_tile(block, first, exclude_ptr, exclude_idx, cursor, best_ids, best):  # pragma: no cover
    """Merge a tile of scores (rows, width) of columns first .. first + width - 1 into
    the running top-k of each row (best_ids, best: best first, -1 / -inf where empty).

    Excluded items of the tile are set to -inf first: row r's excluded columns are
    exclude_idx[cursor[r]:exclude_ptr[r + 1]] in increasing order, from the tile on (the
    cursor moves past the tile's). Then every score is tested against the row's running
    k-th best: only a score strictly above it enters, inserted after the equal scores
    already kept (they have lower columns: the tiles come in column order), so among equal
    scores the lower column comes first. -inf never enters.
    """
    rows, width = block.shape
    k = best.shape[1]
    last = first + width
    whole = width - width % GROUP
    for r in range(rows):
        row = block[r]
        p = cursor[r]
        end = exclude_ptr[r + 1]
        while p < end and exclude_idx[p] < last:
            row[exclude_idx[p] - first] = -np.inf
            p += 1
        cursor[r] = p
        row_best = best[r]
        row_ids = best_ids[r]
        threshold = row_best[k - 1]
        for g in range(0, width, GROUP):
            stop = width
            if g < whole:
                stop = g + GROUP
                above = False
                for j in range(g, g + GROUP):
                    above |= row[j] > threshold
                if not above:
                    continue
            for j in range(g, stop):
                s = row[j]
                if s > threshold:
                    i = k - 1
                    while i > 0 and row_best[i - 1] < s:
                        row_best[i] = row_best[i - 1]
                        row_ids[i] = row_ids[i - 1]
                        i -= 1
                    row_best[i] = s
                    row_ids[i] = first + j
                    threshold = row_best[k - 1]


select_tile = _compile(_select_tile)


def _select_tile_mapped(block, first, item_ids, excluded, cursor, ends, best_ids, best):  # pragma: no cover
    """:func:`_select_tile` for tiles whose columns are not in id order: column c of the
    search's item order is item ``item_ids[c]``, and the tile holds columns first ..
    first + width - 1 of that order (exact search in decreasing item norm, which lets a
    search stop early). Row r's excluded columns, in this order, are excluded[cursor[r]
    : ends[r]], increasing, from the tile on (the cursor moves past the tile's).

    Among equal scores the lower item id comes first, wherever its column is: a score
    equal to the row's k-th best enters when its id is lower than the k-th's, and is
    inserted after the equal scores of lower ids. The results are those of
    :func:`_select_tile` over the items in id order. -inf never enters.
    """
    rows, width = block.shape
    k = best.shape[1]
    last = first + width
    whole = width - width % GROUP
    for r in range(rows):
        row = block[r]
        p = cursor[r]
        end = ends[r]
        while p < end and excluded[p] < last:
            row[excluded[p] - first] = -np.inf
            p += 1
        cursor[r] = p
        row_best = best[r]
        row_ids = best_ids[r]
        threshold = row_best[k - 1]
        for g in range(0, width, GROUP):
            stop = width
            if g < whole:
                stop = g + GROUP
                reach = False
                for j in range(g, g + GROUP):
                    reach |= row[j] >= threshold
                if not reach:
                    continue
            for j in range(g, stop):
                s = row[j]
                if s < threshold or s == -np.inf or s != s:
                    continue
                item = item_ids[first + j]
                if s == threshold and item > row_ids[k - 1] >= 0:
                    continue
                i = k - 1
                while i > 0 and (row_best[i - 1] < s or (row_best[i - 1] == s and row_ids[i - 1] > item)):
                    row_best[i] = row_best[i - 1]
                    row_ids[i] = row_ids[i - 1]
                    i -= 1
                row_best[i] = s
                row_ids[i] = item
                threshold = row_best[k - 1]


select_tile_mapped = _compile(_select_tile_mapped)
