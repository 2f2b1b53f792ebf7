"""LRA Text (IMDB) and Retrieval (AAN): byte and character encodings, the ragged
`TokenArrays` / `PairArrays` stores, the IMDB archive/folder reader (one streaming pass,
ignored extras, strict errors naming the file), the AAN TSV reader (labels ``1`` and
``1.0``, errors naming file and line, 10,000-character then max_length truncation),
and the ``lra_text`` / ``lra_retrieval`` TFDS builders read without TensorFlow."""

from __future__ import annotations

import io
import json
import sys
import tarfile

import numpy as np
import pytest

from elm_jax.tasks.lra import text as T


# ------------------------------------------------------------------ encodings
def test_byte_encoding_is_utf8_truncated():
    text = "Café — naïve<br />ok"
    for max_length in (None, 3, 4, 5, 100):
        want = list(text.encode("utf-8"))[:max_length]
        for doc in (text, text.encode("utf-8")):
            ids = T.encode_document(doc, "bytes", max_length)
            assert ids.dtype == np.uint8 and ids.tolist() == want
    assert T.num_channels("bytes") == T.BYTE_CHANNELS == 256
    # char_limit cuts characters first (AAN), then bytes are truncated
    assert T.encode_document("éé" * 5, "bytes", 5, char_limit=2).tolist() == \
        list("éé".encode())
    with pytest.raises(ValueError, match="unknown encoding"):
        T.encode_document("x", "words", 3)
    with pytest.raises(ValueError, match="CharVocabulary"):
        T.encode_document("x", "chars", 3)


def test_char_vocabulary_order_unk_min_freq():
    corpus = ["bbbaac", "ab", "é" * 3, b"d\xc3\xa9"]           # bytes decoded as UTF-8
    # counts: b 4, a 3, é 4, c 1, d 1
    vocab = T.CharVocabulary.build(corpus, min_freq=3)
    assert vocab.chars == ("b", "é", "a") and vocab.counts == (4, 4, 3)  # ties by code
    assert vocab.size == 4 and vocab.dtype == np.uint8
    ids = vocab.encode("abcé\U0001F600")
    assert ids.dtype == np.uint8 and ids.tolist() == [3, 1, 0, 2, 0]
    assert T.encode_document("abcé", "chars", 2, vocab).tolist() == [3, 1]
    assert T.num_channels("chars", vocab) == 4
    assert T.CharVocabulary.build(reversed(corpus), min_freq=3).chars == vocab.chars
    assert T.CharVocabulary.build(corpus, min_freq=1).size == 6
    again = T.CharVocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.chars == vocab.chars and again.min_freq == 3
    np.testing.assert_array_equal(again.encode("abcé"), vocab.encode("abcé"))
    # undecodable bytes (surrogate escapes) never become channels
    assert T.CharVocabulary.build([b"\xff" * 20], min_freq=1).size == 1
    big = T.CharVocabulary(tuple(chr(0x4E00 + i) for i in range(300)))
    assert big.size == 301 and big.encode(chr(0x4E00 + 299)).tolist() == [300]
    assert big.encode("x").dtype == np.uint16


def test_token_arrays_batch_padding_and_lengths():
    texts = ["abc", "", "hello world", "é"]
    arr = T.TokenArrays.from_texts(texts, "bytes", 5)
    assert len(arr) == 4 and arr.tokens.dtype == np.uint8 and arr.channels == 256
    assert arr.tokens.shape == (3 + 0 + 5 + 2,)
    assert arr.lengths.tolist() == [3, 0, 5, 2]
    ids, lengths = arr.batch([2, 1, 3, 0], pad_to=6)
    assert ids.shape == (4, 6) and ids.dtype == np.int32 and lengths.dtype == np.int32
    assert lengths.tolist() == [5, 0, 2, 3]
    assert ids[0].tolist() == list(b"hello") + [-1]
    assert (ids[1] == -1).all() and ids[2, :2].tolist() == list("é".encode())
    assert (ids[2, 2:] == -1).all()
    auto, _ = arr.batch([0, 3])
    assert auto.shape == (2, 3)
    with pytest.raises(ValueError, match="pad_to"):
        arr.batch([2], pad_to=4)
    with pytest.raises(IndexError):
        arr.batch([4])
    oh = T.one_hot(ids, 256)
    assert oh.shape == (4, 6, 256) and oh.sum() == lengths.sum()
    assert not oh[0, 5].any() and oh[0, 0, ord("h")] == 1


