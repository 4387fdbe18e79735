"""Which prepared objects a run trains and validates on, over several prepared directories."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mar3d.data import layout


@dataclass
class Selection:
    train: dict[Path, list[str]]  # root -> ids to train on (held-out ids removed)
    val: dict[Path, list[str]]  # root -> ids to validate on

    @property
    def train_ids(self) -> list[str]:
        return [i for ids in self.train.values() for i in ids]


def select_objects(roots: list[str | Path], include: list[str], val_ids: list[str], exclude: list[str],
                   default_val: int = 4) -> Selection:
    """Training ids: ``include`` (or everything prepared) minus ``val_ids`` and ``exclude``.

    Validation ids: ``val_ids``, or when none are given the first ``default_val`` training ids (then the
    run validates on objects it trains on: a fit check, not a generalisation one).
    """
    roots = [Path(r) for r in roots]
    available = {root: layout.prepared_ids(root) for root in roots}  # one directory scan per root
    held_out = set(val_ids) | set(exclude)
    wanted = set(include)
    train = {}
    for root in roots:
        ids = [i for i in available[root] if (not wanted or i in wanted) and i not in held_out]
        if ids:
            train[root] = ids
    if not train:
        where = ", ".join(map(str, roots))
        raise ValueError(f"no objects to train on in {where}" + (" among data.include_ids" if include else ""))
    missing = wanted - {i for ids in available.values() for i in ids}
    if missing:
        raise ValueError(f"data.include_ids not prepared in {', '.join(map(str, roots))}: {sorted(missing)[:10]}")
    if val_ids:
        val = {root: [i for i in val_ids if i in set(available[root])] for root in roots}
        found = {i for ids in val.values() for i in ids}
        if found != set(val_ids):
            raise ValueError(f"validation ids not found in {', '.join(map(str, roots))}: "
                             f"{sorted(set(val_ids) - found)}")
    else:
        val, left = {}, default_val
        for root, ids in train.items():
            if left > 0:
                val[root] = ids[:left]
                left -= len(val[root])
    return Selection(train, {root: ids for root, ids in val.items() if ids})
