"""ListOps: generator (deterministic, distinct, bounded, values checked by an
independent evaluator), official TSV files (round trip, CRLF/LF, strict errors naming
file and line), discovery, tokeniser / padding / one-hot, and the ``listops`` TFDS
builder (from fixture files in the official layout and from generation) read without
TensorFlow, batching exactly like the file-backed `ListOpsArrays`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from elm_jax.tasks.lra import listops as L

TINY = {"min_length": 5, "max_length": 60}


# ------------------------------------------------------------------ independent evaluator
def _parse(source: str):
    """The bracketed string -> the original's nested 2-tuples (a stack of paren lists)."""
    stack: list[list] = [[]]
    for tok in source.split():
        if tok == "(":
            stack.append([])
        elif tok == ")":
            items = stack.pop()
            assert len(items) == 2, source
            stack[-1].append(tuple(items))
        else:
            stack[-1].append(int(tok) if tok.isdigit() else tok)
    assert len(stack) == 1 and len(stack[0]) == 1, source
    return stack[0][0]


def _value(t):
    """The original's semantics: an operator with its first argument is an unsaturated
    function, each further pair adds an argument, ``]`` applies it (numpy ops)."""
    if not isinstance(t, tuple):
        return t
    left, right = _value(t[0]), _value(t[1])
    if left in L.OPERATORS:
        return (left, [right])
    if right == "]":
        op, args = left
        fn = {"[MIN": np.min, "[MAX": np.max, "[MED": lambda a: int(np.median(a)),
              "[SM": lambda a: int(np.sum(a)) % 10}[op]
        return int(fn(args))
    return (left[0], left[1] + [right])


def reference_value(source: str) -> int:
    return _value(_parse(source))


# ------------------------------------------------------------------ vocabulary, encoding
def test_vocab_and_one_hot():
    assert L.VOCAB[0] == "<pad>" and L.VOCAB[1:11] == tuple("0123456789")
    assert L.VOCAB[11:] == ("[MIN", "[MAX", "[MED", "[SM", "]")
    assert L.NUM_TOKENS == 16 and L.INPUT_DIM == 15
    ids = L.tokenize("( ( ( [MAX 2 ) 9 ) ] )")
    assert ids.dtype == np.int32 and ids.tolist() == [12, 3, 10, 15]
    oh = L.one_hot(np.array([[0, 1, 15]]))
    assert oh.shape == (1, 3, 15) and oh.dtype == np.float32
    assert not oh[0, 0].any() and oh[0, 1, 0] == 1 and oh[0, 2, 14] == 1
    assert oh.sum() == 2
    with pytest.raises(L.ListOpsFormatError, match="'foo'"):
        L.tokenize("( [MAX 2 foo ] )")


def test_encode_pads_with_zero_and_truncates():
    sources = ["[MIN 1 2 ]", "( [SM 3 ( [MAX 4 5 ] ) 6 ] )", "7"]
    tokens, lengths = L.encode(sources)
    assert tokens.shape == (3, 8) and tokens.dtype == np.int32
    assert lengths.tolist() == [4, 8, 1] and lengths.dtype == np.int32
    for row, n in zip(tokens, lengths):
        assert (row[n:] == 0).all() and (row[:n] > 0).all()
    np.testing.assert_array_equal(tokens[1, :8], L.tokenize(sources[1]))
    assert not L.one_hot(tokens)[0, 4:].any()
    padded, _ = L.encode(sources, pad_to=10)
    assert padded.shape == (3, 10)
    np.testing.assert_array_equal(padded[:, :8], tokens)
    with pytest.raises(ValueError, match="pad_to"):
        L.encode(sources, pad_to=5)
    cut, cut_len = L.encode(sources, max_length=5, pad_to=5)
    assert cut_len.tolist() == [4, 5, 1]
    np.testing.assert_array_equal(cut, tokens[:, :5])
    empty, empty_len = L.encode([], pad_to=3)
    assert empty.shape == (0, 3) and empty_len.shape == (0,)


