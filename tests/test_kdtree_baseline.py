"""The ``kdtree`` row of hashdup eval: a kd-tree's ranking against a brute-force numpy oracle, its metrics against the
exact scan's, and the row in the command's output."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial import cKDTree

from hashdup.cli import cli
from hashdup.evaluation import euclidean_metrics, evaluate, kdtree_knn, kdtree_metrics

from .oracles import oracle_knn


def brute_distances(Xq, Xdb):
    """Euclidean distances from the definition (differences, not the |q|^2 + |x|^2 - 2 q.x expansion): (nq, n)."""
    return np.sqrt(((Xq[:, None, :] - Xdb[None, :, :]) ** 2).sum(axis=2))


def average_precisions(D, rel, top=100):
    """mAP and precision@top straight from the definitions, ranking by (distance, database row)."""
    aps, pts = [], []
    for q in range(D.shape[0]):
        order = sorted(range(D.shape[1]), key=lambda i: (D[q, i], i))
        hits, ap = 0, 0.0
        for rank, i in enumerate(order, start=1):
            if rel[q, i]:
                hits += 1
                ap += hits / rank
        aps.append(ap / max(rel[q].sum(), 1))
        pts.append(sum(rel[q, i] for i in order[:top]) / min(top, D.shape[1]))
    return np.mean(aps), np.mean(pts)


def grid_points(n, d, seed):
    """Small integers: exact distances in float64, many of them equal (ties), some rows repeated."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (n, d)).astype(np.float64)
    X[rng.choice(n, n // 5, replace=False)] = X[rng.choice(n, n // 5, replace=False)]
    return X


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 7, 90])
def test_kdtree_knn_equals_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    Xq, Xdb = rng.standard_normal((15, 6)), rng.standard_normal((90, 6))
    D, I = kdtree_knn(cKDTree(Xdb), Xq, k)
    assert D.shape == I.shape == (15, k) and D.dtype == np.float64 and I.dtype == np.int64
    B = brute_distances(Xq, Xdb)
    np.testing.assert_allclose(D, np.sort(B, axis=1)[:, :k], rtol=1e-12)  # the k smallest distances, in order
    np.testing.assert_allclose(np.take_along_axis(B, I, axis=1), D, rtol=1e-12)  # ids at those distances
    _, Io = oracle_knn(B, k)
    gap = np.diff(np.sort(B, axis=1), axis=1)
    untied = np.ones((15, k), bool)  # a rank whose distance is within 1e-9 of a neighbour's may hold either item
    untied[:, 1:] &= gap[:, : k - 1] > 1e-9
    untied[:, : min(k, 89)] &= gap[:, : min(k, 89)] > 1e-9
    assert untied.mean() > 0.9 and (I[untied] == Io[untied]).all()


@pytest.mark.parametrize("seed", range(3))
def test_kdtree_knn_orders_ties_by_database_row(seed):
    Xq, Xdb = grid_points(12, 4, seed), grid_points(80, 4, seed + 10)
    B = ((Xq[:, None, :] - Xdb[None, :, :]) ** 2).sum(axis=2)  # exact integers
    assert (np.diff(np.sort(B, axis=1), axis=1) == 0).mean() > 0.5  # mostly ties
    D, I = kdtree_knn(cKDTree(Xdb), Xq, 80)
    assert np.array_equal(I, np.argsort(B, axis=1, kind="stable"))
    assert np.array_equal(D, np.sqrt(np.take_along_axis(B, I, axis=1)))


@pytest.mark.parametrize("data", ["gaussian", "grid"])
def test_kdtree_metrics_equal_the_exact_row(data):
    rng = np.random.default_rng(7)
    if data == "gaussian":
        Xq, Xdb = rng.standard_normal((40, 8)), rng.standard_normal((300, 8))
    else:
        Xq, Xdb = grid_points(40, 5, 1), grid_points(300, 5, 2)
    yq, ydb = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    m, p100 = kdtree_metrics(cKDTree(Xdb), Xq, yq, ydb)
    em, ep100 = euclidean_metrics(Xq, Xdb, yq, ydb)
    om, op100 = average_precisions(brute_distances(Xq, Xdb), yq[:, None] == ydb[None, :])
    assert m == pytest.approx(om, rel=1e-12) and p100 == pytest.approx(op100, rel=1e-12)
    assert m == pytest.approx(em, rel=1e-12) and p100 == pytest.approx(ep100, rel=1e-12)


