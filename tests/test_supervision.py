"""Labels, pairs and self-supervised edits for the learned encoders."""

import numpy as np
import pytest

from hashdup import pipeline
from hashdup.descriptors import Gist
from hashdup.errors import HashdupError
from hashdup.io import edits, images
from hashdup.supervision import (
    PathIndex,
    Supervision,
    edit_pairs,
    encode_labels,
    labels_from_csv,
    labels_from_dirs,
    pairs_from_csv,
)


@pytest.fixture
def three(tmp_path, photo_paths):
    folder = tmp_path / "imgs"
    for sub, src in zip(["cats", "cats", "mugs"], photo_paths[:3], strict=True):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / src.name).write_bytes(src.read_bytes())
    return folder, [str(p) for p in sorted(folder.rglob("*.jpg"))]


def test_labels_and_pairs_files(tmp_path, three, monkeypatch):
    _folder, paths = three
    monkeypatch.chdir(tmp_path)
    index = PathIndex(paths)
    rel = [str(__import__("os").path.relpath(p, tmp_path)) for p in paths]
    (tmp_path / "labels.csv").write_text(f"path,label\n{rel[0]},a\n\n{paths[2]},b\n")
    assert labels_from_csv(tmp_path / "labels.csv", index) == {0: "a", 2: "b"}
    (tmp_path / "pairs.csv").write_text(f"{rel[0]},{rel[1]},similar\n{rel[0]},{rel[2]},Dissimilar\n")
    pairs = pairs_from_csv(tmp_path / "pairs.csv", index)
    assert pairs.i.tolist() == [0, 0] and pairs.j.tolist() == [1, 2] and pairs.similar.tolist() == [True, False]
    (tmp_path / "bad.csv").write_text(f"{rel[0]},{rel[1]},same\n")
    with pytest.raises(HashdupError, match=r"bad\.csv:1: the third field"):
        pairs_from_csv(tmp_path / "bad.csv", index)
    (tmp_path / "unknown.csv").write_text("nope.jpg,a\n")
    with pytest.raises(HashdupError, match=r"unknown\.csv:1: nope\.jpg is not an indexed image"):
        labels_from_csv(tmp_path / "unknown.csv", index)
    (tmp_path / "short.csv").write_text(f"{rel[0]}\n")
    with pytest.raises(HashdupError, match="expected 2"):
        labels_from_csv(tmp_path / "short.csv", index)


def test_labels_from_dirs_and_encoding():
    assert labels_from_dirs(["cats/a.jpg", "mugs/b.jpg", "c.jpg"]) == {0: "cats", 1: "mugs", 2: ""}
    assert encode_labels(["mugs", "cats", "mugs"]).tolist() == [1, 0, 1]


def test_supervision_options():
    with pytest.raises(ValueError, match="at most one"):
        Supervision(labels="a.csv", labels_from_dirs=True)
    assert not Supervision().explicit and Supervision(pairs="p.csv").explicit


def test_edit_pairs(three):
    _, paths = three
    g = Gist()
    X = pipeline.describe_images(g, [images.load(p, g.image_size).pixels for p in paths])
    hashes = ["h0", "h1", "h1"]  # pretend files 1 and 2 are byte-identical: never a dissimilar pair
    t = edit_pairs(X, paths, hashes, g, pipeline.describe_images, n_edits=6, dissimilar_per_similar=20, seed=1)
    assert t.X.shape == (3 + 6, 512) and (t.X[:3] == X).all()
    sim = t.pairs.similar
    assert sim.sum() == 6 and (t.pairs.j[sim] == np.arange(3, 9)).all()
    assert set(t.pairs.i[sim].tolist()) == {0, 1, 2}
    dis_i, dis_j = t.pairs.i[~sim], t.pairs.j[~sim]
    assert len(dis_i) > 0 and (dis_i < 3).all() and (dis_j < 3).all() and (dis_i != dis_j).all()
    assert {1, 2} not in [{a, b} for a, b in zip(dis_i.tolist(), dis_j.tolist(), strict=True)]
    # an edit stays closer to its own original than to the other photos, for most kinds
    d_own = np.linalg.norm(t.X[3:] - X[t.pairs.i[sim]], axis=1)
    d_other = np.array([min(np.linalg.norm(t.X[3 + k] - X[o]) for o in range(3) if o != t.pairs.i[k])
                        for k in range(6)])
    assert (d_own < d_other).mean() >= 5 / 6
    again = edit_pairs(X, paths, hashes, g, pipeline.describe_images, n_edits=6, dissimilar_per_similar=20, seed=1)
    assert again.X.tobytes() == t.X.tobytes()


@pytest.mark.parametrize("kind", edits.EDIT_KINDS)
def test_each_edit_kind_changes_the_image_but_keeps_it(kind, photo_paths):
    data = photo_paths[0].read_bytes()
    plain = images.decode(data, 64).pixels.astype(int)
    edited = edits.decode_edited(data, 64, kind, np.random.default_rng(0)).pixels.astype(int)
    diff = np.abs(edited - plain).mean()
    if kind == "mirror":
        assert np.abs(edited - plain[:, ::-1]).mean() < 3 < diff
    else:
        assert 0.3 < diff < 60, diff
    if kind == "gray":
        assert (edited[..., 0] == edited[..., 1]).all()
    with pytest.raises(ValueError, match="unknown edit"):
        edits.decode_edited(data, 64, "sepia", np.random.default_rng(0))


def test_unsupervised_encoders_refuse_labels(three, tmp_path):
    folder, _ = three
    with pytest.raises(HashdupError, match="does not learn from labels"):
        pipeline.build_index([folder], tmp_path / "idx", supervision=Supervision(labels_from_dirs=True))


def test_index_with_itml_from_each_kind_of_supervision(three, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hashdup.cli import cli

    folder, paths = three
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.csv").write_text(f"{paths[0]},{paths[1]},similar\n{paths[0]},{paths[2]},dissimilar\n")
    runs = {
        "edits": ["--edits", "12"],
        "dirs": ["--labels-from-dirs"],
        "pairs": ["--pairs", "pairs.csv"],
    }
    for name, extra in runs.items():
        r = CliRunner().invoke(cli, ["index", str(folder), "--encoder", "itml", "--bits", "16", "--index",
                                     f"idx-{name}", *extra])
        assert r.exit_code == 0, (name, r.output)
        info = pipeline.info(pipeline.Index(tmp_path / f"idx-{name}"))
        assert info["encoder"]["name"] == "itml"
        assert info["encoder"]["training"].startswith({"edits": "self-supervised: 12 edited copies",
                                                       "dirs": "labels: 3 images in 2 classes",
                                                       "pairs": "pairs: 1 similar, 1 dissimilar"}[name])
    r = CliRunner().invoke(cli, ["index", str(folder), "--encoder", "itml", "--no-self-supervised", "--index", "x"])
    assert r.exit_code != 0 and "labels" in str(r.exception or r.output)
    r = CliRunner().invoke(cli, ["index", str(folder), "--encoder", "itml", "--labels-from-dirs", "--pairs",
                                 "pairs.csv"])
    assert r.exit_code == 2 and "at most one" in r.output