# ------------------------------------------------------------------ generator
def test_tree_string_tokens_and_value():
    assert L.tree_to_string(L._fold("[MAX", [2, 9, 4])) == "( ( ( ( [MAX 2 ) 9 ) 4 ) ] )"
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(400):
        tree, length = L.generate_tree(rng, max_depth=6, max_args=5)
        source = L.tree_to_string(tree)
        toks = [t for t in source.split() if t not in "()"]
        assert len(toks) == length == len(L.tree_tokens(tree))
        assert len(L.tokenize(source)) == length
        assert L.evaluate(tree) == reference_value(source)
        assert _parse(source) == tree
        checked += length > 1
    assert checked > 50
    # abandoning a tree once it must exceed the limit
    outcomes = set()
    for seed in range(40):
        tree, bound = L.generate_tree(seed, abort_above=30)
        full, length = L.generate_tree(seed)               # same draws, not abandoned
        if tree is None:
            assert 30 < bound <= length
        else:
            assert tree == full and bound == length <= 30
        outcomes.add(tree is None)
    assert outcomes == {True, False}


def test_median_and_sum_match_numpy():
    rng = np.random.default_rng(0)
    for _ in range(300):
        args = rng.integers(0, 10, rng.integers(2, 11)).tolist()
        assert L.apply_operator("[MED", args) == int(np.median(args))
        assert L.apply_operator("[SM", args) == int(np.sum(args)) % 10
        assert L.apply_operator("[MIN", args) == min(args)


def test_generate_listops_deterministic_distinct_bounded():
    rows = L.generate_listops(300, 11, **TINY)
    assert rows == L.generate_listops(300, 11, **TINY)
    assert rows != L.generate_listops(300, 12, **TINY)
    sources = [s for s, _ in rows]
    assert len(set(sources)) == 300
    for source, target in rows:
        assert 5 < len(L.tokenize(source)) < 60
        assert isinstance(target, int) and target == reference_value(source)
    assert len({t for _, t in rows}) == 10
    more = L.generate_listops(50, 11, exclude=sources[:100], **TINY)
    assert not {s for s, _ in more} & set(sources[:100])
    # the fast (string, value) builder follows the same draws as the tuple trees
    uniform, expect = L._stream(11), []
    while len(expect) < 20:
        tree, n = L._grow(uniform, 1, 10, 10, 59)
        if tree is not None and n > 5 and L.tree_to_string(tree) not in expect:
            expect.append(L.tree_to_string(tree))
    assert sources[:20] == expect
    with pytest.raises(ValueError):
        L.generate_listops(1, 0, min_length=5, max_length=6)
    with pytest.raises(RuntimeError, match="distinct"):
        L.generate_listops(10**4, 0, min_length=3, max_length=5, max_attempts=20000)


# ------------------------------------------------------------------ files
def test_tsv_round_trip_crlf_default_and_lf(tmp_path):
    rows = L.generate_listops(30, 3, **TINY)
    path = L.write_listops_tsv(tmp_path / "basic_test.tsv", rows)
    data = path.read_bytes()
    assert data.startswith(b"Source\tTarget\r\n") and data.endswith(b"\r\n")
    assert data.count(b"\r\n") == 31 and data.count(b"\n") == 31
    sources, targets = L.read_listops_tsv(path)
    assert targets.dtype == np.int32
    assert list(zip(sources, targets.tolist())) == rows
    lf = L.write_listops_tsv(tmp_path / "lf.tsv", rows, line_ending="\n")
    assert b"\r" not in lf.read_bytes()
    no_final = tmp_path / "nofinal.tsv"
    no_final.write_bytes(lf.read_bytes().rstrip(b"\n"))
    for p in (lf, no_final):
        s, t = L.read_listops_tsv(p)
        assert s == sources and t.tolist() == targets.tolist()


@pytest.mark.parametrize("body, line, match", [
    ("Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MIN 3 4 ] )\n", 3, "2 tab-separated"),
    ("Source\tTarget\n( [MAX 1 2 ] )\t12\n", 2, "0..9"),
    ("Source\tTarget\r\n( [MAX 1 2 ] )\t2\r\n( [MAX 1 x ] )\tx\r\n", 3, "0..9"),
    ("Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MAX 1 X ] )\t1\n", 3, "'X'"),
    ("source\ttarget\n( [MAX 1 2 ] )\t2\n", 1, "header"),
    ("( [MAX 1 2 ] )\t2\n", 1, "header"),
])
def test_read_errors_name_file_and_line(tmp_path, body, line, match):
    path = tmp_path / "bad_val.tsv"
    path.write_bytes(body.encode())
    with pytest.raises(L.ListOpsFormatError, match=match) as err:
        L.read_listops_tsv(path)
    assert str(path) in str(err.value) and f"line {line}:" in str(err.value)


def test_read_empty_file(tmp_path):
    (tmp_path / "e.tsv").write_bytes(b"")
    with pytest.raises(L.ListOpsFormatError, match="empty file.*header"):
        L.read_listops_tsv(tmp_path / "e.tsv")


