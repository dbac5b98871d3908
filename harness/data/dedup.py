"""Exact (MD5 of the normalised text) and near-duplicate (MinHash LSH) removal.

The first occurrence is kept. Near-duplicates use `datasketch`'s MinHash over word n-gram
shingles and MinHashLSH at a Jaccard threshold; each found pair is reported.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

NON_WORD = re.compile(r"[^\w\s]")
SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return SPACE.sub(" ", NON_WORD.sub(" ", text)).strip()


def exact_duplicates(texts: list[str]) -> dict[int, int]:
    """{index of a duplicate: index of the first row with the same normalised text}."""
    first: dict[str, int] = {}
    dups: dict[int, int] = {}
    for i, text in enumerate(texts):
        key = hashlib.md5(normalise(text).encode()).hexdigest()
        if key in first:
            dups[i] = first[key]
        else:
            first[key] = i
    return dups


def near_duplicates(texts: list[str], threshold: float, num_perm: int, shingle: int,
                    seed: int = 1) -> dict[int, int]:
    """{index of a near-duplicate: index of an earlier kept row it resembles}, by MinHash LSH
    (estimated Jaccard similarity of word `shingle`-grams >= threshold)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    shingles = []
    for text in texts:
        tokens = normalise(text).split()
        shingles.append([" ".join(tokens[j:j + shingle]).encode()
                         for j in range(max(1, len(tokens) - shingle + 1))])
    dups: dict[int, int] = {}
    # MinHash.bulk shares one set of permutations (building them per row dominates otherwise)
    for i, mh in enumerate(MinHash.bulk(shingles, num_perm=num_perm, seed=seed)):
        found = lsh.query(mh)
        if found:
            dups[i] = min(int(k) for k in found)
        else:
            lsh.insert(str(i), mh)
    return dups
