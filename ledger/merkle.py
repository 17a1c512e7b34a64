"""RFC 6962 / RFC 9162 (section 2.1) Merkle trees over SHA-256: hashing, proofs, frontier.

Invariants this module maintains (every hash is exactly HASH_SIZE bytes):

* leaf_hash(d) = SHA256(0x00 || d); node_hash(l, r) = SHA256(0x01 || l || r);
  the root of the empty tree is EMPTY_ROOT = SHA256(b"").
* MTH(D[0:n]) for n >= 2 is node_hash(MTH(D[0:k]), MTH(D[k:n])) with k = split(n),
  the largest power of two < n. An odd node is promoted unchanged, never
  duplicated, so each list of leaves has exactly one root.
* (level, index) names the complete subtree over leaves [index << level, (index + 1) << level).
* Every leaf range [a, b) met in that recursion has a divisible by bitceil(b - a).
  Such a range is the chain of aligned complete subtrees complete_subtrees(a, b),
  one per set bit of b - a, largest first, and MTH(D[a:b]) = fold(their hashes).
* Proof elements are the MTHs of the ranges from inclusion_ranges / consistency_ranges,
  in RFC proof order. inclusion_proof / consistency_proof are independent reference
  generators written straight from the RFC recursions (PATH, SUBPROOF).
* Verifiers follow RFC 9162 2.1.3.2 / 2.1.4.2, check every hash size and the exact
  expected proof length up front, and raise ProofError on any failure.
* Frontier(size) holds one complete-subtree hash per set bit of size, largest first
  (the subtrees complete_subtrees(0, size)); its root is fold() of them.

Pure functions; stdlib only; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ledger.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "complete_subtrees",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "root_of",
    "split",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 leaf hash SHA256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 interior node hash SHA256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    if n < 2:
        raise ValueError(f"split needs n >= 2, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


def _check_hashes(hashes: Sequence[bytes], what: str, exc: type[Exception] = ValueError) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise exc(f"{what}[{i}] is {len(h)} bytes, want {HASH_SIZE}")


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) over leaf hashes, by the RFC definition."""
    if hi - lo == 0:
        return EMPTY_ROOT
    if hi - lo == 1:
        return hashes[lo]
    mid = lo + split(hi - lo)
    return node_hash(_mth(hashes, lo, mid), _mth(hashes, mid, hi))


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes (reference implementation, O(n))."""
    _check_hashes(leaf_hashes, "leaf_hashes")
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of complete-subtree hashes: fold([a, b, c]) = node(a, node(b, c)).

    fold([a]) = a and fold([]) = EMPTY_ROOT (the MTH of no leaves).
    """
    _check_hashes(hashes, "hashes")
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = node_hash(hashes[i], acc)
    return acc


def complete_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose [start, end) into aligned complete subtrees, left to right, as (level, index).

    The range must be one the RFC split produces: start divisible by bitceil(end - start).
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid leaf range [{start}, {end})")
    width = end - start
    align = 1 << (width - 1).bit_length() if width else 1
    if start % align:
        raise ValueError(
            f"range [{start}, {end}) is not produced by the RFC split: "
            f"start must be a multiple of {align}"
        )
    out: list[tuple[int, int]] = []
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form the inclusion proof of leaf `index` (bottom-up)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split(hi - lo)
        if index < mid:
            out.append((mid, hi))
            hi = mid
        else:
            out.append((lo, mid))
            lo = mid
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form the consistency proof (RFC SUBPROOF order)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"consistency needs 0 < old_size <= new_size, got {old_size}, {new_size}")
    out: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        mid = lo + split(hi - lo)
        if lo + m <= mid:
            out.append((mid, hi))
            hi = mid
        else:
            out.append((lo, mid))
            lo, m, whole = mid, m - (mid - lo), False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


def _path(m: int, hashes: Sequence[bytes], lo: int, hi: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[lo:hi])."""
    if hi - lo <= 1:
        return []
    mid = lo + split(hi - lo)
    if m < mid - lo:
        return [*_path(m, hashes, lo, mid), _mth(hashes, mid, hi)]
    return [*_path(m - (mid - lo), hashes, mid, hi), _mth(hashes, lo, mid)]


def _subproof(m: int, hashes: Sequence[bytes], lo: int, hi: int, whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[lo:hi], whole)."""
    if m == hi - lo:
        return [] if whole else [_mth(hashes, lo, hi)]
    mid = lo + split(hi - lo)
    if m <= mid - lo:
        return [*_subproof(m, hashes, lo, mid, whole), _mth(hashes, mid, hi)]
    return [*_subproof(m - (mid - lo), hashes, mid, hi, False), _mth(hashes, lo, mid)]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Reference inclusion proof for leaf `index` over all leaf hashes."""
    _check_hashes(leaf_hashes, "leaf_hashes")
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} out of range for tree size {len(leaf_hashes)}")
    return _path(index, leaf_hashes, 0, len(leaf_hashes))


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Reference consistency proof from the first `old_size` leaves to all of them."""
    _check_hashes(leaf_hashes, "leaf_hashes")
    if not 0 < old_size <= len(leaf_hashes):
        raise ValueError(
            f"consistency needs 0 < old_size <= new_size, got {old_size}, {len(leaf_hashes)}"
        )
    return _subproof(old_size, leaf_hashes, 0, len(leaf_hashes), True)


