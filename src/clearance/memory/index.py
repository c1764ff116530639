"""Nearest-neighbour indexes over fixed-width float32 case vectors.

The memory stores each past decision as a *case* with a feature vector and, for a new action,
looks up the k most similar cases (its precedents). This module only answers "which stored keys
are nearest to this vector"; what a key means, partitions and outcomes are the caller's.

Three implementations of one small protocol, :class:`VectorIndex`:

- :class:`ExactIndex`: numpy brute force over a growable matrix. Always right, linear in the
  number of vectors: the reference in tests and the right choice while an index is small.
- :class:`HnswIndex`: an HNSW graph (usearch), sub-millisecond lookups at a million vectors with
  recall a little under 1.
- :func:`make_index`: an index that answers exactly while it holds at most ``exact_below``
  vectors and then switches itself to HNSW. Approximate search loses the most, in relative
  terms, when a partition has few precedents (missing one of five matters more than missing
  one of five hundred), and brute force over a few thousand vectors of dim 32 costs well under
  a millisecond, so small partitions get exact answers for free.

Conventions shared by all three:

- Distances are **squared** L2 (usearch's ``l2sq``), smaller is nearer.
- Keys are non-negative ints below 2**63 (the caller maps case ids to ints).
- Vectors are stored as float32; a vector of the wrong length raises ``ValueError`` naming both
  dimensions, and one holding NaN or an infinity raises ``ValueError`` (a NaN distance would
  silently sort anywhere and poison every lookup that touches it).
- Adding an existing key replaces its vector; removing a missing key does nothing (a case's
  vector never changes, but a rebuild may replay keys the index already holds, and a delete
  may race a rebuild: both should be idempotent rather than errors).
- ``search`` returns ``[(key, distance), ...]`` nearest first, at most ``k`` entries, fewer if
  the index holds fewer.

Thread safety: every index may be searched from several threads while one thread adds or
removes. Each index guards its state with its own lock; see :class:`HnswIndex` for what
usearch itself guarantees and why we lock anyway.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
from usearch.index import Index

__all__ = [
    "DEFAULT_CONNECTIVITY",
    "DEFAULT_EXPANSION_ADD",
    "DEFAULT_EXPANSION_SEARCH",
    "AdaptiveIndex",
    "ExactIndex",
    "HnswIndex",
    "VectorIndex",
    "make_index",
]

VectorLike = Union[Sequence[float], np.ndarray]

#: HNSW parameters, chosen with ``benchmarks/memory.py`` (dim 32, clustered vectors with
#: categorical dims, 10k to 1M cases, k=16 on a 2-core VM; figures in that script's docstring).
#: M=16 and efConstruction=128 are usearch's defaults and were kept: halving efConstruction
#: halves the build but drops recall@16 at 200k from 0.995 to 0.970 (ef=128), and M=24 buys
#: back less than it costs. ef=128 at query time gives recall@16 ~0.98 at 1M (ef=64: ~0.96,
#: too close to 0.95) for a lookup CPU p99 under 1 ms, far below the 5 ms target.
DEFAULT_CONNECTIVITY = 16
DEFAULT_EXPANSION_ADD = 128
DEFAULT_EXPANSION_SEARCH = 128

_MAX_KEY = 2**63 - 1
#: Bulk adds are fed to usearch in chunks of this many vectors, releasing the lock between
#: chunks so that lookups are not held up for the whole of a large rebuild.
_ADD_CHUNK = 65_536


@runtime_checkable
class VectorIndex(Protocol):
    """What the memory needs from a nearest-neighbour index."""

    dim: int

    def add(self, key: int, vector: VectorLike) -> None:
        """Store ``vector`` under ``key``, replacing any vector already stored under it."""
        ...

    def add_many(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Bulk :meth:`add` (rebuilds): ``keys`` shape (n,), ``vectors`` shape (n, dim).

        A key repeated within the batch keeps its last vector."""
        ...

    def remove(self, key: int) -> None:
        """Forget ``key``; no error if it is not stored."""
        ...

    def search(self, vector: VectorLike, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest stored keys as ``(key, squared L2 distance)``, nearest first."""
        ...

    def __len__(self) -> int: ...


# -- validation -------------------------------------------------------------------------------


def _check_dim(dim: Any) -> int:
    try:
        value = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim must be an int, got {type(dim).__name__}") from None
    if value < 1:
        raise ValueError(f"dim must be positive, got {value}")
    return value


def _check_key(key: Any) -> int:
    try:
        value = operator.index(key)
    except TypeError:
        raise TypeError(f"key must be an int, got {type(key).__name__}") from None
    if not 0 <= value <= _MAX_KEY:
        raise ValueError(f"key must be in [0, 2**63), got {value}")
    return value


def _check_k(k: Any) -> int:
    try:
        value = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an int, got {type(k).__name__}") from None
    if value < 0:
        raise ValueError(f"k must be non-negative, got {value}")
    return value


def _as_vector(vector: VectorLike, dim: int) -> np.ndarray:
    """One contiguous float32 vector of length ``dim``, all finite."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, rejected below
        arr = np.ascontiguousarray(vector, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected one vector of dimension {dim}, got an array of shape {arr.shape}")
    if arr.shape[0] != dim:
        raise ValueError(f"vector has dimension {arr.shape[0]}, index has dimension {dim}")
    # Checked after the cast: a float64 beyond float32's range becomes inf here.
    if not np.isfinite(arr).all():
        raise ValueError("vector holds NaN or infinity")
    return arr


def _as_batch(keys: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(keys as uint64, vectors as float32)``, contiguous, last occurrence of a
    repeated key kept (as if the rows had been added one at a time)."""
    karr = np.asarray(keys)
    if karr.ndim != 1:
        raise ValueError(f"keys must be one-dimensional, got shape {karr.shape}")
    if karr.size and not np.issubdtype(karr.dtype, np.integer):
        raise TypeError(f"keys must be integers, got dtype {karr.dtype}")
    with np.errstate(over="ignore"):  # an overflow becomes inf, rejected below
        varr = np.ascontiguousarray(vectors, dtype=np.float32)
    if varr.ndim == 1 and varr.size == 0:
        varr = varr.reshape(0, dim)
    if varr.ndim != 2:
        raise ValueError(f"vectors must be a matrix (n, {dim}), got shape {varr.shape}")
    if varr.shape[1] != dim:
        raise ValueError(f"vectors have dimension {varr.shape[1]}, index has dimension {dim}")
    if varr.shape[0] != karr.shape[0]:
        raise ValueError(f"{karr.shape[0]} keys for {varr.shape[0]} vectors")
    if karr.size == 0:
        return np.empty(0, dtype=np.uint64), varr
    if int(karr.min()) < 0 or int(karr.max()) > _MAX_KEY:
        raise ValueError("keys must be in [0, 2**63)")
    if not np.isfinite(varr).all():
        bad = int(np.flatnonzero(~np.isfinite(varr).all(axis=1))[0])
        raise ValueError(f"vector for key {int(karr[bad])} holds NaN or infinity")
    karr = karr.astype(np.uint64)
    # Keep the last occurrence of each key, in the batch's order.
    _, first_from_end = np.unique(karr[::-1], return_index=True)
    if first_from_end.size != karr.size:
        keep = np.sort(karr.size - 1 - first_from_end)
        karr, varr = karr[keep], varr[keep]
    return np.ascontiguousarray(karr), np.ascontiguousarray(varr)


# -- exact ------------------------------------------------------------------------------------


class ExactIndex:
    """Brute-force search over a growable float32 matrix: the reference implementation.

    Lookup cost is one pass over all stored vectors (about 30 µs per thousand vectors at dim
    32), so it is meant for up to a few thousand vectors. Removal moves the last row into the
    hole, so rows stay dense. Ties in distance are broken by the smaller key, which makes the
    answers deterministic (HNSW's order among equal distances is not).

    A lock serialises all operations: a removal moves rows around, and a search reading the
    matrix half-way through would mix two keys' rows.
    """

    def __init__(self, dim: int, *, capacity: int = 64) -> None:
        self.dim = _check_dim(dim)
        cap = max(1, int(capacity))
        self._keys = np.empty(cap, dtype=np.uint64)
        self._vectors = np.empty((cap, self.dim), dtype=np.float32)
        self._size = 0
        self._rows: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self.dim}, size={self._size})"

    def _grow(self, needed: int) -> None:
        cap = self._keys.shape[0]
        if needed <= cap:
            return
        while cap < needed:
            cap *= 2
        keys = np.empty(cap, dtype=np.uint64)
        vectors = np.empty((cap, self.dim), dtype=np.float32)
        keys[: self._size] = self._keys[: self._size]
        vectors[: self._size] = self._vectors[: self._size]
        self._keys, self._vectors = keys, vectors

    def add(self, key: int, vector: VectorLike) -> None:
        k = _check_key(key)
        vec = _as_vector(vector, self.dim)
        with self._lock:
            row = self._rows.get(k)
            if row is None:
                self._grow(self._size + 1)
                row = self._size
                self._keys[row] = k
                self._rows[k] = row
                self._size += 1
            self._vectors[row] = vec

    def add_many(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        karr, varr = _as_batch(keys, vectors, self.dim)
        if karr.size == 0:
            return
        with self._lock:
            rows = np.fromiter((self._rows.get(k, -1) for k in karr.tolist()), dtype=np.int64, count=karr.size)
            old = rows >= 0
            if old.any():
                self._vectors[rows[old]] = varr[old]
            new = ~old
            n_new = int(new.sum())
            if n_new:
                start = self._size
                self._grow(start + n_new)
                self._keys[start : start + n_new] = karr[new]
                self._vectors[start : start + n_new] = varr[new]
                for offset, k in enumerate(karr[new].tolist()):
                    self._rows[k] = start + offset
                self._size += n_new

    def remove(self, key: int) -> None:
        k = _check_key(key)
        with self._lock:
            row = self._rows.pop(k, None)
            if row is None:
                return
            last = self._size - 1
            if row != last:
                moved = int(self._keys[last])
                self._keys[row] = moved
                self._vectors[row] = self._vectors[last]
                self._rows[moved] = row
            self._size = last

    def search(self, vector: VectorLike, k: int) -> list[tuple[int, float]]:
        query = _as_vector(vector, self.dim)
        want = _check_k(k)
        with self._lock:
            n = self._size
            if want == 0 or n == 0:
                return []
            diff = self._vectors[:n] - query
            dist = np.einsum("ij,ij->i", diff, diff)
            keys = self._keys[:n].copy()
        if want < n:
            # Everything at or below the k-th smallest distance, so that ties at the boundary
            # are settled by key below rather than by argpartition's arbitrary choice.
            kth = np.partition(dist, want - 1)[want - 1]
            cand = np.flatnonzero(dist <= kth)
            order = cand[np.lexsort((keys[cand], dist[cand]))][:want]
        else:
            order = np.lexsort((keys, dist))
        return list(zip(keys[order].tolist(), dist[order].tolist()))

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the stored ``(keys, vectors)``, in row order."""
        with self._lock:
            return self._keys[: self._size].copy(), self._vectors[: self._size].copy()


# -- HNSW -------------------------------------------------------------------------------------


class HnswIndex:
    """Approximate search with usearch's HNSW graph (``metric="l2sq"``, ``dtype="f32"``).

    ``connectivity`` (M), ``expansion_add`` (efConstruction) and ``expansion_search`` (ef) are
    explained at :data:`DEFAULT_CONNECTIVITY`; ``expansion_search`` can be changed at any time.
    ``build_threads`` is the number of threads for :meth:`add_many` (0: all cores). It defaults
    to 1 because usearch's parallel insertion leaves a few vectors unreachable: with 2 threads,
    5 to 12 of 20k vectors (and 2 to 8 of 4097) are not found even when searching for their own
    vector, against none single-threaded; a case that can never come back as a precedent is a
    silent defect, while a parallel build only halves the rebuild time (1M cases: 146 s on two
    threads). Single adds and searches always run on the calling thread (``threads=1``): for one query usearch's
    thread pool only adds start-up cost (measured p99 0.9 ms with 1 thread against 4.3 ms with
    the default at 50k vectors).

    Replacing a key is remove-then-add (usearch rejects duplicate keys with ``multi=False``).
    A removed vector stays in the graph as a tombstone that searches route through but never
    return; its slot is reused by later adds. Case vectors are never changed once written, so
    tombstones stay rare; a rebuild from the store clears them.

    Thread safety, from usearch's source and docs (checked against 2.26): the Python binding
    documents its ``Index`` as "single-threaded from Python's perspective - one Python thread
    per index at a time" (``python/scripts/test_gil_release.py``). The native index keeps
    per-thread scratch space (visited sets, cast buffers) indexed by a worker number that the
    binding picks per call, so two Python threads each searching with ``threads=1`` would both
    use slot 0, and an add may grow (reallocate) the node arrays while a search walks them.
    Recent bindings take a per-index mutex around every call that releases the GIL, which
    makes concurrent calls serialise instead of corrupting memory, but older releases within
    our version range did not (issue unum-cloud/USearch#441 reports memory corruption from
    concurrent add/search/remove). So we hold our own lock around every call into usearch:
    correct on every version, and no slower on recent ones, which serialise anyway. A lookup
    takes well under a millisecond, so serialising them costs little; bulk adds are chunked
    (:data:`_ADD_CHUNK`) so lookups can interleave with a long rebuild.
    """

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = DEFAULT_CONNECTIVITY,
        expansion_add: int = DEFAULT_EXPANSION_ADD,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        build_threads: int = 1,
    ) -> None:
        self.dim = _check_dim(dim)
        self.build_threads = int(build_threads)
        self._index = Index(
            ndim=self.dim,
            metric="l2sq",
            dtype="f32",
            connectivity=int(connectivity),
            expansion_add=int(expansion_add),
            expansion_search=int(expansion_search),
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        try:
            k = _check_key(key)
        except (TypeError, ValueError):
            return False
        with self._lock:
            return bool(self._index.contains(k))

    def __repr__(self) -> str:
        return (
            f"HnswIndex(dim={self.dim}, size={len(self)}, connectivity={self.connectivity}, "
            f"expansion_add={self._index.expansion_add}, expansion_search={self.expansion_search})"
        )

    @property
    def connectivity(self) -> int:
        return int(self._index.connectivity)

    @property
    def expansion_search(self) -> int:
        return int(self._index.expansion_search)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        with self._lock:
            self._index.expansion_search = int(value)

    @property
    def memory_usage(self) -> int:
        """Bytes held by the graph and vectors, as usearch reports them."""
        return int(self._index.memory_usage)

    def add(self, key: int, vector: VectorLike) -> None:
        k = _check_key(key)
        vec = _as_vector(vector, self.dim)
        with self._lock:
            if self._index.contains(k):
                self._index.remove(k)
            self._index.add(k, vec, threads=1)

    def add_many(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        karr, varr = _as_batch(keys, vectors, self.dim)
        for start in range(0, karr.size, _ADD_CHUNK):
            ck = karr[start : start + _ADD_CHUNK]
            cv = varr[start : start + _ADD_CHUNK]
            with self._lock:
                if len(self._index):
                    present = np.asarray(self._index.contains(ck), dtype=bool)
                    if present.any():
                        self._index.remove(ck[present])
                self._index.add(ck, cv, threads=self.build_threads)

    def remove(self, key: int) -> None:
        k = _check_key(key)
        with self._lock:
            self._index.remove(k)

    def search(self, vector: VectorLike, k: int) -> list[tuple[int, float]]:
        query = _as_vector(vector, self.dim)
        want = _check_k(k)
        if want == 0:
            return []
        with self._lock:
            if len(self._index) == 0:
                return []
            matches = self._index.search(query, want, threads=1)
        return list(zip(matches.keys.tolist(), matches.distances.tolist()))


# -- exact while small, HNSW once large -------------------------------------------------------


class AdaptiveIndex:
    """Exact while it holds at most ``exact_below`` vectors, HNSW from then on.

    Built by :func:`make_index`. When an add takes it past ``exact_below``, it builds an
    :class:`HnswIndex` from the exact index's contents (a bulk add: tens of milliseconds at the
    default 4096) and swaps it in. Lookups are not held up meanwhile: writers serialise on this
    index's lock, but a search only reads the current inner index, so during a switch it keeps
    answering from the exact index, which no writer touches until the HNSW one has replaced it.
    It does not switch back when removals shrink it: flapping between the two near the
    threshold would rebuild the graph over and over, and HNSW at that size is near-exact anyway.
    """

    def __init__(self, dim: int, *, exact_below: int = 4096, **hnsw_options: Any) -> None:
        self.dim = _check_dim(dim)
        below = operator.index(exact_below)
        if below < 0:
            raise ValueError(f"exact_below must be non-negative, got {below}")
        self.exact_below = below
        self._hnsw_options = hnsw_options
        # Fail now, not at the switch-over, on options HnswIndex does not take.
        HnswIndex(self.dim, **hnsw_options)
        self._inner: ExactIndex | HnswIndex = ExactIndex(self.dim)
        self._write_lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """True while answers come from brute force."""
        return isinstance(self._inner, ExactIndex)

    @property
    def inner(self) -> ExactIndex | HnswIndex:
        return self._inner

    def __len__(self) -> int:
        return len(self._inner)

    def __contains__(self, key: object) -> bool:
        return key in self._inner

    def __repr__(self) -> str:
        return f"AdaptiveIndex(exact_below={self.exact_below}, inner={self._inner!r})"

    def _switch(self, exact: ExactIndex) -> HnswIndex:
        hnsw = HnswIndex(self.dim, **self._hnsw_options)
        keys, vectors = exact.snapshot()
        hnsw.add_many(keys, vectors)
        self._inner = hnsw
        return hnsw

    def add(self, key: int, vector: VectorLike) -> None:
        with self._write_lock:
            inner = self._inner
            inner.add(key, vector)
            if isinstance(inner, ExactIndex) and len(inner) > self.exact_below:
                self._switch(inner)

    def add_many(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        karr, varr = _as_batch(keys, vectors, self.dim)
        with self._write_lock:
            inner = self._inner
            if isinstance(inner, ExactIndex):
                fresh = karr.size if karr.size > self.exact_below else sum(k not in inner for k in karr.tolist())
                if len(inner) + fresh > self.exact_below:
                    inner = self._switch(inner)
            inner.add_many(karr, varr)

    def remove(self, key: int) -> None:
        with self._write_lock:
            self._inner.remove(key)

    def search(self, vector: VectorLike, k: int) -> list[tuple[int, float]]:
        return self._inner.search(vector, k)


def make_index(dim: int, *, exact_below: int = 4096, **hnsw_options: Any) -> VectorIndex:
    """A :class:`VectorIndex` for ``dim``-wide vectors: exact up to ``exact_below`` vectors,
    HNSW beyond (see :class:`AdaptiveIndex`). ``hnsw_options`` go to :class:`HnswIndex`
    (``connectivity``, ``expansion_add``, ``expansion_search``, ``build_threads``)."""
    return AdaptiveIndex(dim, exact_below=exact_below, **hnsw_options)


# -- saving and restoring (memory snapshots) --------------------------------------------------


def dump_index(index: VectorIndex) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """What restores ``index`` (an :class:`AdaptiveIndex` from :func:`make_index`), as plain
    data: settings, then either the exact index's ``(keys, vectors)`` or usearch's own saved
    graph as bytes (``uint8``) and an empty key array. No pickle: arrays and numbers only."""
    if not isinstance(index, AdaptiveIndex):
        raise TypeError(f"only indexes made by make_index can be saved, not {type(index).__name__}")
    with index._write_lock:
        inner = index._inner
        meta: dict[str, Any] = {"dim": index.dim, "exact_below": index.exact_below, "options": dict(index._hnsw_options)}
        if isinstance(inner, ExactIndex):
            keys, vectors = inner.snapshot()
            return {**meta, "kind": "exact"}, keys, vectors
        with inner._lock:
            blob = inner._index.save()
            expansion_search = int(inner._index.expansion_search)
        assert blob is not None
        meta.update(kind="hnsw", expansion_search=expansion_search, size=len(inner))
        return meta, np.empty(0, dtype=np.uint64), np.frombuffer(bytes(blob), dtype=np.uint8)


def restore_index(meta: dict[str, Any], keys: np.ndarray, data: np.ndarray) -> AdaptiveIndex:
    """The index :func:`dump_index` saved; ``ValueError`` when the saved data does not hold up."""
    index = AdaptiveIndex(int(meta["dim"]), exact_below=int(meta["exact_below"]), **meta["options"])
    if meta["kind"] == "exact":
        index._inner.add_many(keys, data)
        return index
    if meta["kind"] != "hnsw":
        raise ValueError(f"unknown index kind {meta['kind']!r}")
    hnsw = HnswIndex(index.dim, **meta["options"])
    restored = Index.restore(np.ascontiguousarray(data, dtype=np.uint8))  # read in place: no copy to bytes
    if restored is None or restored.ndim != index.dim or len(restored) != int(meta["size"]):
        raise ValueError("the saved HNSW graph does not match its description")
    restored.expansion_search = int(meta["expansion_search"])
    hnsw._index = restored
    index._inner = hnsw
    return index