# ------------------------------------------------------------------ IMDB
@pytest.fixture(scope="module")
def imdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb")
    archive = T.write_imdb_fixture(root / "manual", 4, seed=3)
    folder = T.write_imdb_fixture(root / "unpacked", 4, seed=3, as_archive=False)
    return root, archive, folder


def test_read_imdb_archive_equals_folder(imdb):
    root, archive, folder = imdb
    assert archive.name == "aclImdb_v1.tar.gz" and folder.name == "aclImdb"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "aclImdb/train/unsup/0_0.txt" in names and "aclImdb/imdb.vocab" in names
    data = T.read_imdb(archive)
    assert set(data) == {"train", "test"}
    for split in ("train", "test"):
        texts, labels = data[split]
        assert labels.dtype == np.int64 and labels.tolist() == [0] * 4 + [1] * 4
        assert all(isinstance(t, bytes) for t in texts) and len(set(texts)) == 8
        assert not any(b"UNSUP" in t for t in texts)          # train/unsup/ ignored
    text = b"".join(data["train"][0])
    assert b"<br />" in text and any(b > 127 for b in text)
    text.decode("utf-8")
    # every accepted form of the path gives the same result
    for path in (root / "manual", folder, root / "unpacked"):
        other = T.read_imdb(path)
        for split in ("train", "test"):
            assert other[split][0] == data[split][0]
            np.testing.assert_array_equal(other[split][1], data[split][1])
    # sorted by (label, id): member order does not matter; ratings follow the label
    with tarfile.open(archive) as tar:
        pos = sorted((int(n.split("/")[-1].split("_")[0]), tar.extractfile(n).read())
                     for n in names if n.startswith("aclImdb/test/pos/"))
        ratings = {int(n.split("_")[-1][:-4]) for n in names if "/pos/" in n}
    assert data["test"][0][4:] == [t for _, t in pos] and ratings <= {7, 8, 9, 10}
    assert T.IMDB_SPLITS == {"train": "train", "val": "test", "test": "test"}
    # the label is learnable: sentiment words follow it
    good = sum(t.count(b"wonderful") + t.count(b"superb") for t in data["train"][0][4:])
    bad = sum(t.count(b"wonderful") + t.count(b"superb") for t in data["train"][0][:4])
    assert good > bad


def test_imdb_fixture_deterministic(tmp_path, imdb):
    _, archive, _ = imdb
    again = T.write_imdb_fixture(tmp_path, 4, seed=3)
    assert again.read_bytes() == archive.read_bytes()
    assert T.write_imdb_fixture(tmp_path / "b", 4, seed=4).read_bytes() != \
        archive.read_bytes()