def test_fewer_database_items_than_k():
    rng = np.random.default_rng(3)
    Xq, Xdb = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    D, I = kdtree_knn(cKDTree(Xdb), Xq, 7)
    assert D.shape == I.shape == (5, 7)
    assert (I[:, 4:] == -1).all() and np.isinf(D[:, 4:]).all()
    full_D, full_I = kdtree_knn(cKDTree(Xdb), Xq, 4)
    assert (I[:, :4] == full_I).all() and (D[:, :4] == full_D).all()
    assert sorted(I[0, :4]) == [0, 1, 2, 3]
    one_D, one_I = kdtree_knn(cKDTree(Xdb[:1]), Xq, 3)  # a database of one: scipy returns 1-d arrays for k = 1
    assert (one_I == [[0, -1, -1]] * 5).all() and np.isfinite(one_D[:, 0]).all()
    # precision@100 over a database of 30 is the precision of all 30, as for the exact scan
    yq, Xdb30, ydb30 = rng.integers(0, 2, 5), rng.standard_normal((30, 3)), rng.integers(0, 2, 30)
    m, p100 = kdtree_metrics(cKDTree(Xdb30), Xq, yq, ydb30)
    assert (m, p100) == pytest.approx(euclidean_metrics(Xq, Xdb30, yq, ydb30), rel=1e-12)
    assert p100 == pytest.approx(np.mean([(ydb30 == c).mean() for c in yq]))


def test_kdtree_knn_refuses_bad_input():
    tree = cKDTree(np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"\(nq, 4\).*\(3, 5\)"):
        kdtree_knn(tree, np.zeros((3, 5)), 2)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        kdtree_knn(tree, np.zeros((3, 4)), 0)
    with pytest.raises(ValueError, match=r"\(10,\).*\(9,\)"):
        kdtree_metrics(tree, np.zeros((3, 4)), np.zeros(3, int), np.zeros(9, int))


def _blobs(n, d, k=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return rng.standard_normal((k, d))[y] * 1.5 + rng.standard_normal((n, d)), y


def test_evaluate_reports_the_kdtree_row():
    X, y = _blobs(500, 12)
    rows = evaluate(X, y, ["lsh"], [16], n_queries=60, seed=1)
    assert [(r.encoder, r.bits) for r in rows] == [("euclidean", 0), ("kdtree", 0), ("lsh", 16)]
    exact, kd = rows[0], rows[1]
    assert kd.map == pytest.approx(exact.map, rel=1e-12) and kd.p_at_100 == pytest.approx(exact.p_at_100, rel=1e-12)
    assert kd.p_at_r2 is None and kd.pr is None
    assert 0 < kd.fit_s < 60 and 0 < kd.encode_s < 60  # build and query times, seconds
    assert evaluate(X, y, [], [], n_queries=60, seed=1, euclidean=False)[0].map == kd.map
    tiny = evaluate(X[:6], y[:6], [], [], n_queries=4, seed=0)  # a database of 2: fewer items than top = 100
    assert [r.encoder for r in tiny] == ["euclidean", "kdtree"] and tiny[1].map == pytest.approx(tiny[0].map)


def test_eval_command_prints_the_kdtree_row(tmp_path):
    X, y = _blobs(2000, 32)  # big enough that ranking 1,800 items for 200 queries takes well over a millisecond
    np.savez(tmp_path / "f.npz", X=X, y=y)
    args = ["eval", "--features", str(tmp_path / "f.npz"), "--encoder", "lsh", "--bits", "8", "--queries", "200", "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(row["encoder"], row["bits"]) for row in rows] == [("euclidean", 0), ("kdtree", 0), ("lsh", 8)]
    kd = rows[1]
    assert kd["map"] == rows[0]["map"] and kd["p_at_100"] == rows[0]["p_at_100"] and kd["p_at_r2"] is None
    assert math.isfinite(kd["encode_s"]) and kd["encode_s"] > 0 and math.isfinite(kd["fit_s"]) and kd["fit_s"] >= 0

    table = CliRunner().invoke(cli, [*args, "--table"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    header = lines[0].split()
    assert header == ["encoder", "bits", "map", "p_at_r2", "p_at_100", "fit_s", "encode_s"]
    body = [dict(zip(header, line.split(), strict=True)) for line in lines[2:]]
    assert [row["encoder"] for row in body] == ["euclidean", "kdtree", "lsh"]
    assert body[1]["p_at_r2"] == "-" and body[1]["map"] == body[0]["map"]
    assert math.isfinite(float(body[1]["encode_s"])) and float(body[1]["encode_s"]) > 0

    skipped = CliRunner().invoke(cli, [*args, "--no-kdtree"])
    assert [row["encoder"] for row in json.loads(skipped.stdout)] == ["euclidean", "lsh"]
