"""LFW-format verification pairs files: read, write, resolve to image paths, generate.

Format (LFW's README): a header line, then matched lines `name<TAB>i<TAB>j` and mismatched
lines `name1<TAB>i<TAB>name2<TAB>j`, image indices 1-based. The header is either one number N
(View 1: N matched lines then N mismatched lines) or `F<TAB>N` (View 2: F consecutive folds,
each N matched lines then N mismatched lines). Files we generate use the `F<TAB>N` layout with
identity-disjoint folds, so the evaluator can use their folds as the official ones.

Image naming (`naming` argument):
  "lfw":    image i of `name` is `<root>/name/name_%04d.<ext>` (LFW's convention); when that
            file is absent, `name_%04d` with another image extension (aligned crops of LFW
            are PNGs).
  "sorted": image i of `name` is the i-th image file (1-based) of `<root>/name` in natural sort
            order (digit runs compared as numbers), so ORL's `s7/1.pgm .. s7/10.pgm` are 1..10
            and LFW's `name_0001.jpg ..` are 1.. as well.
  "auto":   "lfw" for a folder holding any `name_NNNN.*` file, "sorted" otherwise. Generated
            pairs follow this rule, so they stay right for LFW-named folders with gaps (the
            photos in which no face was found are missing from an aligned tree).
"""

import dataclasses
import os
import re
import typing

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data.image_files import is_image_file

NAMINGS = ("auto", "lfw", "sorted")


class Pair(typing.NamedTuple):
    """One verification pair: image idx1 of name1 and image idx2 of name2 (1-based)."""
    name1: str
    idx1: int
    name2: str
    idx2: int
    issame: bool


@dataclasses.dataclass(frozen=True)
class PairsFile:
    """A parsed pairs file. `folds[k]` is the fold of pairs[k], or None if the file has none."""
    pairs: list
    num_folds: int
    pairs_per_set: int
    folds: np.ndarray | None


def parse_pairs(path: str) -> PairsFile:
    """Parses a pairs file; errors name the file, the line number and the offending text."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such pairs file")
    with tf.io.gfile.GFile(path, "r") as f:
        lines = [line.rstrip("\r\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: empty pairs file (expected a header line)")
    header = lines[0].split()
    try:
        numbers = [int(h) for h in header]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        num_folds, per_set = 1, numbers[0]
    elif len(numbers) == 2:
        num_folds, per_set = numbers
    else:
        raise ValueError(f"{path}:1: header must be 'N' or 'FOLDS<TAB>N', got {lines[0]!r}")
    pairs = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            if len(fields) == 3:
                pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), True))
            elif len(fields) == 4:
                pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), False))
            else:
                raise ValueError("expected 3 (matched) or 4 (mismatched) fields")
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: bad pair line {line!r}: {e}") from None
    folds = None
    if num_folds > 1:
        if len(pairs) != 2 * num_folds * per_set:
            raise ValueError(f"{path}: header says {num_folds} folds of {per_set} matched + "
                             f"{per_set} mismatched pairs ({2 * num_folds * per_set}), "
                             f"but the file has {len(pairs)} pairs")
        folds = np.repeat(np.arange(num_folds), 2 * per_set)
    return PairsFile(pairs=pairs, num_folds=num_folds, pairs_per_set=per_set, folds=folds)


def read_pairs(path: str) -> list:
    """The pairs of an LFW-format pairs file, in file order."""
    return parse_pairs(path).pairs


def format_pairs(pairs: typing.Sequence[Pair], num_folds: int | None = None) -> str:
    """The text of a pairs file.

    num_folds=None: View-1 layout (header N; matched pairs first, then mismatched; pairs are
    reordered so). num_folds=F: `pairs` must already be F consecutive folds of N matched then
    N mismatched pairs (what generate_pairs returns); the header is `F<TAB>N`.
    """
    pairs = list(pairs)
    if num_folds is None:
        same = [p for p in pairs if p.issame]
        diff = [p for p in pairs if not p.issame]
        header = str(len(same))
        ordered = same + diff
    else:
        if num_folds < 1 or len(pairs) % (2 * num_folds):
            raise ValueError(f"{len(pairs)} pairs cannot form {num_folds} folds of equal "
                             "matched and mismatched sets")
        per_set = len(pairs) // (2 * num_folds)
        for k in range(num_folds):
            chunk = pairs[2 * k * per_set:2 * (k + 1) * per_set]
            if not all(p.issame for p in chunk[:per_set]) or any(
                    p.issame for p in chunk[per_set:]):
                raise ValueError(f"fold {k} is not {per_set} matched then {per_set} "
                                 "mismatched pairs")
        header = f"{num_folds}\t{per_set}"
        ordered = pairs
    lines = [header]
    for p in ordered:
        if p.issame:
            if p.name1 != p.name2:
                raise ValueError(f"matched pair with two names: {p}")
            lines.append(f"{p.name1}\t{p.idx1}\t{p.idx2}")
        else:
            lines.append(f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}")
    return "\n".join(lines) + "\n"


def write_pairs(path: str, pairs: typing.Sequence[Pair], num_folds: int | None = None) -> None:
    """Writes a pairs file atomically (see format_pairs for the layout)."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    io_utils.write_bytes_atomic(path, format_pairs(pairs, num_folds).encode("utf-8"))


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_identity_images(folder: str) -> list:
    """Image file names of one identity folder, in natural sort order."""
    if not tf.io.gfile.isdir(folder):
        return []
    names = [n for n in tf.io.gfile.listdir(folder)
             if is_image_file(n) and not n.endswith("/")]
    return sorted(names, key=_natural_key)