def test_read_imdb_errors_name_the_file(tmp_path, imdb):
    _, archive, _ = imdb
    cut = tmp_path / "cut" / "aclImdb_v1.tar.gz"
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(T.TextFormatError, match="not a readable IMDB tar") as err:
        T.read_imdb(cut.parent)
    assert str(cut) in str(err.value)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(T.TextFormatError, match="junk.tar.gz"):
        T.read_imdb(junk)
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        info = tarfile.TarInfo("other/train/pos/1_9.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(T.TextFormatError, match="no IMDB review files") as err:
        T.read_imdb(foreign)
    assert str(foreign) in str(err.value)
    no_test = T.write_imdb_fixture(tmp_path / "nt", 2, 0, split_sizes={"test": 0})
    with pytest.raises(T.TextFormatError, match=r"aclImdb/test/neg/"):
        T.read_imdb(no_test)
    folder = T.write_imdb_fixture(tmp_path / "bad", 2, 0, as_archive=False)
    (folder / "train" / "pos" / "notes.txt").write_text("x")
    with pytest.raises(T.TextFormatError, match=r"train/pos/'notes.txt'.*<id>_<rating>") as err:
        T.read_imdb(folder)
    assert str(folder) in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="aclImdb_v1.tar.gz"):
        T.read_imdb(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        T.read_imdb(tmp_path / "missing")


# ------------------------------------------------------------------ AAN
def test_read_aan_fixture_and_layouts(tmp_path):
    folder = T.write_aan_fixture(tmp_path / "lra_release" / "tsv_data", (8, 4, 4), seed=2)
    splits = T.read_aan(tmp_path)                              # lra_release/tsv_data/
    assert set(splits) == {"train", "eval", "test"}
    assert [len(splits[s]) for s in ("train", "eval", "test")] == [8, 4, 4]
    assert (folder / "new_aan_pairs.eval.tsv").read_text().split("\t")[0] in ("0.0", "1.0")
    assert (folder / "new_aan_pairs.train.tsv").read_text().split("\t")[0] in ("0", "1")
    for split in splits.values():
        assert split.labels.dtype == np.int64 and set(split.labels.tolist()) == {0, 1}
        assert len(split.text1) == len(split.text2) == len(split.id1) == len(split)
    tr = splits["train"]
    assert any('"' in t for t in tr.text1 + tr.text2)         # no quoting
    assert tr.ids == (tr.id1, tr.id2)
    single = T.read_aan(folder / "new_aan_pairs.eval.tsv")
    assert list(single) == ["eval"]
    assert single["eval"].text1 == splits["eval"].text1
    assert T.read_aan(tmp_path / "lra_release")["test"].id2 == splits["test"].id2
    # learnable: a linked pair shares (most of) its vocabulary
    def overlap(i):
        a, b = set(tr.text1[i].split()), set(tr.text2[i].split())
        return len(a & b) / len(a | b)
    same = np.mean([overlap(i) for i in range(8) if tr.labels[i] == 1])
    diff = np.mean([overlap(i) for i in range(8) if tr.labels[i] == 0])
    assert same > diff
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"new_aan_pairs.*tsv_data"):
        T.read_aan(tmp_path / "empty")


def test_read_aan_labels_and_errors(tmp_path):
    path = tmp_path / "new_aan_pairs.test.tsv"
    path.write_bytes(b'1.0\tA\tB\tsays "hi"\tx\r\n0\tC\tD\ty\tz\n1\tE\tF\t\t\n')
    split = T.read_aan(path)["test"]
    assert split.labels.tolist() == [1, 0, 1]
    assert split.text1 == ['says "hi"', "y", ""] and split.text2 == ["x", "z", ""]
    assert split.id1 == ["A", "C", "E"]
    # reading with a character limit keeps the first characters of each document
    cut = T.read_aan_tsv(path, char_limit=3)
    assert cut.text1 == ["say", "y", ""] and cut.labels.tolist() == [1, 0, 1]
    bad_cols = tmp_path / "new_aan_pairs.train.tsv"
    bad_cols.write_bytes(b"1\tA\tB\tx\ty\n0\tA\tB\tx\n")
    with pytest.raises(T.TextFormatError, match="line 2: expected 5") as err:
        T.read_aan_tsv(bad_cols)
    assert str(bad_cols) in str(err.value)
    bad_label = tmp_path / "other.tsv"
    bad_label.write_bytes(b"1\tA\tB\tx\ty\n1\tA\tB\tx\ty\n2\tA\tB\tx\ty\n")
    with pytest.raises(T.TextFormatError, match="line 3: label '2'") as err:
        T.read_aan(bad_label)
    assert str(bad_label) in str(err.value)
    empty = tmp_path / "new_aan_pairs.eval.tsv"
    empty.write_bytes(b"")
    with pytest.raises(T.TextFormatError, match="empty file"):
        T.read_aan_tsv(empty)


