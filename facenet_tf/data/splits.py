"""Seeded identity-disjoint splits of an identity-per-folder dataset (training vs held out)."""

import os
import shutil

import numpy as np


def split_identities(input_dir: str, train_dir: str, heldout_dir: str, heldout_identities: int,
                     seed: int) -> tuple[list, list]:
    """Puts each identity folder into train_dir or heldout_dir; returns both name lists.

    The held-out identities are a seeded sample of those with 2 or more images (they make the
    verification pairs); every other identity trains. Files are hard-linked where the
    filesystem allows it, copied otherwise.
    """
    identities = sorted(d for d in os.listdir(input_dir)
                        if os.path.isdir(os.path.join(input_dir, d)))
    multi = [d for d in identities if len(os.listdir(os.path.join(input_dir, d))) >= 2]
    if heldout_identities < 2 or heldout_identities > len(multi) - 2:
        raise ValueError(f"heldout_identities={heldout_identities}: need 2..{len(multi) - 2} "
                         f"for {input_dir} ({len(multi)} identities with 2 or more images)")
    order = np.random.RandomState(seed).permutation(len(multi))
    heldout = sorted(multi[i] for i in order[:heldout_identities])
    train = [d for d in identities if d not in set(heldout)]
    for names, target in ((train, train_dir), (heldout, heldout_dir)):
        for name in names:
            dst = os.path.join(target, name)
            if not os.path.isdir(dst):
                shutil.copytree(os.path.join(input_dir, name), dst, copy_function=_link_or_copy)
    return train, heldout


def subset_identities(input_dir: str, output_dir: str, fraction: float, seed: int) -> list:
    """Puts a seeded `fraction` of the identity folders of `input_dir` into `output_dir`;
    returns their names.

    The fraction is taken separately of the identities with 2 or more images (those that give
    anchor-positive pairs) and of the others, rounded to the nearest count, so that a subset
    keeps the mix of the whole. The subsets of one seed are nested: a smaller fraction is a
    prefix of the same seeded order, so its identities are all in every larger one. Files are
    hard-linked where the filesystem allows it, copied otherwise.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    identities = sorted(d for d in os.listdir(input_dir)
                        if os.path.isdir(os.path.join(input_dir, d)))
    if not identities:
        raise ValueError(f"{input_dir}: no identity folders")
    multi = [d for d in identities if len(os.listdir(os.path.join(input_dir, d))) >= 2]
    single = [d for d in identities if d not in set(multi)]
    rng = np.random.RandomState(seed)
    chosen = []
    for group in (multi, single):
        order = rng.permutation(len(group))
        chosen += [group[i] for i in order[:int(round(fraction * len(group)))]]
    for name in sorted(chosen):
        dst = os.path.join(output_dir, name)
        if not os.path.isdir(dst):
            shutil.copytree(os.path.join(input_dir, name), dst, copy_function=_link_or_copy)
    return sorted(chosen)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
