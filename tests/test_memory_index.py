"""The memory's nearest-neighbour indexes: ExactIndex against a plain sorted-distance
computation, HnswIndex and make_index against ExactIndex as the reference."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import pytest

from clearance.memory.index import AdaptiveIndex, ExactIndex, HnswIndex, VectorIndex, make_index

DIM = 32

FACTORIES: dict[str, Callable[[int], VectorIndex]] = {
    "exact": ExactIndex,
    "hnsw": HnswIndex,
    "adaptive-small": make_index,  # stays exact at these sizes
    "adaptive-switched": lambda dim: make_index(dim, exact_below=0),  # HNSW from the first vector
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[int], VectorIndex]:
    return FACTORIES[request.param]


def random_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def clustered_vectors(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(clusters, dim))
    scales = rng.uniform(0.05, 0.3, size=(clusters, dim))
    c = rng.integers(0, clusters, size=n)
    return (centres[c] + rng.standard_normal((n, dim)) * scales[c]).astype(np.float32)


def brute_force(keys: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The obvious computation: every distance in float64, sorted by (distance, key)."""
    rows = []
    for key, vec in zip(keys.tolist(), vectors.astype(np.float64)):
        rows.append((float(((vec - query.astype(np.float64)) ** 2).sum()), key))
    rows.sort()
    return [(key, d) for d, key in rows[:k]]


def assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [key for key, _ in got] == [key for key, _ in want]
    for (_, dg), (_, dw) in zip(got, want):
        assert dg == pytest.approx(dw, rel=1e-5, abs=1e-5)


def recall_at(index: VectorIndex, reference: ExactIndex, queries: np.ndarray, k: int) -> float:
    hits = 0
    for q in queries:
        want = {key for key, _ in reference.search(q, k)}
        hits += len(want & {key for key, _ in index.search(q, k)})
    return hits / (k * len(queries))


# -- ExactIndex against the plain computation ---------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 300, 301, 1000])
def test_exact_matches_sorted_distances(k: int) -> None:
    vectors = random_vectors(301, seed=1)
    keys = np.random.default_rng(2).permutation(10_000)[:301]
    index = ExactIndex(DIM)
    index.add_many(keys[:150], vectors[:150])
    for key, vec in zip(keys[150:], vectors[150:]):
        index.add(int(key), vec)
    assert len(index) == 301
    for q in random_vectors(5, seed=3):
        got = index.search(q, k)
        assert len(got) == min(k, 301)
        assert_same(got, brute_force(keys, vectors, q, k))


def test_exact_breaks_ties_by_key() -> None:
    index = ExactIndex(4)
    for key in (9, 3, 7, 1):
        index.add(key, [1.0, 0.0, 0.0, 0.0])
    index.add(5, [0.0, 0.0, 0.0, 0.0])
    assert index.search([0.0, 0.0, 0.0, 0.0], 3) == [(5, 0.0), (1, 1.0), (3, 1.0)]
    assert [key for key, _ in index.search([0.0, 0.0, 0.0, 0.0], 5)] == [5, 1, 3, 7, 9]


def test_exact_remove_keeps_rows_consistent() -> None:
    vectors = random_vectors(200, seed=4)
    keys = np.arange(200)
    index = ExactIndex(DIM)
    index.add_many(keys, vectors)
    gone = set(range(0, 200, 3))
    for key in sorted(gone, reverse=True):
        index.remove(key)
    alive = np.array([k for k in range(200) if k not in gone])
    assert len(index) == len(alive)
    for q in random_vectors(5, seed=5):
        assert_same(index.search(q, 20), brute_force(alive, vectors[alive], q, 20))
    keys_snap, vecs_snap = index.snapshot()
    assert sorted(keys_snap.tolist()) == alive.tolist()
    np.testing.assert_array_equal(vecs_snap[np.argsort(keys_snap)], vectors[alive])


# -- semantics every implementation shares ------------------------------------------------------