def test_aan_truncation_chars_then_tokens():
    long1 = "é" * 6000 + "a" * 6000            # 12,000 chars, 18,000 bytes
    long2 = "ab" * 2500                         # 5,000 chars
    split = T.AANSplit([long1, "short"], [long2, "x"], np.array([1, 0]),
                       ["a", "b"], ["c", "d"])
    pairs = T.PairArrays.from_split(split, "bytes", 4000)
    ids, lengths = pairs.batch([0, 1], pad_to=4000)
    assert ids.shape == (2, 2, 4000) and lengths.tolist() == [[4000, 4000], [5, 1]]
    assert ids[0, 0].tolist() == list(long1.encode()[:4000])
    assert ids[1, 1, :1].tolist() == [ord("x")] and (ids[1, 1, 1:] == -1).all()
    assert pairs.labels.tolist() == [1, 0] and len(pairs) == 2
    # 10,000-character limit before encoding: no "a" survives past it
    no_tok_limit = T.PairArrays.from_split(split, "bytes", None)
    assert no_tok_limit.first.lengths.tolist() == [12000 + 4000, 5]   # 6000*2 + 4000
    assert no_tok_limit.second.lengths[0] == 5000
    unlimited = T.PairArrays.from_split(split, "bytes", None, char_limit=None)
    assert unlimited.first.lengths[0] == 18000
    vocab = T.aan_vocabulary(split, min_freq=1)
    assert set(vocab.chars) == set("éabshortx")
    chars = T.PairArrays.from_split(split, "chars", 4000, vocab)
    assert chars.first.lengths.tolist() == [4000, 5] and chars.channels == vocab.size
    np.testing.assert_array_equal(chars.first.document(0), vocab.encode("é" * 4000))


# ------------------------------------------------------------------ TFDS builders
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lra_text_tfds")
    T.write_imdb_fixture(root / "imdb_manual", 3, seed=5)
    T.write_aan_fixture(root / "aan_manual" / "tsv_data", (6, 3, 3), seed=5)
    text = T.prepare_text(root / "imdb_manual", root / "data")
    retrieval = T.prepare_retrieval(root / "aan_manual", root / "data")
    return root, text, retrieval


def test_text_builder_matches_reader(built):
    root, builder, _ = built
    assert "tensorflow" not in sys.modules
    version_dir = root / "data" / "lra_text" / "1.0.0"
    assert (version_dir / "lra_text-train.array_record-00000-of-00001").is_file()
    data = T.read_imdb(root / "imdb_manual")
    for split, file_split in (("train", "train"), ("val", "test"), ("test", "test")):
        texts, labels = data[file_split]
        for src in (T.TextSource(builder, split), T.TextSource(root / "data", split),
                    T.TextSource(version_dir, split)):
            assert len(src) == len(texts)
            assert src.texts(range(len(src))) == texts
            np.testing.assert_array_equal(src.labels, labels)
    with pytest.raises(IndexError):
        T.TextSource(builder, "train").texts([6])
    assert "tensorflow" not in sys.modules


def test_retrieval_builder_matches_reader(built):
    root, _, builder = built
    splits = T.read_aan(root / "aan_manual")
    assert set(builder.as_data_source()) == {"train", "validation", "test"}
    for split, key in (("train", "train"), ("validation", "eval"), ("val", "eval"),
                       ("test", "test")):
        src = T.PairSource(builder, split)
        want = splits[key]
        assert len(src) == len(want)
        idx = range(len(src))
        assert src.texts(idx) == (want.text1, want.text2)
        assert src.ids(idx) == want.ids
        np.testing.assert_array_equal(src.labels, want.labels)
    # the task layer can encode from records exactly as from the files
    t1, t2 = T.PairSource(builder, "train").texts([2, 0])
    arrays = T.PairArrays.from_split(splits["train"], "bytes", 100)
    for texts, side in ((t1, arrays.first), (t2, arrays.second)):
        got = T.TokenArrays.from_texts(texts, "bytes", 100, char_limit=T.AAN_CHAR_LIMIT)
        np.testing.assert_array_equal(got.batch([0, 1], 100)[0],
                                      side.batch([2, 0], 100)[0])
    assert "tensorflow" not in sys.modules
