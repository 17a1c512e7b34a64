"""Tests for ledger.merkle: published RFC 6962 vectors, edge cases, and properties."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import IntegrityError, ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    complete_subtrees,
    consistency_proof,
    consistency_ranges,
    fold,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    root_of,
    split,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "merkle" / "rfc6962.json").read_text()
)
V_LEAVES = [leaf_hash(bytes.fromhex(h)) for h in VECTORS["leaf_inputs_hex"]]
V_ROOTS = {int(k): bytes.fromhex(v) for k, v in VECTORS["roots_by_size"].items()} | {
    0: bytes.fromhex(VECTORS["empty_root"])
}
V_NODES = [[bytes.fromhex(h) for h in level] for level in VECTORS["node_hashes"]]
V_INCLUSION = VECTORS["inclusion_proofs"]
V_CONSISTENCY = VECTORS["consistency_proofs"]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

SETTINGS = settings(deadline=None, max_examples=60, database=None)


def hexes(hs: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in hs]


def unhex(hs: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hs]


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@dataclass(frozen=True)
class Tree:
    """Distinct random leaves plus a memoised oracle for MTH over any aligned subtree."""

    leaves: tuple[bytes, ...]
    _nodes: dict[tuple[int, int], bytes] = field(default_factory=dict, compare=False)

    def node(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._nodes:
            self._nodes[key] = root_of(self.leaves[index << level : (index + 1) << level])
        return self._nodes[key]

    def root(self, size: int) -> bytes:
        return root_of(self.leaves[:size])

    def range_hash(self, a: int, b: int) -> bytes:
        """MTH(D[a:b]) built the storage-layer way: fold over stored complete subtrees."""
        return fold([self.node(lvl, i) for lvl, i in complete_subtrees(a, b)])


@cache
def make_tree(n: int, seed: bytes) -> Tree:
    return Tree(tuple(leaf_hash(seed + i.to_bytes(4, "big")) for i in range(n)))


@st.composite
def trees(draw: st.DrawFn, min_size: int = 1, max_size: int = 300) -> Tree:
    return make_tree(draw(st.integers(min_size, max_size)), draw(st.binary(max_size=2)))


@st.composite
def tree_index(draw: st.DrawFn, min_size: int = 1) -> tuple[Tree, int]:
    t = draw(trees(min_size=min_size))
    return t, draw(st.integers(0, len(t.leaves) - 1))


@st.composite
def tree_sizes(draw: st.DrawFn, strict: bool = False) -> tuple[Tree, int]:
    """A tree of n leaves and an old size m with 1 <= m <= n (m < n when strict)."""
    t = draw(trees(min_size=2 if strict else 1))
    n = len(t.leaves)
    return t, draw(st.integers(1, n - 1 if strict else n))


# --- 1. Published vectors (transparency-dev/merkle) ---------------------------------------


def test_vector_empty_root_is_published_value() -> None:
    """EMPTY_ROOT, root_of([]), fold([]) and an empty Frontier all give the published hash."""
    assert EMPTY_ROOT == root_of([]) == fold([]) == Frontier().root() == V_ROOTS[0]


def test_vector_leaf_hashes_are_published_level0_nodes() -> None:
    """leaf_hash of each published leaf input is the published level-0 node hash."""
    assert hexes(V_LEAVES) == hexes(V_NODES[0])


@pytest.mark.parametrize("size", range(1, 9))
def test_vector_root_of_prefix_is_published_root(size: int) -> None:
    """root_of the first `size` published leaves equals the published root."""
    assert root_of(V_LEAVES[:size]).hex() == V_ROOTS[size].hex()


@pytest.mark.parametrize(
    ("level", "index"), [(lv, i) for lv, row in enumerate(V_NODES) for i in range(len(row))]
)
def test_vector_node_hash_is_mth_of_its_leaves(level: int, index: int) -> None:
    """Each published complete-subtree hash is root_of over its leaves."""
    leaves = V_LEAVES[index << level : (index + 1) << level]
    assert root_of(leaves) == V_NODES[level][index]


@pytest.mark.parametrize("size", range(9))
def test_vector_frontier_is_published_compact_tree(size: int) -> None:
    """Frontier after `size` appends holds the published CompactTrees nodes and root."""
    f = Frontier()
    for leaf in V_LEAVES[:size]:
        f.append(leaf)
    refs = [tuple(r) for r in VECTORS["compact_trees"][str(size)]]
    assert Frontier.levels(size) == refs
    assert hexes(f.hashes) == hexes([V_NODES[lv][i] for lv, i in refs])
    assert f.root() == V_ROOTS[size]


@pytest.mark.parametrize("vec", V_INCLUSION, ids=lambda v: v["origin"])
def test_vector_inclusion_proof_is_reproduced(vec: dict[str, Any]) -> None:
    """inclusion_proof over the published leaves equals the published proof."""
    assert hexes(inclusion_proof(vec["index"], V_LEAVES[: vec["size"]])) == vec["proof"]


@pytest.mark.parametrize("vec", V_INCLUSION, ids=lambda v: v["origin"])
def test_vector_inclusion_proof_verifies(vec: dict[str, Any]) -> None:
    """verify_inclusion accepts the published proof against the published root."""
    i, n = vec["index"], vec["size"]
    verify_inclusion(V_LEAVES[i], i, n, unhex(vec["proof"]), V_ROOTS[n])


@pytest.mark.parametrize("vec", V_CONSISTENCY, ids=lambda v: v["origin"])
def test_vector_consistency_proof_is_reproduced(vec: dict[str, Any]) -> None:
    """consistency_proof over the published leaves equals the published proof."""
    got = consistency_proof(vec["old_size"], V_LEAVES[: vec["new_size"]])
    assert hexes(got) == vec["proof"]


@pytest.mark.parametrize("vec", V_CONSISTENCY, ids=lambda v: v["origin"])
def test_vector_consistency_proof_verifies(vec: dict[str, Any]) -> None:
    """verify_consistency accepts the published proof between the published roots."""
    m, n = vec["old_size"], vec["new_size"]
    verify_consistency(m, n, V_ROOTS[m], V_ROOTS[n], unhex(vec["proof"]))


# Corruptions ported from corruptInclusionProof / corruptConsistencyProof in
# transparency-dev/merkle proof/verify_test.go. Each yields (description, verifier arguments).
InclusionArgs = tuple[bytes, int, int, list[bytes], bytes]
ConsistencyArgs = tuple[int, int, bytes, bytes, list[bytes]]


def inclusion_probes(vec: dict[str, Any]) -> list[tuple[str, InclusionArgs]]:
    i, n, p = vec["index"], vec["size"], unhex(vec["proof"])
    leaf, root = V_LEAVES[i], V_ROOTS[n]
    probes: list[tuple[str, InclusionArgs]] = [
        ("index - 1", (leaf, i - 1, n, p, root)),
        ("index + 1", (leaf, i + 1, n, p, root)),
        ("index ^ 2", (leaf, i ^ 2, n, p, root)),
        ("size * 2", (leaf, i, n * 2, p, root)),
        ("size / 2", (leaf, i, n // 2, p, root)),
        ("wrong leaf", (b"WrongLeaf", i, n, p, root)),
        ("empty root", (leaf, i, n, p, EMPTY_ROOT)),
        ("random root", (leaf, i, n, p, SOME_HASH)),
        ("trailing garbage", (leaf, i, n, [*p, b""], root)),
        ("trailing root", (leaf, i, n, [*p, root], root)),
        ("preceding garbage", (leaf, i, n, [b"", *p], root)),
        ("preceding root", (leaf, i, n, [root, *p], root)),
    ]
    for k in range(len(p)):
        probes.append(
            (f"proof[{k}] bit 3", (leaf, i, n, [*p[:k], flip(p[k], 3), *p[k + 1 :]], root))
        )
    if p:
        probes.append(("removed component", (leaf, i, n, p[:-1], root)))
    if len(p) > 1:
        probes.append(("inserted component", (leaf, i, n, [p[0], SOME_HASH, *p[1:]], root)))
    return probes


def consistency_probes(vec: dict[str, Any]) -> list[tuple[str, ConsistencyArgs]]:
    m, n, p = vec["old_size"], vec["new_size"], unhex(vec["proof"])
    r1, r2 = V_ROOTS[m], V_ROOTS[n]
    probes: list[tuple[str, ConsistencyArgs]] = [
        ("size1 - 1", (m - 1, n, r1, r2, p)),
        ("size1 + 1", (m + 1, n, r1, r2, p)),
        ("size1 ^ 2", (m ^ 2, n, r1, r2, p)),
        ("size2 * 2", (m, n * 2, r1, r2, p)),
        ("size2 / 2", (m, n // 2, r1, r2, p)),
        ("wrong root1", (m, n, b"WrongRoot", r2, p)),
        ("wrong root2", (m, n, r1, b"WrongRoot", p)),
        ("swapped roots", (m, n, r2, r1, p)),
        ("empty proof", (m, n, r1, r2, [])),
        ("trailing garbage", (m, n, r1, r2, [*p, b""])),
        ("trailing root1", (m, n, r1, r2, [*p, r1])),
        ("trailing root2", (m, n, r1, r2, [*p, r2])),
        ("preceding garbage", (m, n, r1, r2, [b"", *p])),
        ("preceding root1", (m, n, r1, r2, [r1, *p])),
        ("preceding root2", (m, n, r1, r2, [r2, *p])),
        ("preceding proof[0]", (m, n, r1, r2, [p[0], *p])),
        ("truncated proof", (m, n, r1, r2, p[:-1])),
    ]
    for k in range(len(p)):
        probes.append((f"proof[{k}] bit 4", (m, n, r1, r2, [*p[:k], flip(p[k], 4), *p[k + 1 :]])))
    return probes


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(a, id=f"{v['origin']}: {d}")
        for v in V_INCLUSION
        for d, a in inclusion_probes(v)
    ],
)
def test_vector_corrupted_inclusion_proof_is_rejected(args: InclusionArgs) -> None:
    """Every transparency-dev corruption of a published inclusion proof raises ProofError."""
    with pytest.raises(ProofError):
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(a, id=f"{v['origin']}: {d}")
        for v in V_CONSISTENCY
        if v["proof"]  # as upstream: only non-trivial proofs are corrupted
        for d, a in consistency_probes(v)
    ],
)
def test_vector_corrupted_consistency_proof_is_rejected(args: ConsistencyArgs) -> None:
    """Every transparency-dev corruption of a published consistency proof raises ProofError."""
    with pytest.raises(ProofError):
        verify_consistency(*args)


# --- 2. Building blocks and edge cases ----------------------------------------------------

A, B, C = (leaf_hash(x) for x in (b"a", b"b", b"c"))


def test_proof_error_is_an_integrity_error() -> None:
    """Verification failures are IntegrityErrors (the CLI maps them by class)."""
    assert issubclass(ProofError, IntegrityError)


@pytest.mark.parametrize(
    ("n", "want"),
    [(2, 1), (3, 2), (4, 2), (5, 4), (7, 4), (8, 4), (9, 8), (63, 32), (28937, 16384)],
)
def test_split_is_largest_power_of_two_below_n(n: int, want: int) -> None:
    """split(n) is the largest power of two strictly below n."""
    assert split(n) == want


@pytest.mark.parametrize("n", [-1, 0, 1])
def test_split_rejects_n_below_two(n: int) -> None:
    """split is undefined below 2."""
    with pytest.raises(ValueError, match="n >= 2"):
        split(n)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """A node over (l, r) never equals the leaf hash of the bytes l || r."""
    assert node_hash(A, B) != leaf_hash(A + B)
    assert len(node_hash(A, B)) == len(leaf_hash(b"")) == HASH_SIZE


@pytest.mark.parametrize(
    ("hashes", "want"),
    [
        pytest.param([], EMPTY_ROOT, id="empty"),
        pytest.param([A], A, id="one"),
        pytest.param([A, B], node_hash(A, B), id="two"),
        pytest.param([A, B, C], node_hash(A, node_hash(B, C)), id="three-right-assoc"),
    ],
)
def test_fold_is_a_right_fold(hashes: list[bytes], want: bytes) -> None:
    """fold([a, b, c]) = node(a, node(b, c)); fold([a]) = a; fold([]) = EMPTY_ROOT."""
    assert fold(hashes) == want


def test_fold_rejects_short_hash() -> None:
    """fold refuses inputs that are not 32-byte hashes."""
    with pytest.raises(ValueError, match=r"hashes\[1\] is 3 bytes"):
        fold([A, b"abc"])


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (0, 0, []),
        (0, 1, [(0, 0)]),
        (0, 7, [(2, 0), (1, 2), (0, 6)]),
        (4, 7, [(1, 2), (0, 6)]),
        (6, 7, [(0, 6)]),
        (8, 12, [(2, 2)]),
        (16, 27, [(3, 2), (1, 12), (0, 26)]),
    ],
)
def test_complete_subtrees_examples(start: int, end: int, want: list[tuple[int, int]]) -> None:
    """complete_subtrees splits a range into its aligned subtrees, largest first."""
    assert complete_subtrees(start, end) == want


@pytest.mark.parametrize(("start", "end"), [(1, 3), (2, 5), (4, 9), (3, 2), (-1, 0)])
def test_complete_subtrees_rejects_ranges_not_from_the_rfc_split(start: int, end: int) -> None:
    """Unaligned or inverted ranges are refused rather than silently mis-decomposed."""
    with pytest.raises(ValueError):
        complete_subtrees(start, end)


@pytest.mark.parametrize(
    ("index", "size", "want"),
    [
        (0, 1, []),
        (5, 8, [(4, 5), (6, 8), (0, 4)]),
        (1, 5, [(0, 1), (2, 4), (4, 5)]),
        (4, 5, [(0, 4)]),
        (6, 7, [(4, 6), (0, 4)]),
    ],
)
def test_inclusion_ranges_examples(index: int, size: int, want: list[tuple[int, int]]) -> None:
    """inclusion_ranges lists the sibling ranges bottom-up."""
    assert inclusion_ranges(index, size) == want


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (1, 1, []),
        (1, 8, [(1, 2), (2, 4), (4, 8)]),
        (6, 8, [(4, 6), (6, 8), (0, 4)]),
        (2, 5, [(2, 4), (4, 5)]),
        (3, 7, [(2, 3), (3, 4), (0, 2), (4, 7)]),
        (4, 7, [(4, 7)]),
    ],
)
def test_consistency_ranges_examples(old: int, new: int, want: list[tuple[int, int]]) -> None:
    """consistency_ranges lists the SUBPROOF ranges in proof order."""
    assert consistency_ranges(old, new) == want


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(lambda: inclusion_ranges(3, 3), "out of range", id="ranges-index-eq-size"),
        pytest.param(lambda: inclusion_ranges(-1, 3), "out of range", id="ranges-neg-index"),
        pytest.param(lambda: inclusion_ranges(0, 0), "out of range", id="ranges-empty-tree"),
        pytest.param(lambda: consistency_ranges(0, 0), "0 < old_size", id="ranges-old-zero"),
        pytest.param(lambda: consistency_ranges(3, 2), "0 < old_size", id="ranges-shrink"),
        pytest.param(lambda: inclusion_proof(3, [A, B, C]), "out of range", id="proof-index"),
        pytest.param(lambda: consistency_proof(0, [A]), "0 < old_size", id="proof-old-zero"),
        pytest.param(lambda: consistency_proof(2, [A]), "0 < old_size", id="proof-old-big"),
        pytest.param(lambda: root_of([A, b"x"]), "1 bytes", id="root-of-short-leaf"),
    ],
)
def test_range_and_proof_builders_reject_bad_arguments(
    call: Callable[[], object], match: str
) -> None:
    """Builders raise ValueError (not ProofError) on impossible arguments."""
    with pytest.raises(ValueError, match=match):
        call()


ROOT3 = root_of([A, B, C])
PROOF_1_OF_3 = inclusion_proof(1, [A, B, C])


@pytest.mark.parametrize(
    ("leaf", "index", "size", "proof", "root", "match"),
    [
        pytest.param(B, 3, 3, PROOF_1_OF_3, ROOT3, "index 3 out of range", id="index-eq-size"),
        pytest.param(B, -1, 3, PROOF_1_OF_3, ROOT3, "index -1 out of range", id="neg-index"),
        pytest.param(B, 0, 0, [], EMPTY_ROOT, "index 0 out of range", id="empty-tree"),
        pytest.param(B[:31], 1, 3, PROOF_1_OF_3, ROOT3, "leaf hash is 31 bytes", id="short-leaf"),
        pytest.param(B, 1, 3, PROOF_1_OF_3, ROOT3[:1], "root is 1 bytes", id="short-root"),
        pytest.param(B, 1, 3, [PROOF_1_OF_3[0], b"z"], ROOT3, r"proof\[1\] is 1", id="short-elem"),
        pytest.param(B, 1, 3, [*PROOF_1_OF_3, A], ROOT3, "has 3 hashes, want 2", id="extra"),
        pytest.param(B, 1, 3, PROOF_1_OF_3[:1], ROOT3, "has 1 hashes, want 2", id="missing"),
        pytest.param(C, 1, 3, PROOF_1_OF_3, ROOT3, "does not reproduce the root", id="wrong-leaf"),
    ],
)
def test_verify_inclusion_names_the_failure(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes, match: str
) -> None:
    """Each malformed inclusion claim raises ProofError with a message naming the defect."""
    with pytest.raises(ProofError, match=match):
        verify_inclusion(leaf, index, size, proof, root)


def test_root_from_inclusion_returns_the_implied_root() -> None:
    """root_from_inclusion reconstructs the root without comparing it."""
    assert root_from_inclusion(B, 1, 3, PROOF_1_OF_3) == ROOT3


# Adapted from TestVerifyConsistency in transparency-dev/merkle proof/verify_test.go; roots
# must be 32 bytes here, and a size-0 tree must claim EMPTY_ROOT.
R1, R2 = leaf_hash(b"root 1"), leaf_hash(b"root 2")


@pytest.mark.parametrize(
    ("old", "new", "root1", "root2", "proof", "match"),
    [
        pytest.param(0, 0, EMPTY_ROOT, EMPTY_ROOT, [], None, id="0-0-equal-ok"),
        pytest.param(1, 1, R2, R2, [], None, id="1-1-equal-ok"),
        pytest.param(0, 1, EMPTY_ROOT, R2, [], None, id="0-1-trivial-ok"),
        pytest.param(0, 0, EMPTY_ROOT, R2, [], "roots differ", id="0-0-roots-differ"),
        pytest.param(1, 1, R1, R2, [], "roots differ", id="1-1-roots-differ"),
        pytest.param(0, 1, R1, R2, [], "not EMPTY_ROOT", id="0-1-old-root-not-empty"),
        pytest.param(1, 0, R1, R2, [], "old_size <= new_size", id="time-travel-1-0"),
        pytest.param(2, 1, R1, R2, [], "old_size <= new_size", id="time-travel-2-1"),
        pytest.param(-1, 1, R1, R2, [], "0 <= old_size", id="negative-old"),
        pytest.param(1, 2, R1, R2, [], "has 0 hashes, want 1", id="1-2-empty-proof"),
        pytest.param(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], "has 1", id="0-0-nonempty"),
        pytest.param(0, 1, EMPTY_ROOT, R1, [EMPTY_ROOT], "has 1", id="0-1-nonempty"),
        pytest.param(1, 1, R1, R1, [EMPTY_ROOT], "has 1", id="1-1-nonempty"),
        pytest.param(1, 1, b"short", b"short", [], "old root is 5 bytes", id="short-root"),
    ],
)
def test_verify_consistency_edge_cases(
    old: int, new: int, root1: bytes, root2: bytes, proof: list[bytes], match: str | None
) -> None:
    """Trivial sizes are accepted only with an empty proof and matching roots."""
    if match is None:
        verify_consistency(old, new, root1, root2, proof)
    else:
        with pytest.raises(ProofError, match=match):
            verify_consistency(old, new, root1, root2, proof)


def test_verify_consistency_names_the_mismatched_root() -> None:
    """A wrong new root is reported as such (the old root still reproduces)."""
    leaves = [A, B, C]
    proof = consistency_proof(2, leaves)
    with pytest.raises(ProofError, match="does not reproduce the new root"):
        verify_consistency(2, 3, root_of(leaves[:2]), SOME_HASH, proof)


@pytest.mark.parametrize(
    ("size", "hashes", "match"),
    [
        pytest.param(3, [A], "needs 2 hashes, got 1", id="too-few"),
        pytest.param(0, [A], "needs 0 hashes, got 1", id="too-many"),
        pytest.param(-1, [], ">= 0", id="negative"),
        pytest.param(1, [b"x"], "1 bytes", id="short-hash"),
    ],
)
def test_frontier_rejects_inconsistent_state(size: int, hashes: list[bytes], match: str) -> None:
    """Frontier(size, hashes) needs popcount(size) 32-byte hashes."""
    with pytest.raises(ValueError, match=match):
        Frontier(size, hashes)


def test_frontier_append_rejects_short_leaf() -> None:
    """append refuses a leaf that is not a 32-byte hash."""
    with pytest.raises(ValueError, match="31 bytes"):
        Frontier().append(A[:31])


def test_frontier_copy_is_independent() -> None:
    """Appending to a copy leaves the original untouched."""
    f = Frontier()
    f.append(A)
    g = f.copy()
    g.append(B)
    assert (f.size, f.hashes, f.root()) == (1, (A,), A)
    assert (g.size, g.root()) == (2, node_hash(A, B))


# --- 3. Properties over random trees (1 <= m <= n <= 300) --------------------------------


@SETTINGS
@given(tree_index())
def test_every_inclusion_proof_verifies(ti: tuple[Tree, int]) -> None:
    """The reference inclusion proof for any leaf verifies against root_of."""
    t, i = ti
    verify_inclusion(
        t.leaves[i], i, len(t.leaves), inclusion_proof(i, t.leaves), t.root(len(t.leaves))
    )


@SETTINGS
@given(tree_sizes())
def test_every_consistency_proof_verifies(tm: tuple[Tree, int]) -> None:
    """The reference consistency proof for any 1 <= m <= n verifies between the two roots."""
    t, m = tm
    n = len(t.leaves)
    verify_consistency(m, n, t.root(m), t.root(n), consistency_proof(m, t.leaves))


def assert_tiled_by_aligned_subtrees(a: int, b: int) -> None:
    pos = a
    for level, index in complete_subtrees(a, b):
        assert index << level == pos, f"subtree ({level}, {index}) not at {pos} in [{a}, {b})"
        pos = (index + 1) << level
    assert pos == b


@SETTINGS
@given(tree_index())
def test_inclusion_ranges_are_tiled_by_aligned_complete_subtrees(ti: tuple[Tree, int]) -> None:
    """Every inclusion range splits into contiguous aligned complete subtrees covering it."""
    t, i = ti
    for a, b in inclusion_ranges(i, len(t.leaves)):
        assert_tiled_by_aligned_subtrees(a, b)


@SETTINGS
@given(tree_sizes())
def test_consistency_ranges_are_tiled_by_aligned_complete_subtrees(tm: tuple[Tree, int]) -> None:
    """Every consistency range splits into contiguous aligned complete subtrees covering it."""
    t, m = tm
    for a, b in consistency_ranges(m, len(t.leaves)):
        assert_tiled_by_aligned_subtrees(a, b)


@SETTINGS
@given(tree_index())
def test_inclusion_proof_from_stored_subtrees_equals_reference(ti: tuple[Tree, int]) -> None:
    """Folding stored subtree hashes per inclusion range gives root_of(range) and the proof."""
    t, i = ti
    ranges = inclusion_ranges(i, len(t.leaves))
    built = [t.range_hash(a, b) for a, b in ranges]
    assert built == [root_of(t.leaves[a:b]) for a, b in ranges]
    assert built == inclusion_proof(i, t.leaves)


@SETTINGS
@given(tree_sizes())
def test_consistency_proof_from_stored_subtrees_equals_reference(tm: tuple[Tree, int]) -> None:
    """Folding stored subtree hashes per consistency range gives root_of(range) and the proof."""
    t, m = tm
    ranges = consistency_ranges(m, len(t.leaves))
    built = [t.range_hash(a, b) for a, b in ranges]
    assert built == [root_of(t.leaves[a:b]) for a, b in ranges]
    assert built == consistency_proof(m, t.leaves)


@SETTINGS
@given(trees())
def test_whole_tree_subtrees_fold_to_root(t: Tree) -> None:
    """MTH of [0, n) is the fold of complete_subtrees(0, n)."""
    assert t.range_hash(0, len(t.leaves)) == t.root(len(t.leaves))


@pytest.mark.parametrize("target", ["leaf", "root", "proof"])
@SETTINGS
@given(ti=tree_index(), data=st.data())
def test_inclusion_rejects_any_flipped_bit(
    target: str, ti: tuple[Tree, int], data: st.DataObject
) -> None:
    """Flipping one bit of the leaf, the root or a proof element makes verification fail."""
    t, i = ti
    n = len(t.leaves)
    leaf, root, proof = t.leaves[i], t.root(n), inclusion_proof(i, t.leaves)
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    if target == "leaf":
        leaf = flip(leaf, bit)
    elif target == "root":
        root = flip(root, bit)
    else:
        if not proof:
            return
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof[k] = flip(proof[k], bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, i, n, proof, root)


@pytest.mark.parametrize("target", ["old_root", "new_root", "proof"])
@SETTINGS
@given(tm=tree_sizes(strict=True), data=st.data())
def test_consistency_rejects_any_flipped_bit(
    target: str, tm: tuple[Tree, int], data: st.DataObject
) -> None:
    """Flipping one bit of either root or a proof element makes verification fail."""
    t, m = tm
    n = len(t.leaves)
    r1, r2, proof = t.root(m), t.root(n), consistency_proof(m, t.leaves)
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    if target == "old_root":
        r1 = flip(r1, bit)
    elif target == "new_root":
        r2 = flip(r2, bit)
    else:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof[k] = flip(proof[k], bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, r1, r2, proof)


def resized(proof: list[bytes], change: str, data: st.DataObject) -> list[bytes]:
    """The proof with one random hash inserted anywhere, or one element removed."""
    if change == "added":
        k = data.draw(st.integers(0, len(proof)), label="position")
        extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), label="hash")
        return [*proof[:k], extra, *proof[k:]]
    k = data.draw(st.integers(0, len(proof) - 1), label="position")
    return proof[:k] + proof[k + 1 :]


@pytest.mark.parametrize("change", ["added", "removed"])
@SETTINGS
@given(ti=tree_index(min_size=2), data=st.data())
def test_inclusion_rejects_proof_with_element_added_or_removed(
    change: str, ti: tuple[Tree, int], data: st.DataObject
) -> None:
    """An inclusion proof one element too long or too short is rejected."""
    t, i = ti
    n = len(t.leaves)
    proof = resized(inclusion_proof(i, t.leaves), change, data)
    with pytest.raises(ProofError, match="hashes, want"):
        verify_inclusion(t.leaves[i], i, n, proof, t.root(n))


@pytest.mark.parametrize("change", ["added", "removed"])
@SETTINGS
@given(tm=tree_sizes(strict=True), data=st.data())
def test_consistency_rejects_proof_with_element_added_or_removed(
    change: str, tm: tuple[Tree, int], data: st.DataObject
) -> None:
    """A consistency proof one element too long or too short is rejected."""
    t, m = tm
    n = len(t.leaves)
    proof = resized(consistency_proof(m, t.leaves), change, data)
    with pytest.raises(ProofError, match="hashes, want"):
        verify_consistency(m, n, t.root(m), t.root(n), proof)


@SETTINGS
@given(ti=tree_index(min_size=2), data=st.data())
def test_inclusion_rejects_any_other_index(ti: tuple[Tree, int], data: st.DataObject) -> None:
    """A valid proof presented for a different leaf index in the same tree is rejected."""
    t, i = ti
    n = len(t.leaves)
    j = data.draw(st.integers(0, n - 2).map(lambda x: x + (x >= i)), label="index")
    with pytest.raises(ProofError):
        verify_inclusion(t.leaves[i], j, n, inclusion_proof(i, t.leaves), t.root(n))


def directions(index: int, size: int) -> list[bool]:
    """For each proof element, whether it is hashed in on the left of the running hash."""
    return [b <= index for _, b in inclusion_ranges(index, size)]


@SETTINGS
@given(ti=tree_index(), data=st.data())
def test_inclusion_under_other_size_passes_only_with_identical_path_shape(
    ti: tuple[Tree, int], data: st.DataObject
) -> None:
    """An RFC 6962 root does not commit to its size, so a proof also verifies under a size
    whose path has the same left/right shape (e.g. index 0 of 3 vs of 4); any other size fails.
    Binding size to root is the signed tree head's job."""
    t, i = ti
    n = len(t.leaves)
    s = data.draw(st.integers(0, 2 * n + 2).filter(lambda x: x != n), label="size")
    args = (t.leaves[i], i, s, inclusion_proof(i, t.leaves), t.root(n))
    if s > i and directions(i, s) == directions(i, n):
        verify_inclusion(*args)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