def test_write_splits_and_find_files(tmp_path):
    files = L.write_listops_splits(tmp_path / "lra" / "listops-1000", 4, (12, 3, 3),
                                   **TINY)
    assert [p.name for p in files.values()] == [
        "basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
    read = {s: L.read_listops_tsv(p) for s, p in files.items()}
    assert [len(read[s][0]) for s in ("train", "val", "test")] == [12, 3, 3]
    every = [x for s in read.values() for x in s[0]]
    assert len(set(every)) == 18
    assert every == [s for s, _ in L.generate_listops(18, 4, **TINY)]   # split in order
    assert L.find_listops_files(tmp_path / "lra") == files             # listops-1000/
    assert L.find_listops_files(tmp_path / "lra" / "listops-1000") == files
    assert L.find_listops_files(files["val"]) == {"test": files["val"]}
    other = tmp_path / "other"
    L.write_listops_tsv(other / "deep_test.tsv", [("( [SM 1 2 ] )", 3)])
    assert L.find_listops_files(other) == {"test": other / "deep_test.tsv"}
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"_train\.tsv.*listops-1000"):
        L.find_listops_files(tmp_path / "none")
    arrays = L.ListOpsArrays.from_tsv(tmp_path / "lra", split="val")
    np.testing.assert_array_equal(arrays.labels, read["val"][1])


# ------------------------------------------------------------------ TFDS builder
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("listops_tfds")
    # official layout: <manual>/listops-1000/basic_{train,val,test}.tsv, CRLF rows
    files = L.write_listops_splits(root / "manual" / "listops-1000", 9, (16, 5, 4), **TINY)
    builder = L.prepare_listops(root / "manual", root / "data")
    return builder, root, files


def test_builder_from_official_files(built):
    builder, root, files = built
    assert "tensorflow" not in sys.modules
    assert builder.info.metadata["origin"] == "manual"
    version_dir = root / "data" / "listops" / "basic" / "1.0.0"
    assert (version_dir / "listops-train.array_record-00000-of-00001").is_file()
    sources = builder.as_data_source()
    assert set(sources) == {"train", "validation", "test"}
    for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        srcs, targets = L.read_listops_tsv(files[key])
        assert len(sources[split]) == len(srcs)
        for i, (s, t) in enumerate(zip(srcs, targets)):
            rec = sources[split][i]
            assert rec["tokens"].dtype == np.int32 and rec["label"] == t
            np.testing.assert_array_equal(rec["tokens"], L.tokenize(s))
    assert "tensorflow" not in sys.modules


def test_tfds_source_batches_equal_array_batches(built):
    builder, root, files = built
    for split, key in (("train", "train"), ("val", "val")):
        arrays = L.ListOpsArrays.from_tsv(files[key])
        for src in (L.ListOpsSource(builder, split),
                    L.ListOpsSource(root / "data", split),
                    L.ListOpsSource(root / "data" / "listops" / "basic" / "1.0.0", split)):
            assert len(src) == len(arrays)
            np.testing.assert_array_equal(src.labels, arrays.labels)
            idx = [3, 0, 4, 1]
            for kw in ({}, {"pad_to": 64}, {"max_length": 10}):
                for a, b in zip(src.batch(idx, **kw), arrays.batch(idx, **kw)):
                    assert a.dtype == b.dtype == np.int32
                    np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError):
        arrays.batch([len(arrays)])
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("manual", ["unrelated files", "missing"])
def test_builder_generates_without_manual_files(tmp_path, manual):
    if manual != "missing":
        (tmp_path / "manual").mkdir()
        (tmp_path / "manual" / "readme.txt").write_text("no listops files here")
    kw = {"seed": 2, "sizes": (6, 2, 3), **TINY}
    builder = L.prepare_listops(tmp_path / "manual", tmp_path / "data", **kw)
    assert builder.info.metadata["origin"] == "generated"
    assert builder.builder_config.name == "s2_n6-2-3_l5-60_d10_a10"
    rows = L.generate_listops(11, 2, **TINY)
    src = L.ListOpsSource(builder, "test")
    tokens, lengths, labels = src.batch(range(3))
    expect = L.encode([s for s, _ in rows[8:]])
    np.testing.assert_array_equal(tokens, expect[0])
    np.testing.assert_array_equal(lengths, expect[1])
    assert labels.tolist() == [t for _, t in rows[8:]]
    assert "tensorflow" not in sys.modules
