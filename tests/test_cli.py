"""The command line through click's CliRunner (and one real subprocess): exit codes, JSON on stdout only."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hashdup.cli import cli, main


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, args):
    """Invoke through main() so that the exit codes are those of the console script."""
    return runner.invoke(_Main(), args)


class _Main:
    """Adapter making ``main`` look like a click command for CliRunner, so HashdupError → exit 1 is exercised."""

    name = "hashdup"

    def main(self, args=None, prog_name=None, **kwargs):
        main(list(args))


def test_index_then_dedup_query_info(runner, built_index, tmp_path):
    images, _ = built_index
    idx = str(tmp_path / "idx")
    r = run(runner, ["index", str(images), "--index", idx])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""  # stdout is data only; index prints nothing there
    assert "skipped" in r.stderr and "truncated.jpg" in r.stderr and "notes.jpg" in r.stderr
    assert "indexed 21 of 23" in r.stderr

    r = run(runner, ["dedup", "--index", idx])
    assert r.exit_code == 0
    groups = json.loads(r.stdout)
    assert len(groups) == 7 and set(groups[0]) == {"group", "keep", "paths", "max_distance"}

    r = run(runner, ["dedup", "--index", idx, "--jsonl", "--radius", "0", "--no-verify"])
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(g["max_distance"] == 0 for g in lines)
    assert any(g["paths"][0].endswith("grace_hopper_copy.jpg") for g in lines)

    q = str(images / "photos" / "chelsea.jpg")
    r = run(runner, ["query", q, "-k", "3", "--index", idx])
    rows = json.loads(r.stdout)
    assert r.exit_code == 0 and [row["rank"] for row in rows] == [1, 2, 3]
    assert rows[0]["path"].endswith("copies/chelsea_q30.jpg") and rows[0]["query"] == q

    r = run(runner, ["query", q, "-k", "3", "--index", idx, "--table"])
    assert r.stdout.splitlines()[0].split() == ["query", "rank", "distance", "path"]
    assert len(r.stdout.splitlines()) == 5

    r = run(runner, ["query", q, "-k", "1", "--radius", "30", "--index", idx, "--jsonl"])
    assert [json.loads(line)["path"][-len("chelsea_q30.jpg"):] for line in r.stdout.splitlines()] == ["chelsea_q30.jpg"]
    r = run(runner, ["query", q, "--radius", "30", "--index", idx, "--jsonl"])
    within = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(within) > 1 and all(row["distance"] <= 30 for row in within)

    r = run(runner, ["dedup", "--index", idx, "--table"])  # one member per line, the keeper marked
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["group", "keep", "match", "distance", "path"] and len(lines) == 2 + 14
    keepers = [ln.split() for ln in lines[2:] if ln.split()[1] == "*"]
    assert [k[0] for k in keepers] == [str(g) for g in range(1, 8)]  # each group's first line is its keeper
    assert all(k[-1].split("/")[-2] == "photos" for k in keepers)

    r = run(runner, ["info", "--index", idx])
    info = json.loads(r.stdout)
    assert info["indexed"] == 21 and info["encoder"]["n_bits"] == 64 and len(info["skipped"]) == 2


def test_query_with_a_bad_image_exits_1_but_answers_the_rest(runner, built_index):
    images, index_dir = built_index
    r = run(runner, ["query", str(images / "photos" / "coffee.jpg"), str(images / "bad" / "notes.jpg"),
                     "--index", str(index_dir), "--jsonl"])
    assert r.exit_code == 1
    assert "notes.jpg: not an image" in r.stderr
    assert len(r.stdout.splitlines()) == 12 and all(json.loads(x)["query"].endswith("coffee.jpg")
                                                   for x in r.stdout.splitlines())


@pytest.mark.parametrize("args", [
    ["index"],
    ["index", "/definitely/not/here"],
    ["index", ".", "--bits", "4"],
    ["index", ".", "--encoder", "nope"],
    ["query"],
    ["query", "x.jpg", "-k", "0"],
    ["dedup", "--radius", "-1"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(runner, args):
    r = run(runner, args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""


def test_missing_index_exits_1(runner, tmp_path):
    for cmd in (["dedup"], ["info"], ["query", "x.jpg"]):
        r = run(runner, [*cmd, "--index", str(tmp_path / "none")])
        assert r.exit_code == 1
        assert "no index at" in r.stderr and r.stdout == ""


def test_corrupt_index_exits_1_naming_the_file(runner, tmp_path, sample_dir):
    idx = tmp_path / "idx"
    assert run(runner, ["index", str(sample_dir / "photos"), "--index", str(idx), "-q"]).exit_code == 0
    codes = next(idx.glob("codes-*.hdc"))
    codes.write_bytes(codes.read_bytes()[:-3])
    r = run(runner, ["dedup", "--index", str(idx)])
    assert r.exit_code == 1 and codes.name in r.stderr


def test_index_folder_from_environment(runner, tmp_path, sample_dir, monkeypatch):
    monkeypatch.setenv("HASHDUP_INDEX", str(tmp_path / "envidx"))
    r = run(runner, ["index", str(sample_dir / "copies"), "-q", "--descriptor", "color", "--bits", "32"])
    assert r.exit_code == 0 and r.stderr == ""
    assert json.loads(run(runner, ["info"]).stdout)["descriptor"]["name"] == "color"


def test_help_has_examples(runner):
    for cmd in ("index", "query", "dedup", "info"):
        r = runner.invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.output


def test_python_dash_m_and_exit_status(tmp_path, sample_dir):
    env = {**os.environ, "HASHDUP_INDEX": str(tmp_path / "idx")}
    p = subprocess.run([sys.executable, "-m", "hashdup", "index", str(sample_dir / "copies")], env=env,
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == "" and "indexed 7 of 7" in p.stderr
    p = subprocess.run([sys.executable, "-m", "hashdup", "dedup", "--radius", "0"], env=env, capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout) == []
    p = subprocess.run([sys.executable, "-m", "hashdup", "query", "--bogus"], env=env, capture_output=True, text=True)
    assert p.returncode == 2


def test_bad_descriptor_size_is_a_usage_error(runner, sample_dir, tmp_path):
    r = run(runner, ["index", str(sample_dir / "copies"), "--image-size", "100", "--index", str(tmp_path / "i")])
    assert r.exit_code == 2 and "--image-size" in r.stderr and not (tmp_path / "i").exists()


def test_non_utf8_file_names_come_out_as_their_bytes(runner, tmp_path, sample_dir):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = (sample_dir / "photos" / "chelsea.jpg").read_bytes()
    (imgs / os.fsdecode(b"caf\xe9.jpg")).write_bytes(src)
    (imgs / "copy.jpg").write_bytes(src)
    assert run(runner, ["index", str(imgs), "--index", str(tmp_path / "i"), "-q"]).exit_code == 0
    r = run(runner, ["dedup", "--index", str(tmp_path / "i"), "--jsonl"])
    assert r.exit_code == 0
    r.stdout_bytes.decode("utf-8")  # valid UTF-8 ...
    paths = json.loads(r.stdout)["paths"]  # ... and valid JSON whose strings give back the original bytes
    assert os.fsencode(paths[0]).endswith(b"/caf\xe9.jpg")


def test_os_errors_exit_1_with_the_path(runner, tmp_path, sample_dir):
    (tmp_path / "afile").write_text("x")
    r = run(runner, ["index", str(sample_dir / "copies"), "--index", str(tmp_path / "afile" / "idx")])
    assert r.exit_code == 1 and "afile" in r.stderr and "Traceback" not in r.output


def test_progress_bar_only_on_a_terminal(tmp_path, sample_dir):
    """The progress bar (rich) draws on stderr when it is a terminal (here a pseudo-terminal), never with --quiet."""
    import fcntl
    import pty
    import struct
    import termios

    def stderr_of(*extra):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
        p = subprocess.Popen([sys.executable, "-m", "hashdup", "index", str(sample_dir / "copies"),
                              "--index", str(tmp_path / "i"), *extra], stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        out, _ = p.communicate()
        os.close(master)
        assert p.returncode == 0 and out == b""
        return b"".join(chunks).decode(errors="replace")

    shown = stderr_of()
    assert "describing" in shown and "images" in shown and "7/7" in shown and "indexed 7 of 7" in shown
    assert stderr_of("--quiet") == ""


def test_tables_escape_control_characters_in_names(runner, tmp_path, sample_dir):
    """A file name with a newline, a tab or a terminal escape cannot break a table or drive the terminal."""
    src = sample_dir / "photos" / "chelsea.jpg"
    (tmp_path / "imgs").mkdir()
    names = ["a\nb.jpg", "tab\there.jpg", "esc\x1b[31mred.jpg"]
    for name in names:
        shutil.copy(src, tmp_path / "imgs" / name)
    idx = str(tmp_path / "idx")
    assert run(runner, ["index", str(tmp_path / "imgs"), "--index", idx, "-q"]).exit_code == 0
    r = run(runner, ["dedup", "--index", idx, "--table"])
    lines = r.stdout.splitlines()
    assert len(lines) == 2 + 3 and "\x1b" not in r.stdout and "\t" not in r.stdout
    assert {ln.split()[-1].rsplit("/", 1)[-1] for ln in lines[2:]} == \
        {"a\\nb.jpg", "tab\\there.jpg", "esc\\x1b[31mred.jpg"}
    r = run(runner, ["dedup", "--index", idx, "--jsonl"])  # JSON keeps the names exact
    assert {p.rsplit("/", 1)[-1] for p in json.loads(r.stdout)["paths"]} == set(names)


def test_impossible_encoder_settings_are_refused_before_any_image_is_read(runner, tmp_path, sample_dir):
    idx = tmp_path / "idx"
    r = run(runner, ["index", str(sample_dir), "--index", str(idx), "--encoder", "pca", "--bits", "1024"])
    assert r.exit_code == 2 and "--bits" in r.output and "n_bits ≤ n_features" in r.output
    assert not idx.exists()
    assert run(runner, ["index", str(sample_dir), "--index", str(idx), "--encoder", "spectral", "--bits", "1024",
                        "--workers", "1", "-q"]).exit_code == 0  # spectral hashing may exceed the feature count


def test_a_malformed_labels_or_pairs_file_is_refused_before_any_image_is_read(runner, tmp_path, sample_dir):
    """Before: the CSV was read only to train the encoder, after every image was described."""
    bad = tmp_path / "bad.csv"
    bad.write_text("one field only\n")
    idx = tmp_path / "idx"
    r = run(runner, ["index", str(sample_dir), "--index", str(idx), "--encoder", "itml", "--labels", str(bad)])
    assert r.exit_code == 1 and "bad.csv:1: expected 2 comma-separated fields" in r.output and not idx.exists()
    bad.write_text("a.jpg,b.jpg,alike\n")
    r = run(runner, ["index", str(sample_dir), "--index", str(idx), "--encoder", "itml", "--pairs", str(bad)])
    assert r.exit_code == 1 and "'similar' or 'dissimilar'" in r.output and not idx.exists()
