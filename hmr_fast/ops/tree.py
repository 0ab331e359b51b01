"""The kinematic tree's depth levels: shared by the torch reference, the numba skeleton and
the Triton plans (its own module so that none of them imports another for it)."""

from __future__ import annotations


def tree_levels(parents: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Group joints by depth in the kinematic tree.

    Args:
        parents: length J, parents[0] = -1, every other parent an earlier joint.
    Returns:
        levels[d] = joints at depth d (the root alone at depth 0).
    """
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        if not 0 <= parents[j] < j:
            raise ValueError(
                f"kintree_table: parent of joint {j} must be an earlier joint, got {parents[j]}")
        depth[j] = depth[parents[j]] + 1
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for j, d in enumerate(depth):
        levels[d].append(j)
    return tuple(tuple(level) for level in levels)
