"""hashdup eval: the metrics against slow, obvious oracles, and the command end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hashdup import bits
from hashdup.cli import cli
from hashdup.evaluation import euclidean_metrics, evaluate, hamming_metrics, split


def oracle(D, rel, radius=2, top=100):
    """Per-query loops, straight from the definitions."""
    aps, prs, pts = [], [], []
    for q in range(D.shape[0]):
        order = sorted(range(D.shape[1]), key=lambda i: (D[q, i], i))
        hits, ap = 0, 0.0
        for rank, i in enumerate(order, start=1):
            if rel[q, i]:
                hits += 1
                ap += hits / rank
        aps.append(ap / max(rel[q].sum(), 1))
        within = [i for i in range(D.shape[1]) if D[q, i] <= radius]
        prs.append(sum(rel[q, i] for i in within) / len(within) if within else 0.0)
        pts.append(sum(rel[q, i] for i in order[:top]) / min(top, D.shape[1]))
    return np.mean(aps), np.mean(prs), np.mean(pts)


@pytest.mark.parametrize("seed", range(4))
def test_hamming_metrics_equal_the_definitions(seed):
    rng = np.random.default_rng(seed)
    n_bits = 12  # short codes: many ties, and queries with nothing within radius 2
    yq, ydb = rng.integers(0, 3, 25), rng.integers(0, 3, 140)
    q_bits = rng.random((25, n_bits)) < 0.5
    db_bits = rng.random((140, n_bits)) < 0.5
    q, db = bits.pack(q_bits), bits.pack(db_bits)
    m, p_r2, p100, (precision, recall) = hamming_metrics(q, db, yq, ydb, n_bits)
    D = bits.hamming(q, db)
    rel = yq[:, None] == ydb[None, :]
    om, opr, opt = oracle(D, rel)
    assert m == pytest.approx(om) and p_r2 == pytest.approx(opr) and p100 == pytest.approx(opt)
    assert recall[-1] == pytest.approx(1.0) and precision[-1] == pytest.approx(rel.mean())
    for r in (0, 3, 7):
        assert recall[r] == pytest.approx((rel & (r >= D)).sum() / rel.sum())
    assert (np.diff(recall) >= 0).all()


def test_euclidean_metrics_equal_the_definitions():
    rng = np.random.default_rng(5)
    Xq, Xdb = rng.standard_normal((10, 4)), rng.standard_normal((60, 4))
    yq, ydb = rng.integers(0, 2, 10), rng.integers(0, 2, 60)
    D = ((Xq[:, None] - Xdb[None]) ** 2).sum(-1)
    om, _, opt = oracle(D, yq[:, None] == ydb[None, :])
    m, p100 = euclidean_metrics(Xq, Xdb, yq, ydb)
    assert m == pytest.approx(om) and p100 == pytest.approx(opt)


def test_split_is_seeded_and_disjoint():
    q, db = split(100, 10, seed=3)
    assert len(q) == 10 and len(db) == 90 and not set(q) & set(db)
    assert (split(100, 10, seed=3)[0] == q).all() and not (split(100, 10, seed=4)[0] == q).all()
    with pytest.raises(ValueError, match="queries"):
        split(10, 10, 0)


def _blobs(n=400, d=16, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * 3
    return centres[y] + rng.standard_normal((n, d)), y


def test_evaluate_ranks_structure_above_chance():
    X, y = _blobs()
    rows = evaluate(X, y, ["lsh", "pca"], [16], n_queries=50, seed=0)
    assert [(r.encoder, r.bits) for r in rows] == [("euclidean", 0), ("kdtree", 0), ("lsh", 16), ("pca", 16)]
    assert rows[0].map > 0.95  # well separated blobs
    assert rows[2].map > 0.8 and rows[3].map > 0.35  # chance is about 0.25 (pca's last bits are noise here)
    again = evaluate(X, y, ["lsh"], [16], n_queries=50, seed=0, euclidean=False, kdtree=False)
    assert [r.encoder for r in again] == ["lsh"] and again[0].map == rows[2].map


def test_eval_command_on_a_features_file(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "f.npz", X=X, y=y)
    r = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "f.npz"), "--encoder", "lsh,pca",
                                 "--bits", "8,16", "--queries", "40", "--plot", str(tmp_path / "pr.png"), "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [set(row) for row in rows] == [{"encoder", "bits", "map", "p_at_r2", "p_at_100", "fit_s", "encode_s"}] * 6
    assert [row["encoder"] for row in rows] == ["euclidean", "kdtree", "lsh", "lsh", "pca", "pca"]
    assert rows[0]["p_at_r2"] is None and rows[1]["p_at_r2"] is None
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "f.npz"), "--encoder", "lsh", "--bits", "8",
                                     "--queries", "40", "--table", "--no-euclidean", "--no-kdtree", "-q"])
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["encoder", "bits", "map", "p_at_r2", "p_at_100", "fit_s", "encode_s"]
    assert [line.split()[0] for line in lines[2:]] == ["lsh"]


@pytest.mark.parametrize("args, message", [
    (["--encoder", "nope"], "choose from"),
    (["--bits", "4"], "between 8 and 1024"),
    (["--queries", "400"], "smaller than"),
])
def test_eval_usage_errors(tmp_path, args, message):
    X, y = _blobs()
    np.savez(tmp_path / "f.npz", X=X, y=y)
    r = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "f.npz"), *args])
    assert r.exit_code == 2 and message in r.output


def test_eval_needs_labels_with_an_index(tmp_path):
    r = CliRunner().invoke(cli, ["eval", "--index", str(tmp_path / "none")])
    assert r.exit_code == 2 and "needs labels" in r.output
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 2)))
    r = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "bad.npz")])
    assert r.exit_code == 1 and "holds arrays X and y" in str(r.exception)


def test_eval_on_an_index_with_folder_labels(tmp_path, photo_paths):
    from hashdup import pipeline

    for k, src in enumerate(photo_paths[:8]):
        folder = tmp_path / "imgs" / ("even" if k % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / src.name).write_bytes(src.read_bytes())
    pipeline.build_index([tmp_path / "imgs"], tmp_path / "idx")
    r = CliRunner().invoke(cli, ["eval", "--index", str(tmp_path / "idx"), "--labels-from-dirs", "--encoder", "lsh",
                                 "--bits", "8", "--queries", "3", "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(row["encoder"], row["bits"]) for row in rows] == [("euclidean", 0), ("kdtree", 0), ("lsh", 8)]
    assert all(0 <= row["map"] <= 1 for row in rows)


def test_cli_knows_every_encoder():
    from hashdup.cli import ENCODER_NAMES
    from hashdup.encoders import ENCODERS

    assert list(ENCODERS) == ENCODER_NAMES
