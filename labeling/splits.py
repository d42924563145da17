"""Deal scans into train / validation / test by a rule: a percentage per split, a seed, strata.

Pure (numpy and the standard library): the services give it ids and strata and store what it
returns; the preview and the apply call it with the same arguments, so they agree.

The rule
--------
Within each stratum (all scans in one stratum when there is none), the scans are put in a
random order drawn from the seed, then dealt one at a time to the split furthest behind its
share *of that stratum* (its percentage of the scans dealt so far, minus what it has); a tie
goes to the split furthest behind its share of *every* scan dealt so far, then to the first
split in :data:`SPLITS` order. So:

- each stratum gets each split's share to within one scan (exactly, when the shares are
  whole numbers: 20 scans at 60/20/20 give 12/4/4), and so does the whole set;
- the same scans, strata, percentages and seed always give the same splits (strata are taken
  in sorted order, scans in id order before the seeded shuffle);
- a split with 0 % gets nothing.

References
----------
.. [1] Balinski ML, Young HP. Fair Representation: Meeting the Ideal of One Man, One Vote.
   Yale University Press, 1982. (Quota methods: dealing seats to the party furthest behind
   its quota keeps every party within one seat of it.)
.. [2] scikit-learn's ``StratifiedShuffleSplit`` solves the same problem for two splits; this
   one takes three and keeps every stratum within one scan of its share.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np

SPLITS = ("train", "validation", "test")
MAX_SEED = 2**32 - 1


def check_percentages(percentages: Mapping[str, int]) -> dict[str, int]:
    """The percentage of each of :data:`SPLITS` (missing: 0), or ValueError naming the problem.

    >>> check_percentages({"train": 60, "validation": 20, "test": 20})
    {'train': 60, 'validation': 20, 'test': 20}
    >>> check_percentages({"train": 70, "test": 20})
    Traceback (most recent call last):
    ...
    ValueError: percentages: they add up to 90; they must add up to 100
    """
    unknown = set(percentages) - set(SPLITS)
    if unknown:
        raise ValueError(f"percentages: unknown split(s) {sorted(unknown)}; use {', '.join(SPLITS)}")
    out = {}
    for split in SPLITS:
        value = percentages.get(split, 0)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= 100:
            raise ValueError(f"percentages: {split} must be a whole number from 0 to 100, not {value!r}")
        out[split] = int(value)
    total = sum(out.values())
    if total != 100:
        raise ValueError(f"percentages: they add up to {total}; they must add up to 100")
    return out


def allocate(
    items: Iterable[tuple[int, Hashable]],
    *,
    percentages: Mapping[str, int],
    seed: int,
) -> dict[int, str]:
    """The split of every item, by the rule of the module docstring.

    Parameters
    ----------
    items : iterable of (id, stratum)
        Each scan's id (unique) and its stratum (any value; ``None`` for none). Give every
        scan the same stratum for an unstratified split.
    percentages : mapping of split name to a whole percentage
        Splits of :data:`SPLITS`; they add up to 100.
    seed : int
        0 to 2**32 - 1; the same seed gives the same result.

    Returns
    -------
    dict of int to str
        id -> split name.

    Examples
    --------
    >>> deal = allocate([(i, "A" if i <= 20 else "B") for i in range(1, 31)],
    ...                 percentages={"train": 60, "validation": 20, "test": 20}, seed=7)
    >>> from collections import Counter
    >>> sorted(Counter(s for i, s in deal.items() if i <= 20).items())
    [('test', 4), ('train', 12), ('validation', 4)]
    >>> sorted(Counter(s for i, s in deal.items() if i > 20).items())
    [('test', 2), ('train', 6), ('validation', 2)]
    >>> deal == allocate([(i, "A" if i <= 20 else "B") for i in range(1, 31)],
    ...                  percentages={"train": 60, "validation": 20, "test": 20}, seed=7)
    True
    """
    shares = check_percentages(percentages)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: a whole number from 0 to {MAX_SEED}, not {seed!r}")
    strata: dict[Hashable, list[int]] = {}
    seen: set[int] = set()
    for item_id, stratum in items:
        if item_id in seen:
            raise ValueError(f"items: id {item_id} appears twice")
        seen.add(item_id)
        strata.setdefault(stratum, []).append(int(item_id))
    rng = np.random.default_rng(int(seed))
    names = [s for s in SPLITS]
    overall = dict.fromkeys(names, 0)
    dealt_overall = 0
    out: dict[int, str] = {}
    for stratum in sorted(strata, key=lambda s: (s is not None, repr(s))):
        ids = sorted(strata[stratum])
        order = [ids[i] for i in rng.permutation(len(ids))]
        counts = dict.fromkeys(names, 0)
        for k, item_id in enumerate(order, start=1):
            dealt_overall += 1
            # Deficits in hundredths of a scan: integers, so ties are exact.
            best = max(
                names,
                key=lambda s: (
                    shares[s] > 0,
                    shares[s] * k - 100 * counts[s],
                    shares[s] * dealt_overall - 100 * overall[s],
                    -names.index(s),
                ),
            )
            counts[best] += 1
            overall[best] += 1
            out[item_id] = best
    return out
