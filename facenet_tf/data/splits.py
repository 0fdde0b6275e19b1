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


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