def test_is_a_vector_index(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(DIM)
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM


def test_empty_and_small(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(DIM)
    q = random_vectors(1, seed=6)[0]
    assert len(index) == 0
    assert index.search(q, 5) == []
    vectors = random_vectors(3, seed=7)
    for key, vec in enumerate(vectors):
        index.add(key, vec)
    assert index.search(q, 0) == []
    got = index.search(q, 10)
    assert len(got) == 3
    assert_same(got, brute_force(np.arange(3), vectors, q, 10))
    assert all(isinstance(key, int) and isinstance(d, float) for key, d in got)


def test_add_existing_key_replaces(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(4)
    index.add(1, [0.0, 0.0, 0.0, 0.0])
    index.add(2, [5.0, 0.0, 0.0, 0.0])
    index.add(1, [9.0, 0.0, 0.0, 0.0])
    assert len(index) == 2
    assert index.search([9.0, 0.0, 0.0, 0.0], 5) == [(1, 0.0), (2, 16.0)]
    # Bulk: existing keys replaced, a key repeated in the batch keeps its last vector.
    index.add_many(np.array([2, 3, 3]), np.array([[1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]], dtype=np.float32))
    assert len(index) == 3
    assert index.search([0.0, 0.0, 0.0, 0.0], 3) == [(2, 1.0), (3, 9.0), (1, 81.0)]


def test_remove(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(4)
    index.remove(42)  # missing: no error
    for key in range(5):
        index.add(key, [float(key), 0.0, 0.0, 0.0])
    index.remove(0)
    index.remove(0)
    index.remove(3)
    assert len(index) == 3
    assert index.search([0.0, 0.0, 0.0, 0.0], 5) == [(1, 1.0), (2, 4.0), (4, 16.0)]
    index.add(0, [0.5, 0.0, 0.0, 0.0])  # a removed key can come back
    assert len(index) == 4
    assert index.search([0.0, 0.0, 0.0, 0.0], 2) == [(0, 0.25), (1, 1.0)]


def test_accepts_sequences_and_other_dtypes(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(3)
    index.add(np.int64(7), (1, 2, 3))
    index.add_many(np.array([8], dtype=np.int32), np.array([[1.0, 2.0, 4.0]], dtype=np.float64))
    index.add_many(np.array([], dtype=np.int64), np.empty((0, 3), dtype=np.float32))
    assert index.search([1.0, 2.0, 3.0], 2) == [(7, 0.0), (8, 1.0)]


def test_errors(factory: Callable[[int], VectorIndex]) -> None:
    index = factory(4)
    index.add(1, [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"dimension 3.*dimension 4"):
        index.add(2, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"dimension 5.*dimension 4"):
        index.search([0.0] * 5, 1)
    with pytest.raises(ValueError, match=r"dimension 3.*dimension 4"):
        index.add_many(np.array([2]), np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add_many(np.array([2, 3]), np.zeros((1, 4), dtype=np.float32))
    for bad in (math.nan, math.inf, -math.inf, 1e300):
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.add(2, [0.0, bad, 0.0, 0.0])
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.search([bad, 0.0, 0.0, 0.0], 1)
        with pytest.raises(ValueError, match="key 3 holds NaN or infinity"):
            index.add_many(np.array([2, 3]), np.array([[0, 0, 0, 0], [0, 0, bad, 0]], dtype=np.float64))
    with pytest.raises(ValueError):
        index.add(-1, [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        index.add_many(np.array([-1]), np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add(2**63, [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(TypeError):
        index.add(1.5, [0.0, 0.0, 0.0, 0.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        index.add_many(np.array([1.5]), np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        index.search([0.0, 0.0, 0.0, 0.0], -1)
    # Nothing half-applied by the failures above.
    assert len(index) == 1
    assert index.search([0.0, 0.0, 0.0, 0.0], 5) == [(1, 0.0)]


@pytest.mark.parametrize("cls", [ExactIndex, HnswIndex, make_index])
def test_bad_dim(cls: Callable[[int], VectorIndex]) -> None:
    with pytest.raises(ValueError):
        cls(0)


# -- HNSW against the exact reference -----------------------------------------------------------


def test_hnsw_recall_random() -> None:
    vectors = random_vectors(20_000, seed=11)
    keys = np.arange(20_000) * 3 + 1
    exact, hnsw = ExactIndex(DIM), HnswIndex(DIM)
    exact.add_many(keys, vectors)
    hnsw.add_many(keys, vectors)
    assert len(hnsw) == 20_000
    queries = random_vectors(200, seed=12)
    assert recall_at(hnsw, exact, queries, 10) >= 0.95
    # Distances are the true squared L2 distances of the keys returned.
    by_key = dict(zip(keys.tolist(), vectors))
    for key, d in hnsw.search(queries[0], 10):
        assert d == pytest.approx(float(((by_key[key] - queries[0]) ** 2).sum()), rel=1e-5)


def test_make_index_recall_clustered() -> None:
    vectors = clustered_vectors(20_000, seed=13)
    exact = ExactIndex(DIM)
    exact.add_many(np.arange(20_000), vectors)
    index = make_index(DIM)
    index.add_many(np.arange(15_000), vectors[:15_000])
    for key in range(15_000, 20_000, 1):  # incremental adds on top of a bulk build
        index.add(key, vectors[key])
    assert isinstance(index, AdaptiveIndex) and not index.exact
    assert len(index) == 20_000
    # Queries near stored cases (clustered_vectors with another seed would draw new centres).
    queries = vectors[np.random.default_rng(15).choice(20_000, 200)] + 0.05 * random_vectors(200, seed=16)
    assert recall_at(index, exact, queries, 10) >= 0.95


def test_make_index_is_exact_below_threshold() -> None:
    vectors = clustered_vectors(1500, seed=17)
    exact = ExactIndex(DIM)
    index = make_index(DIM, exact_below=2000)
    index.add_many(np.arange(1000), vectors[:1000])
    exact.add_many(np.arange(1000), vectors[:1000])
    for key in range(1000, 1500):
        index.add(key, vectors[key])
        exact.add(key, vectors[key])
    for key in range(0, 1500, 7):
        index.remove(key)
        exact.remove(key)
    assert isinstance(index, AdaptiveIndex) and index.exact
    assert len(index) == len(exact)
    for q in clustered_vectors(50, seed=18):
        for k in (1, 16, 2000):
            assert index.search(q, k) == exact.search(q, k)


def test_switch_over_preserves_every_key() -> None:
    vectors = clustered_vectors(301, seed=19)
    index = make_index(DIM, exact_below=200)
    assert isinstance(index, AdaptiveIndex)
    for key in range(200):
        index.add(key, vectors[key])
    index.remove(5)
    index.add(6, vectors[300])  # replaced before the switch
    index.add(5, vectors[5])  # removed then re-added
    index.remove(7)  # removed for good
    index.add(7, vectors[7])
    index.remove(7)
    assert index.exact and len(index) == 199
    index.add(200, vectors[200])
    assert index.exact and len(index) == 200  # exactly at the threshold: still exact
    index.add(201, vectors[201])
    assert not index.exact and isinstance(index.inner, HnswIndex)
    assert len(index) == 201
    expected = {key: vectors[key] for key in range(202) if key != 7}
    expected[6] = vectors[300]
    for key, vec in expected.items():
        assert key in index
        assert index.search(vec, 1) == [(key, 0.0)]
    assert 7 not in index
    # It does not switch back when removals shrink it.
    for key in range(100):
        index.remove(key)
    assert not index.exact and len(index) == 102  # 201 keys, 99 of 0..99 still there (7 went before)


def test_switch_over_by_bulk_add() -> None:
    vectors = clustered_vectors(600, seed=20)
    index = make_index(DIM, exact_below=500)
    assert isinstance(index, AdaptiveIndex)
    index.add_many(np.arange(400), vectors[:400])
    index.add_many(np.arange(300, 500), vectors[300:500])  # 100 new keys: 500, not past the threshold
    assert index.exact and len(index) == 500
    index.add_many(np.arange(450, 600), vectors[450:600])
    assert not index.exact and len(index) == 600
    for key in range(600):
        assert index.search(vectors[key], 1) == [(key, 0.0)]


def test_search_while_adding_across_the_switch() -> None:
    vectors = clustered_vectors(3000, seed=21)
    index = make_index(DIM, exact_below=1000)
    index.add_many(np.arange(500), vectors[:500])
    errors: list[BaseException] = []
    done = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                got = index.search(vectors[rng.integers(0, 500)], 8)
                distances = [d for _, d in got]
                assert len(got) == 8 and distances == sorted(distances)
                assert len({key for key, _ in got}) == 8
        except BaseException as exc:  # noqa: BLE001 - report any failure to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    try:
        for key in range(500, 3000):
            index.add(key, vectors[key])
            if key % 10 == 0:
                index.remove(key - 5)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(index) == 3000 - 250