def _lfw_pattern(name: str):
    return re.compile(re.escape(name) + r"_(\d{4})\.")


def _is_lfw_named(name: str, files: list) -> bool:
    pattern = _lfw_pattern(name)
    return any(pattern.match(f) for f in files)


def pair_indices(name: str, files: list) -> list:
    """The indices a pairs file gives an identity's images under the "auto" rule: the LFW
    numbers of its `name_NNNN.*` files if it has any, else 1..len(files)."""
    if _is_lfw_named(name, files):
        pattern = _lfw_pattern(name)
        return sorted({int(m.group(1)) for m in map(pattern.match, files) if m})
    return list(range(1, len(files) + 1))


class ImageResolver:
    """Maps (name, index) to an image path under `images_root`, listing each folder once."""

    def __init__(self, images_root: str, ext: str = "jpg", naming: str = "auto"):
        if naming not in NAMINGS:
            raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
        self.images_root = images_root
        self.ext = ext.lstrip(".")
        self.naming = naming
        self._listings = {}

    def _files(self, name: str) -> list:
        if name not in self._listings:
            self._listings[name] = list_identity_images(os.path.join(self.images_root, name))
        return self._listings[name]

    def path(self, name: str, index: int) -> str:
        """The image's path; a path that does not exist when the image is missing."""
        folder = os.path.join(self.images_root, name)
        lfw_path = os.path.join(folder, f"{name}_{index:04d}.{self.ext}")
        naming = self.naming
        if naming == "auto":
            files = self._files(name)
            naming = "lfw" if not files or _is_lfw_named(name, files) else "sorted"
        if naming == "lfw":
            stem = f"{name}_{index:04d}."
            other = [f for f in self._files(name) if f.startswith(stem)]
            if tf.io.gfile.exists(lfw_path) or not other:
                return lfw_path
            return os.path.join(folder, other[0])
        files = self._files(name)
        if 1 <= index <= len(files):
            return os.path.join(folder, files[index - 1])
        return os.path.join(folder, f"<image {index} of {len(files)} in sorted order>")


def pair_image_paths(images_root: str, pair: Pair, ext: str = "jpg",
                     naming: str = "auto") -> tuple:
    """(path1, path2) of a pair's images (see the module docstring for the naming rules)."""
    resolver = ImageResolver(images_root, ext, naming)
    return resolver.path(pair.name1, pair.idx1), resolver.path(pair.name2, pair.idx2)


def _folds_of_identities(identities: list, counts: dict, num_folds: int,
                         rng: np.random.RandomState) -> list:
    """Identity-disjoint folds; identities with 2+ images are spread evenly first."""
    multi = [n for n in identities if counts[n] >= 2]
    single = [n for n in identities if counts[n] < 2]
    folds = [[] for _ in range(num_folds)]
    for group in (multi, single):
        group = list(group)
        rng.shuffle(group)
        for k, name in enumerate(group):
            folds[k % num_folds].append(name)
    return folds