def _require_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, want {HASH_SIZE}")


def _require_proof(proof: Sequence[bytes], want: int, what: str) -> None:
    if len(proof) != want:
        raise ProofError(f"{what} proof has {len(proof)} hashes, want {want}")
    _check_hashes(proof, f"{what} proof", ProofError)


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof for leaf hash `leaf` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} out of range for tree size {size}")
    _require_hash(leaf, "leaf hash")
    _require_proof(proof, len(inclusion_ranges(index, size)), "inclusion")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash `leaf` is leaf `index` of the tree of `size` with `root`."""
    _require_hash(root, "root")
    got = root_from_inclusion(leaf, index, size, proof)
    if not hmac.compare_digest(got, root):
        raise ProofError(
            f"inclusion proof for leaf {index} of {size} does not reproduce "
            f"the root: got {got.hex()}, want {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (new_size, new_root) extends (old_size, old_root) (RFC 9162 2.1.4.2).

    old_size == new_size needs an empty proof and equal roots; old_size == 0 needs an
    empty proof and old_root == EMPTY_ROOT.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"consistency needs 0 <= old_size <= new_size, got {old_size}, {new_size}")
    _require_hash(old_root, "old root")
    _require_hash(new_root, "new root")
    if old_size == 0 or old_size == new_size:
        _require_proof(proof, 0, "consistency")
        if old_size == 0 and not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError("old root of an empty tree is not EMPTY_ROOT")
        if old_size == new_size and not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"roots differ for equal tree sizes {old_size}")
        return
    _require_proof(proof, len(consistency_ranges(old_size, new_size)), "consistency")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(
            f"consistency proof {old_size} -> {new_size} does not reproduce "
            f"the old root: got {fr.hex()}, want {old_root.hex()}"
        )
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(
            f"consistency proof {old_size} -> {new_size} does not reproduce "
            f"the new root: got {sr.hex()}, want {new_root.hex()}"
        )


class Frontier:
    """The compact range [0, size): one complete-subtree hash per set bit of size, largest first."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"frontier size must be >= 0, got {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"frontier of size {size} needs {size.bit_count()} hashes, got {len(hashes)}"
            )
        _check_hashes(hashes, "hashes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of the subtrees levels(size), largest first."""
        return tuple(self._hashes)

    @staticmethod
    def levels(size: int) -> list[tuple[int, int]]:
        """The (level, index) of each frontier subtree for a tree of `size`, largest first."""
        return complete_subtrees(0, size)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return each new interior node as (level, index, hash), bottom-up."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, want {HASH_SIZE}")
        created: list[tuple[int, int, bytes]] = []
        h, level, index = leaf, 0, self._size
        while self._size >> level & 1:
            h = node_hash(self._hashes.pop(), h)
            level, index = level + 1, index >> 1
            created.append((level, index, h))
        self._hashes.append(h)
        self._size += 1
        return created

    def extend(self, leaves: Sequence[bytes], *, min_level: int = 1) -> list[tuple[int, int, bytes]]:
        """Append many leaf hashes; return the new interior nodes at ``min_level`` or above.

        Equivalent to calling ``append`` for each leaf (and filtering), but hashes
        aligned blocks level by level, which is several times faster in CPython.
        """
        _check_hashes(leaves, "leaves")
        created: list[tuple[int, int, bytes]] = []
        sha = hashlib.sha256
        i, n = 0, len(leaves)
        while i < n:
            size = self._size
            # (1) the largest block that starts here, is aligned, and fits in what is left
            k = (n - i).bit_length() - 1
            if size:
                k = min(k, (size & -size).bit_length() - 1)
            hashes = list(leaves[i : i + (1 << k)])
            # (2) hash the block bottom-up, keeping the nodes that are asked for
            for level in range(1, k + 1):
                hashes = [sha(b"\x01" + hashes[j] + hashes[j + 1]).digest()
                          for j in range(0, len(hashes), 2)]
                if level >= min_level:
                    first = size >> level
                    created.extend((level, first + j, h) for j, h in enumerate(hashes))
            # (3) merge the block's root into the frontier, as append does for a leaf
            h, level = hashes[0], k
            while self._size >> level & 1:
                h = sha(b"\x01" + self._hashes.pop() + h).digest()
                level += 1
                if level >= min_level:
                    created.append((level, self._size >> level, h))
            self._hashes.append(h)
            self._size += 1 << k
            i += 1 << k
        return created

    def root(self) -> bytes:
        """MTH of leaves [0, size); EMPTY_ROOT when size is 0."""
        return fold(self._hashes)

    def copy(self) -> Frontier:
        """An independent copy."""
        return Frontier(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, hashes=<{len(self._hashes)} hashes>)"