@pytest.mark.parametrize("probe", ["size * 2", "size / 2"])
@SETTINGS
@given(ti=tree_index(min_size=2))
def test_inclusion_rejects_upstream_wrong_size_probes(probe: str, ti: tuple[Tree, int]) -> None:
    """The wrong sizes transparency-dev probes (doubled, halved) always fail."""
    t, i = ti
    n = len(t.leaves)
    s = n * 2 if probe == "size * 2" else n // 2
    with pytest.raises(ProofError):
        verify_inclusion(t.leaves[i], i, s, inclusion_proof(i, t.leaves), t.root(n))


@pytest.mark.parametrize("probe", ["size1 - 1", "size1 + 1", "size1 ^ 2", "size2 * 2", "size2 / 2"])
@SETTINGS
@given(tm=tree_sizes(strict=True))
def test_consistency_rejects_upstream_wrong_size_probes(probe: str, tm: tuple[Tree, int]) -> None:
    """The wrong sizes transparency-dev probes (old size +-1 or ^2, new size doubled or halved)
    always fail."""
    t, m = tm
    n = len(t.leaves)
    m2, n2 = {
        "size1 - 1": (m - 1, n),
        "size1 + 1": (m + 1, n),
        "size1 ^ 2": (m ^ 2, n),
        "size2 * 2": (m, n * 2),
        "size2 / 2": (m, n // 2),
    }[probe]
    with pytest.raises(ProofError):
        verify_consistency(m2, n2, t.root(m), t.root(n), consistency_proof(m, t.leaves))


@SETTINGS
@given(trees(min_size=0))
def test_frontier_root_matches_root_of_after_every_append(t: Tree) -> None:
    """After each append the frontier root is root_of the prefix and its hashes are levels()."""
    f = Frontier()
    for k, leaf in enumerate(t.leaves, start=1):
        f.append(leaf)
        assert f.size == k
        assert f.root() == t.root(k)
    assert list(f.hashes) == [t.node(lv, i) for lv, i in Frontier.levels(len(t.leaves))]


@SETTINGS
@given(trees(min_size=0))
def test_frontier_append_reports_each_complete_interior_subtree_once(t: Tree) -> None:
    """append returns every complete interior subtree exactly once, bottom-up, hashes correct."""
    n = len(t.leaves)
    f = Frontier()
    created: list[tuple[int, int, bytes]] = []
    for leaf in t.leaves:
        new = f.append(leaf)
        assert [lv for lv, _, _ in new] == list(range(1, len(new) + 1))
        created += new
    assert len(created) == n - n.bit_count()
    expected = {(lv, i) for lv in range(1, n.bit_length()) for i in range(n >> lv)}
    assert {(lv, i) for lv, i, _ in created} == expected
    for lv, i, h in created:
        assert h == t.node(lv, i)


@SETTINGS
@given(t=trees(min_size=0), data=st.data())
def test_frontier_rebuilt_from_levels_behaves_identically(t: Tree, data: st.DataObject) -> None:
    """Frontier(k, hashes of levels(k)) equals the appended one and evolves identically."""
    n = len(t.leaves)
    k = data.draw(st.integers(0, n), label="k")
    grown = Frontier()
    for leaf in t.leaves[:k]:
        grown.append(leaf)
    rebuilt = Frontier(k, [t.node(lv, i) for lv, i in Frontier.levels(k)])
    assert rebuilt == grown
    for leaf in t.leaves[k:]:
        assert rebuilt.append(leaf) == grown.append(leaf)
        assert rebuilt.root() == grown.root()
    assert rebuilt == grown


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 300),
    chunks=st.lists(st.integers(0, 70), min_size=1, max_size=5),
    min_level=st.integers(1, 6),
)
def test_frontier_extend_equals_repeated_append(start: int, chunks: list[int], min_level: int) -> None:
    """extend() yields the same frontier and the same nodes (>= min_level) as append()."""
    total = start + sum(chunks)
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(total)]
    one, many = Frontier(), Frontier()
    for leaf in leaves[:start]:
        one.append(leaf)
        many.append(leaf)
    expected: set[tuple[int, int, bytes]] = set()
    got: set[tuple[int, int, bytes]] = set()
    at = start
    for size in chunks:
        for leaf in leaves[at : at + size]:
            expected.update(n for n in one.append(leaf) if n[0] >= min_level)
        got.update(many.extend(leaves[at : at + size], min_level=min_level))
        at += size
        assert many == one
    assert got == expected
    assert many.root() == root_of(leaves)