def _matched_candidates(fold: list, counts: dict, rng: np.random.RandomState) -> list:
    """All matched pairs of a fold, interleaved across identities so a prefix is spread out."""
    per_identity = []
    for name in sorted(fold):
        n = counts[name]
        cand = [Pair(name, i, name, j, True) for i in range(1, n + 1) for j in range(i + 1, n + 1)]
        rng.shuffle(cand)
        if cand:
            per_identity.append(cand)
    rng.shuffle(per_identity)
    out = []
    for r in range(max((len(c) for c in per_identity), default=0)):
        out.extend(c[r] for c in per_identity if r < len(c))
    return out


def _num_mismatched(fold: list, counts: dict) -> int:
    sizes = np.array([counts[n] for n in fold], dtype=np.int64)
    return int((sizes.sum() ** 2 - (sizes ** 2).sum()) // 2)


def _sample_mismatched(fold: list, counts: dict, n: int, rng: np.random.RandomState) -> list:
    names = sorted(fold)
    chosen, seen = [], set()
    while len(chosen) < n:
        a, b = sorted(rng.choice(len(names), size=2, replace=False))
        p = Pair(names[a], int(rng.randint(1, counts[names[a]] + 1)),
                 names[b], int(rng.randint(1, counts[names[b]] + 1)), False)
        if p not in seen:
            seen.add(p)
            chosen.append(p)
    return chosen


def generate_pairs(images_root: str, num_folds: int = 10, pairs_per_fold: int | None = None,
                   seed: int = 0, identities: typing.Sequence[str] | None = None) -> list:
    """LFW-format pairs for an identity-per-folder dataset, in View-2 layout.

    Identities (all sub-folders of `images_root`, or `identities`) are split into `num_folds`
    identity-disjoint folds; each fold gets pairs_per_fold / 2 matched and as many mismatched
    pairs, drawn within the fold. pairs_per_fold=None takes the most every fold allows, at most
    600 (LFW's View 2). Indices follow the "auto" naming rule (pair_indices). Write the
    result with write_pairs(path, pairs, num_folds=num_folds).
    """
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    if identities is None:
        io_utils.require_dir(images_root)
        identities = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(images_root)
                            if tf.io.gfile.isdir(os.path.join(images_root, n.rstrip("/"))))
    identities = sorted(set(identities))
    indices = {n: pair_indices(n, list_identity_images(os.path.join(images_root, n)))
               for n in identities}
    counts = {n: len(indices[n]) for n in identities}
    empty = [n for n in identities if counts[n] == 0]
    if empty:
        raise ValueError(f"{images_root}: identity folders without images: {empty[:10]}")
    rng = np.random.RandomState(seed)
    folds = _folds_of_identities(identities, counts, num_folds, rng)
    matched = [_matched_candidates(f, counts, rng) for f in folds]
    feasible = min(min(len(m), _num_mismatched(f, counts)) for m, f in zip(matched, folds))
    if pairs_per_fold is None:
        per_set = min(feasible, 300)
    else:
        if pairs_per_fold < 2 or pairs_per_fold % 2:
            raise ValueError(f"pairs_per_fold must be even and >= 2, got {pairs_per_fold}")
        per_set = pairs_per_fold // 2
    if per_set < 1 or per_set > feasible:
        raise ValueError(
            f"{images_root}: {len(identities)} identities ({sum(counts.values())} images) in "
            f"{num_folds} identity-disjoint folds allow at most {feasible} matched and "
            f"{feasible} mismatched pairs per fold; asked for {per_set}. Use fewer folds or "
            "more identities (each fold needs 2+ identities, one with 2+ images)")
    pairs = []
    for fold, cand in zip(folds, matched):
        pairs.extend(cand[:per_set])
        pairs.extend(_sample_mismatched(fold, counts, per_set, rng))
    # Drawn as 1-based positions among each identity's images; written as their indices.
    return [Pair(p.name1, indices[p.name1][p.idx1 - 1], p.name2, indices[p.name2][p.idx2 - 1],
                 p.issame) for p in pairs]
