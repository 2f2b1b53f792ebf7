"""Long Range Arena Text (IMDB reviews, byte level) and Retrieval (ACL Anthology
Network document pairs): the raw formats (strict readers, seeded fixture writers in the
exact layouts), two encodings into one-hot channel ids, a compact ragged store of
encoded documents (`TokenArrays`, `PairArrays`), and the ``lra_text`` /
``lra_retrieval`` TFDS datasets (array_record, no TensorFlow needed) with random-access
readers (`TextSource`, `PairSource`).  Data layer only: no training code.

IMDB (data-formats.md section 3.3).  The archive ``aclImdb_v1.tar.gz`` holds
``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` (12,500 reviews per split and
class; ratings 7-10 are ``pos``, 1-4 ``neg``) plus ``train/unsup/`` (50,000 unlabelled
reviews), ``*.feat`` bag-of-words files, ``urls_*.txt``, ``imdb.vocab``, ``imdbEr.txt``
and ``README``, all ignored here.  `read_imdb` reads the archive in one streaming pass
(never extracting it), or the unpacked ``aclImdb/`` folder, and returns each split's
texts as the raw file bytes (reviews contain UTF-8 and ``<br />`` line breaks) with
labels ``neg`` = 0, ``pos`` = 1, sorted by (label, id) so the order never depends on
the archive's member order or the file system.  LRA loads ``imdb_reviews`` from TFDS
and uses the *test* split as both validation and test set; `IMDB_SPLITS` records that
choice (task split -> file split: train -> train, val -> test, test -> test), and
`TextSource` follows it (``"val"`` opens the test records).

AAN (section 3.4).  ``new_aan_pairs.{train,eval,test}.tsv`` (LRA release folder
``lra_release/tsv_data/``): tab-separated, no header, no quoting (texts contain
quotes), 5 columns ``label id1 id2 text1 text2``; the label is 1 when the two papers
are linked by a citation, written ``0``/``1`` or ``0.0``/``1.0`` (both accepted).
``eval`` is the validation split; `read_aan` keeps the file names' keys ("train",
"eval", "test") and the TFDS builder names it ``validation``.  Lines are split on
``\\n`` only (a trailing ``\\r`` is dropped), since texts may hold other Unicode line
separators; bytes that are not UTF-8 are kept through ``surrogateescape``, so byte
encoding gives back the file's bytes.  LRA truncates each document to
`AAN_CHAR_LIMIT` = 10,000 characters before byte encoding, then to ``max_length``
(4,000) tokens; `PairArrays.from_split` does both.

Encodings (`ENCODINGS`), each a sequence of *channel ids*: one one-hot channel per
token, padding separate (id -1 in batches, the all-zero vector in `one_hot`, so a
padded step feeds nothing into the neuron):

* ``"bytes"``: LRA's ``ByteTextEncoder`` maps UTF-8 byte b to token b + 1 (0 is
  padding, vocabulary 257); without the padding token the channel is b itself,
  `BYTE_CHANNELS` = 256.  Truncation is to ``max_length`` bytes (it may cut a
  multi-byte character, as LRA's does).
* ``"chars"``: a `CharVocabulary` built from the training texts (Retrieval: both
  texts of every training pair): the Unicode characters seen at least ``min_freq``
  times (default 15, S4's setting), ordered by descending count then code point;
  channel 0 is ``<unk>`` (every other character).  The paper's input dimensions for
  Text (169) and Retrieval (105) suggest such character dictionaries (unverified:
  the exact dictionaries used by the ELM paper are not published).  Truncation is to
  ``max_length`` characters.

TFDS (data-formats.md section 4): ``lra_text`` (``text`` Text (bytes), ``label``
ClassLabel(neg, pos); splits train, test) built from the IMDB archive or folder in the
manual directory, and ``lra_retrieval`` (``text1``, ``text2``, ``id1``, ``id2`` Text,
``label`` ClassLabel(2); splits train, validation, test from the train, eval, test
files) built from the TSVs; both ``file_format="array_record"``, records in reader
order (shuffling disabled), defined on first use so importing this module does not
import tensorflow_datasets.  Records store texts, not ids, so either encoding (and any
``max_length``) can be applied when reading (`TextSource.texts`, `PairSource.texts`).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...fileio import atomic_write
from ..tfds_support import (
    dataset_info,
    import_tfds,
    lazy_builder_attribute,
    prepare,
    read_field,
    read_records,
)

TEXT_NAME = "lra_text"
RETRIEVAL_NAME = "lra_retrieval"
HOMEPAGE = "https://github.com/google-research/long-range-arena"

# ---------------------------------------------------------------------------- encodings
ENCODINGS = ("bytes", "chars")
#: One-hot channels of the ``"bytes"`` encoding (UTF-8 byte b -> channel b).
BYTE_CHANNELS = 256
#: S4's minimum character count for the ``"chars"`` vocabulary.
DEFAULT_MIN_FREQ = 15
UNK = "<unk>"
#: LRA's sequence lengths: Text 4,000 bytes; Retrieval 4,000 per document.
TEXT_MAX_LENGTH = 4000
AAN_MAX_LENGTH = 4000
#: LRA truncates each AAN document to this many characters before encoding.
AAN_CHAR_LIMIT = 10_000
NUM_CLASSES = 2

_SURROGATES = (0xD800, 0xE000)      # lone surrogates (surrogateescape'd bytes): <unk>
_MAX_CODE_POINT = 0x10FFFF


class TextFormatError(ValueError):
    """An IMDB archive/folder or an AAN file could not be read; the message names the
    file (and line, for TSVs)."""


def _as_str(text: bytes | str) -> str:
    return text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text


def _as_bytes(text: bytes | str) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _code_points(text: str) -> np.ndarray:
    """(n,) uint32 code points of `text` (lone surrogates kept)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


@dataclasses.dataclass(frozen=True, eq=False)
class CharVocabulary:
    """A character dictionary: channel 0 = ``<unk>``, channel ``k`` = ``chars[k - 1]``.

    Attributes:
      chars: the kept characters, by descending count then code point.
      counts: their counts in the texts it was built from.
      min_freq: the count a character needed to be kept.
    """

    chars: tuple[str, ...]
    counts: tuple[int, ...] = ()
    min_freq: int = DEFAULT_MIN_FREQ

    def __post_init__(self):
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("CharVocabulary.chars must be distinct single characters")
        if self.counts and len(self.counts) != len(self.chars):
            raise ValueError("CharVocabulary.counts must match chars")
        cps = np.array([ord(c) for c in self.chars], np.int64)
        table = np.zeros(int(cps.max(initial=-1)) + 2, np.int64)   # last entry: <unk>
        table[cps] = np.arange(1, len(cps) + 1)
        object.__setattr__(self, "_table", table.astype(self.dtype))

    @classmethod
    def build(cls, texts: Iterable[bytes | str], min_freq: int = DEFAULT_MIN_FREQ,
              chunk_chars: int = 1 << 24) -> CharVocabulary:
        """Count the characters of `texts` (bytes are decoded as UTF-8) and keep those
        seen at least `min_freq` times; deterministic (ties by code point).  Lone
        surrogates (undecodable bytes) are never kept."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = np.zeros(_MAX_CODE_POINT + 1, np.int64)
        pending: list[str] = []
        size = 0

        def flush():
            if pending:
                counts[:] += np.bincount(_code_points("".join(pending)),
                                         minlength=_MAX_CODE_POINT + 1)
                pending.clear()

        for text in texts:
            text = _as_str(text)
            pending.append(text)
            size += len(text)
            if size >= chunk_chars:
                flush()
                size = 0
        flush()
        counts[_SURROGATES[0]:_SURROGATES[1]] = 0
        kept = np.flatnonzero(counts >= min_freq)
        order = np.lexsort((kept, -counts[kept]))     # count desc, then code point
        kept = kept[order]
        return cls(tuple(chr(int(c)) for c in kept),
                   tuple(int(counts[c]) for c in kept), int(min_freq))

    @property
    def size(self) -> int:
        """Number of channels (``<unk>`` included)."""
        return len(self.chars) + 1

    @property
    def dtype(self) -> np.dtype:
        """uint8 if every channel fits (size <= 256), else uint16."""
        return np.dtype(np.uint8 if self.size <= 256 else np.uint16)

    def encode(self, text: bytes | str) -> np.ndarray:
        """(n,) channel ids (`dtype`) of the characters of `text` (0 = ``<unk>``)."""
        cps = _code_points(_as_str(text))
        table = self._table
        return table[np.minimum(cps, len(table) - 1)]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of channel ids (``<unk>`` written as U+FFFD); for inspection."""
        return "".join("\ufffd" if i == 0 else self.chars[i - 1] for i in map(int, ids))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (`from_dict` inverts it)."""
        return {"format": "elm_jax.char_vocabulary/1", "unk": UNK,
                "min_freq": self.min_freq, "chars": list(self.chars),
                "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharVocabulary:
        if data.get("format") != "elm_jax.char_vocabulary/1":
            raise ValueError(f"not a CharVocabulary dict (format {data.get('format')!r})")
        return cls(tuple(data["chars"]), tuple(int(c) for c in data.get("counts", ())),
                   int(data.get("min_freq", DEFAULT_MIN_FREQ)))


def num_channels(encoding: str, vocab: CharVocabulary | None = None) -> int:
    """One-hot channels of an encoding (`BYTE_CHANNELS`, or ``vocab.size``)."""
    _check_encoding(encoding, vocab)
    return BYTE_CHANNELS if encoding == "bytes" else vocab.size


def _check_encoding(encoding: str, vocab: CharVocabulary | None) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    if encoding == "chars" and vocab is None:
        raise ValueError("the 'chars' encoding needs a CharVocabulary (vocab=...)")


def encode_document(text: bytes | str, encoding: str, max_length: int | None,
                    vocab: CharVocabulary | None = None, *,
                    char_limit: int | None = None) -> np.ndarray:
    """1-D channel ids of one document, truncated to `max_length` tokens.

    ``"bytes"``: the UTF-8 bytes (a str is encoded; bytes are used as they are), uint8.
    ``"chars"``: ``vocab.encode`` of the characters (bytes are decoded as UTF-8).
    `char_limit`: first cut the text to that many characters (AAN: `AAN_CHAR_LIMIT`;
    bytes are decoded for this)."""
    _check_encoding(encoding, vocab)
    if char_limit is not None:
        text = _as_str(text)[:int(char_limit)]
    if encoding == "bytes":
        data = _as_bytes(text)
        if max_length is not None:
            data = data[:int(max_length)]
        return np.frombuffer(data, np.uint8).copy()
    text = _as_str(text)
    if max_length is not None:
        text = text[:int(max_length)]
    return vocab.encode(text)


def one_hot(ids: np.ndarray, channels: int) -> np.ndarray:
    """(..., L) channel ids (-1 = padding) -> (..., L, channels) float32 (NumPy);
    padding is the zero vector."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < -1 or ids.max() >= channels):
        raise ValueError(f"channel ids must lie in [-1, {channels})")
    return np.eye(channels + 1, channels, dtype=np.float32)[ids]


# ---------------------------------------------------------------------------- arrays
@dataclasses.dataclass(frozen=True, eq=False)
class TokenArrays:
    """Encoded documents held as one flat array (a ragged store; no dense matrix).

    Attributes:
      tokens: (total,) uint8 (or uint16 for a vocabulary over 256 channels) channel
        ids of all documents, one after another.
      offsets: (n + 1,) int64; document ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
      channels: the number of one-hot channels (`num_channels`).
    """

    tokens: np.ndarray
    offsets: np.ndarray
    channels: int

    @classmethod
    def from_texts(cls, texts: Iterable[bytes | str], encoding: str,
                   max_length: int | None, vocab: CharVocabulary | None = None, *,
                   char_limit: int | None = None) -> TokenArrays:
        """`encode_document` of each text (same arguments), stored flat."""
        channels = num_channels(encoding, vocab)
        dtype = np.uint8 if channels <= 256 else np.uint16
        seqs = [encode_document(t, encoding, max_length, vocab, char_limit=char_limit)
                for t in texts]
        offsets = np.zeros(len(seqs) + 1, np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        flat = np.concatenate(seqs).astype(dtype, copy=False) if seqs \
            else np.zeros(0, dtype)
        return cls(flat, offsets, channels)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(n,) int32 document lengths (tokens)."""
        return np.diff(self.offsets).astype(np.int32)

    def document(self, i: int) -> np.ndarray:
        """The channel ids of document `i`."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def batch(self, indices: Sequence[int], pad_to: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (b, pad_to) int32 with -1 at padding steps, lengths (b,) int32)``.

        `pad_to` None: the longest document of the batch.  A document longer than
        `pad_to` raises ValueError (it cannot happen when ``max_length <= pad_to``)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"document index out of range [0, {len(self)})")
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lengths = (ends - starts).astype(np.int32)
        longest = int(lengths.max(initial=0))
        width = longest if pad_to is None else int(pad_to)
        if longest > width:
            raise ValueError(f"a document has {longest} tokens, more than pad_to={width} "
                             f"(encode with max_length <= pad_to)")
        out = np.full((idx.size, width), -1, np.int32)
        for row, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            out[row, :b - a] = self.tokens[a:b]
        return out, lengths


# ---------------------------------------------------------------------------- IMDB
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
IMDB_FOLDER = "aclImdb"
IMDB_FILE_SPLITS = ("train", "test")
IMDB_CLASSES = ("neg", "pos")           # label = index
#: The task's splits -> IMDB file splits.  LRA has no IMDB validation set: it uses the
#: test split as both validation and test (we do the same; see the module doc).
IMDB_SPLITS = {"train": "train", "val": "test", "test": "test"}

_IMDB_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+)$")
_IMDB_NAME = re.compile(r"^([0-9]+)_([0-9]+)\.txt$")


def _imdb_entry(where: str, split: str, cls: str, name: str) -> tuple[int, int, str]:
    """(label, id, name) of a review file name, or TextFormatError naming the file
    (`where`: the archive or the ``aclImdb/`` folder)."""
    m = _IMDB_NAME.match(name)
    if m is None:
        raise TextFormatError(f"{where}: review file {split}/{cls}/{name!r} does not "
                              f"match <id>_<rating>.txt")
    return IMDB_CLASSES.index(cls), int(m.group(1)), name


def _imdb_collect(where: str, found: dict[str, list[tuple[int, int, bytes]]]
                  ) -> dict[str, tuple[list[bytes], np.ndarray]]:
    if not any(found.values()):
        raise TextFormatError(f"{where}: no IMDB review files (expected "
                              f"aclImdb/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt)")
    out = {}
    for split in IMDB_FILE_SPLITS:
        entries = sorted(found[split], key=lambda e: e[:3])     # (label, id, name)
        present = {e[0] for e in entries}
        for label, cls in enumerate(IMDB_CLASSES):
            if label not in present:
                raise TextFormatError(f"{where}: no reviews in aclImdb/{split}/{cls}/")
        out[split] = ([e[3] for e in entries], np.array([e[0] for e in entries], np.int64))
    return out


def _read_imdb_archive(path: Path) -> dict[str, tuple[list[bytes], np.ndarray]]:
    found: dict[str, list] = {s: [] for s in IMDB_FILE_SPLITS}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                m = _IMDB_MEMBER.match(member.name)
                if m is None or not member.isfile():
                    continue
                split, cls, name = m.groups()
                entry = _imdb_entry(str(path), split, cls, name)
                found[split].append((*entry, tar.extractfile(member).read()))
    except TextFormatError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise TextFormatError(f"{path}: not a readable IMDB tar archive "
                              f"({type(err).__name__}: {err})") from err
    return _imdb_collect(str(path), found)


def _read_imdb_folder(folder: Path) -> dict[str, tuple[list[bytes], np.ndarray]]:
    found: dict[str, list] = {s: [] for s in IMDB_FILE_SPLITS}
    for split in IMDB_FILE_SPLITS:
        for cls in IMDB_CLASSES:
            sub = folder / split / cls
            if not sub.is_dir():
                continue
            for file in sub.iterdir():
                if not file.is_file():
                    continue
                entry = _imdb_entry(str(folder), split, cls, file.name)
                found[split].append((*entry, file.read_bytes()))
    return _imdb_collect(str(folder), found)


def find_imdb(path: str | os.PathLike) -> Path:
    """The IMDB archive or unpacked ``aclImdb/`` folder at or in `path`.

    `path` may be the archive (any file is taken as one), a folder holding
    ``aclImdb_v1.tar.gz``, the unpacked ``aclImdb/`` folder (it has ``train/`` or
    ``test/``), or the folder holding ``aclImdb/``; an unpacked folder is preferred to
    an archive beside it.  FileNotFoundError (saying what was looked for) otherwise."""
    root = Path(path).expanduser()
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"IMDB data path {root} does not exist")
    if (root / "train").is_dir() or (root / "test").is_dir():
        return root
    if (root / IMDB_FOLDER).is_dir():
        return root / IMDB_FOLDER
    if (root / IMDB_ARCHIVE).is_file():
        return root / IMDB_ARCHIVE
    raise FileNotFoundError(f"no IMDB data in {root} (looked for {IMDB_ARCHIVE}, "
                            f"{IMDB_FOLDER}/, or train/ and test/ of an unpacked "
                            f"{IMDB_FOLDER}/)")


def read_imdb(path: str | os.PathLike) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """The labelled IMDB reviews: ``{"train"|"test": (texts list[bytes], labels (n,)
    int64)}``, ``neg`` = 0, ``pos`` = 1, sorted by (label, id) within a split.

    `path`: see `find_imdb`.  The archive is read in one streaming pass, nothing is
    extracted.  Ties (the same id twice in a class) are ordered by file name.
    ``train/unsup/``, ``*.feat``, ``urls_*.txt``, ``imdb.vocab`` and the README are
    ignored.  TextFormatError (naming the file) for an unreadable, truncated
    or corrupt archive, no review files, a split or class without reviews, or a review
    file name not of the form ``<id>_<rating>.txt``."""
    where = find_imdb(path)
    return _read_imdb_folder(where) if where.is_dir() else _read_imdb_archive(where)


# Words of the synthetic reviews (a label is learnable from the sentiment words).
_POSITIVE = ("wonderful", "brilliant", "superb", "moving", "delightful", "masterpiece",
             "charming", "excellent", "beautiful", "enjoyable", "gripping", "loved")
_NEGATIVE = ("awful", "boring", "dreadful", "terrible", "waste", "clumsy", "dull",
             "disappointing", "mess", "pointless", "hated", "lifeless")
_NEUTRAL = ("the", "film", "movie", "plot", "actor", "actress", "scene", "director",
            "story", "ending", "camera", "music", "script", "was", "is", "and", "a",
            "of", "with", "this", "cast", "character", "café", "naïve", "Amélie",
            "Zoë", "déjà vu", "—", "…", "“quite”", "'really'", "(1987)")


def _review(rng: np.random.Generator, positive: bool) -> str:
    own, other = (_POSITIVE, _NEGATIVE) if positive else (_NEGATIVE, _POSITIVE)
    sentences = []
    for _ in range(int(rng.integers(2, 6))):
        words = []
        for _ in range(int(rng.integers(4, 11))):
            r = rng.random()
            pool = own if r < 0.25 else other if r < 0.30 else _NEUTRAL
            words.append(pool[int(rng.integers(len(pool)))])
        sentence = " ".join(words)
        sentences.append(sentence[0].upper() + sentence[1:] + (".", "!", "?")[
            int(rng.integers(3))])
    out = sentences[0]
    for s in sentences[1:]:
        out += ("<br /><br />" if rng.random() < 0.3 else " ") + s
    return out


def _imdb_files(num_per_class: int, seed: int, split_sizes: dict[str, int] | None
                ) -> list[tuple[str, bytes]]:
    """(member path, data) of a synthetic set in the official layout, in a shuffled
    member order (readers must sort)."""
    rng = np.random.default_rng(seed)
    sizes = {s: int(num_per_class) for s in IMDB_FILE_SPLITS}
    sizes.update({k: int(v) for k, v in (split_sizes or {}).items()})
    if set(sizes) != set(IMDB_FILE_SPLITS):
        raise ValueError(f"split_sizes keys must be among {IMDB_FILE_SPLITS}")
    files = []
    for split in IMDB_FILE_SPLITS:
        for cls in IMDB_CLASSES:
            positive = cls == "pos"
            for ident in rng.permutation(sizes[split]).tolist():
                rating = int(rng.integers(7, 11) if positive else rng.integers(1, 5))
                files.append((f"{IMDB_FOLDER}/{split}/{cls}/{ident}_{rating}.txt",
                              _review(rng, positive).encode("utf-8")))
    files.append((f"{IMDB_FOLDER}/train/unsup/0_0.txt",
                  b"UNSUP review: wonderful awful, never labelled."))
    files.append((f"{IMDB_FOLDER}/train/labeledBow.feat", b"0 0:1 1:2\n"))
    files.append((f"{IMDB_FOLDER}/train/urls_pos.txt",
                  b"http://www.imdb.com/title/tt0000000/usercomments\n"))
    files.append((f"{IMDB_FOLDER}/imdb.vocab",
                  "\n".join(_NEUTRAL + _POSITIVE + _NEGATIVE).encode("utf-8")))
    files.append((f"{IMDB_FOLDER}/README", b"Synthetic IMDB-format fixture (elm_jax).\n"))
    order = rng.permutation(len(files))
    return [files[i] for i in order]


def write_imdb_fixture(path: str | os.PathLike, num_per_class: int, seed: int, *,
                       as_archive: bool = True,
                       split_sizes: dict[str, int] | None = None) -> Path:
    """Write a GENERATED, seeded IMDB set in the official layout into folder `path`.

    `num_per_class` reviews per split and class (`split_sizes` overrides it per split,
    e.g. ``{"test": 0}``), synthetic English-like text whose sentiment words follow the
    label (ratings 7-10 pos, 1-4 neg), with non-ASCII UTF-8 and ``<br />`` breaks, plus
    a ``train/unsup/`` review, a ``.feat``, ``urls_pos.txt``, ``imdb.vocab`` and
    ``README`` (which readers must ignore).  ``as_archive``: ``path/aclImdb_v1.tar.gz``
    (written atomically; gzip mtime 0, so a seed gives the same bytes), else the
    unpacked ``path/aclImdb/`` (built in a temporary folder, then renamed into place).
    Returns the archive or folder."""
    files = _imdb_files(num_per_class, seed, split_sizes)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if as_archive:
        def write(f):
            with gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                dirs = sorted({str(Path(name).parent) for name, _ in files}
                              | {IMDB_FOLDER, f"{IMDB_FOLDER}/train",
                                 f"{IMDB_FOLDER}/test"})
                for d in dirs:
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                for name, data in files:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))

        return atomic_write(root / IMDB_ARCHIVE, write)
    tmp = Path(tempfile.mkdtemp(prefix=".aclImdb.", dir=root))
    try:
        for name, data in files:
            file = tmp / name
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
        target = root / IMDB_FOLDER
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".aclImdb.old.", dir=root))
            os.replace(target, old / IMDB_FOLDER)
        os.replace(tmp / IMDB_FOLDER, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------- AAN
AAN_FILE_SPLITS = ("train", "eval", "test")
#: The task's splits -> AAN file splits (``eval`` is the validation split).
AAN_SPLITS = {"train": "train", "val": "eval", "test": "test"}
AAN_PATTERN = "new_aan_pairs.{split}.tsv"
_AAN_NAME = re.compile(r"^new_aan_pairs\.([A-Za-z0-9_-]+)\.tsv$")
_AAN_SUBFOLDERS = ("", "tsv_data", "lra_release/tsv_data",
                   "lra_release/lra_release/tsv_data")
_AAN_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


@dataclasses.dataclass(frozen=True, eq=False)
class AANSplit:
    """One AAN file.

    Attributes:
      text1, text2: the two documents of each pair (str; undecodable bytes kept as
        surrogate escapes).
      labels: (n,) int64, 1 = the papers are linked.
      id1, id2: the documents' ids (str).
      source: the file read.
    """

    text1: list[str]
    text2: list[str]
    labels: np.ndarray
    id1: list[str]
    id2: list[str]
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def ids(self) -> tuple[list[str], list[str]]:
        """``(id1, id2)``."""
        return self.id1, self.id2


def _char_cut(char_limit: int | None) -> slice:
    """The slice that keeps a document's first `char_limit` characters (all if None)."""
    return slice(None) if char_limit is None else slice(int(char_limit))


def read_aan_tsv(path: str | os.PathLike, char_limit: int | None = None) -> AANSplit:
    """Read one ``new_aan_pairs.*.tsv`` (no header, 5 tab-separated columns ``label
    id1 id2 text1 text2``, no quoting; LF or CRLF rows), a row at a time.  The label
    must be ``0``, ``1``, ``0.0`` or ``1.0``.  TextFormatError naming the file and
    1-based line for a row without exactly 5 columns or another label, and for an empty
    file.  `char_limit`: keep only the first that many characters of each document
    (LRA's `AAN_CHAR_LIMIT`; the release's documents are whole papers, so this bounds
    the memory the split takes)."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read AAN file ({err})") from err
    cut = _char_cut(char_limit)
    text1, text2, id1, id2, labels = [], [], [], [], []
    with handle:
        for number, raw in enumerate(handle, start=1):  # rows end at b"\n" only
            line = raw.decode("utf-8", "surrogateescape").removesuffix("\n")
            fields = line.removesuffix("\r").split("\t")
            if len(fields) != 5:
                raise TextFormatError(f"{path}: line {number}: expected 5 tab-separated "
                                      f"columns (label id1 id2 text1 text2), found "
                                      f"{len(fields)}")
            label = _AAN_LABELS.get(fields[0].strip())
            if label is None:
                raise TextFormatError(f"{path}: line {number}: label {fields[0][:20]!r} "
                                      f"is not 0, 1, 0.0 or 1.0")
            labels.append(label)
            id1.append(fields[1])
            id2.append(fields[2])
            text1.append(fields[3][cut])
            text2.append(fields[4][cut])
    if not labels:
        raise TextFormatError(f"{path}: empty file (expected rows of 5 tab-separated "
                              f"columns: label id1 id2 text1 text2)")
    return AANSplit(text1, text2, np.asarray(labels, np.int64), id1, id2, str(path))


def find_aan_files(path: str | os.PathLike) -> dict[str, Path]:
    """``{"train"|"eval"|"test": Path}`` of the AAN files found at `path`.

    A file gives ``{key: path}`` with the key from its name ``new_aan_pairs.<key>.tsv``
    (its stem otherwise).  A folder is searched, then ``tsv_data/``,
    ``lra_release/tsv_data/`` (and one more ``lra_release/``), for
    ``new_aan_pairs.{train,eval,test}.tsv``; the first folder holding any is used.
    FileNotFoundError (saying where it looked) if none is found."""
    root = Path(path).expanduser()
    if root.is_file():
        m = _AAN_NAME.match(root.name)
        return {m.group(1) if m else root.stem: root}
    if not root.is_dir():
        raise FileNotFoundError(f"AAN data path {root} does not exist")
    for sub in _AAN_SUBFOLDERS:
        folder = root / sub if sub else root
        files = {s: folder / AAN_PATTERN.format(split=s) for s in AAN_FILE_SPLITS}
        files = {s: p for s, p in files.items() if p.is_file()}
        if files:
            return files
    looked = ", ".join(str(root / s) if s else str(root) for s in _AAN_SUBFOLDERS)
    raise FileNotFoundError(f"no AAN files (new_aan_pairs.{{train,eval,test}}.tsv) in "
                            f"{looked}")


def read_aan(path: str | os.PathLike) -> dict[str, AANSplit]:
    """The AAN splits at `path` (`find_aan_files`): ``{"train"|"eval"|"test":
    AANSplit}`` (those present; ``eval`` is the validation split)."""
    return {s: read_aan_tsv(p) for s, p in find_aan_files(path).items()}


def aan_vocabulary(split: AANSplit, min_freq: int = DEFAULT_MIN_FREQ,
                   char_limit: int | None = AAN_CHAR_LIMIT) -> CharVocabulary:
    """The ``"chars"`` vocabulary of Retrieval: built on both texts of every pair of
    `split` (the training split), each cut to `char_limit` characters as encoded."""
    cut = (lambda t: t) if char_limit is None else (lambda t: t[:int(char_limit)])
    return CharVocabulary.build((cut(t) for t in [*split.text1, *split.text2]), min_freq)


@dataclasses.dataclass(frozen=True, eq=False)
class PairArrays:
    """An AAN split encoded: two `TokenArrays` (first and second documents), labels.

    Attributes:
      first, second: the encoded ``text1`` / ``text2`` documents.
      labels: (n,) int64.
    """

    first: TokenArrays
    second: TokenArrays
    labels: np.ndarray

    @classmethod
    def from_split(cls, split: AANSplit, encoding: str, max_length: int | None,
                   vocab: CharVocabulary | None = None, *,
                   char_limit: int | None = AAN_CHAR_LIMIT) -> PairArrays:
        """Encode both documents of every pair: cut to `char_limit` characters (LRA's
        10,000), then `encode_document` truncating to `max_length` tokens."""
        kw = {"char_limit": char_limit}
        return cls(TokenArrays.from_texts(split.text1, encoding, max_length, vocab, **kw),
                   TokenArrays.from_texts(split.text2, encoding, max_length, vocab, **kw),
                   np.asarray(split.labels, np.int64))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return self.first.channels

    def batch(self, indices: Sequence[int], pad_to: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (b, 2, pad_to) int32, -1 at padding, lengths (b, 2) int32)``; `pad_to`
        None: the longest document of the batch (either side)."""
        if pad_to is None:
            idx = np.asarray(indices, np.int64).reshape(-1)
            pad_to = int(max(self.first.lengths[idx].max(initial=0),
                             self.second.lengths[idx].max(initial=0))) if idx.size else 0
        a, la = self.first.batch(indices, pad_to)
        b, lb = self.second.batch(indices, pad_to)
        return np.stack([a, b], axis=1), np.stack([la, lb], axis=1)


def _aan_document(rng: np.random.Generator, topic: int) -> str:
    words = []
    own = _TOPICS[topic]
    for _ in range(int(rng.integers(20, 60))):
        pool = own if rng.random() < 0.7 else _COMMON
        words.append(pool[int(rng.integers(len(pool)))])
    return " ".join(words)


_TOPICS = (
    ("parser", "treebank", "syntax", "dependency", "constituent", "grammar", "parse",
     "head-driven", "CCG", "chart"),
    ("alignment", "bilingual", "decoder", "phrase-based", "BLEU", "reordering",
     "translation", "Français", "source-target", "lexicon"),
    ("acoustic", "speech", "phoneme", "prosody", "recognizer", "HMM", "spoken",
     "utterance", "pitch", "formant"),
    ("sentiment", "polarity", "opinion", "review", "subjective", "emotion",
     "positive", "negative", "rating", "aspect"),
    ("retrieval", "query", "ranking", "index", "document", "search", "relevance",
     "TF-IDF", "recall", "précision"),
    ("semantic", "frame", "role", "WordNet", "sense", "ontology", "lexical",
     "entailment", "predicate", "λ-calculus"),
)
_COMMON = ("we", "the", "a", "model", "results", "show", "paper", "approach", "data",
           "method", "in", "of", "propose", "\"novel\"", "'baseline'", "corpus", "et al.",
           "(2004)", "—", "evaluate")


def _aan_rows(n: int, rng: np.random.Generator, first_id: int) -> list[tuple]:
    rows = []
    labels = rng.permutation(np.arange(n) % 2).tolist()      # balanced
    for i, label in enumerate(labels):
        t1 = int(rng.integers(len(_TOPICS)))
        t2 = t1 if label else int((t1 + rng.integers(1, len(_TOPICS))) % len(_TOPICS))
        ids = [f"{'PCEJN'[int(rng.integers(5))]}{int(rng.integers(79, 100)):02d}-"
               f"{first_id + 2 * i + k:04d}" for k in range(2)]
        rows.append((label, ids[0], ids[1], _aan_document(rng, t1), _aan_document(rng, t2)))
    return rows


def write_aan_fixture(folder: str | os.PathLike, sizes: Sequence[int] = (40, 10, 10),
                      seed: int = 0) -> Path:
    """Write GENERATED, seeded ``new_aan_pairs.{train,eval,test}.tsv`` into `folder` in
    the exact format (no header, 5 tab-separated columns, texts with quotes and
    non-ASCII).  Each document draws most words from its topic's list; label 1 means
    both documents share a topic (so the task is learnable).  The ``eval`` file writes
    its labels ``0.0``/``1.0``, the others ``0``/``1``.  Files are written atomically.
    Returns `folder`."""
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, eval, test), got {sizes!r}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    start = 0
    for split, size in zip(AAN_FILE_SPLITS, sizes):
        rows = _aan_rows(int(size), rng, start)
        start += 2 * int(size)
        fmt = "{:.1f}" if split == "eval" else "{:d}"
        lines = ["\t".join((fmt.format(r[0]),) + r[1:]) + "\n" for r in rows]
        data = "".join(lines).encode("utf-8")
        atomic_write(folder / AAN_PATTERN.format(split=split), lambda f, d=data: f.write(d))
    return folder


# ---------------------------------------------------------------------------- TFDS
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
lra_text: download aclImdb_v1.tar.gz (https://ai.stanford.edu/~amaas/data/sentiment/)
and put it, or the unpacked aclImdb/ folder, in the manual directory.
lra_retrieval: download lra_release.gz from the Long Range Arena repository
(https://github.com/google-research/long-range-arena), unpack it and put the folder
tsv_data/ (new_aan_pairs.train.tsv, new_aan_pairs.eval.tsv, new_aan_pairs.test.tsv),
or the three files themselves, in the manual directory.
The manual directory is `<data_dir>/downloads/manual/` (data_dir defaults to
~/tensorflow_datasets) or the folder given as manual_dir (--manual_dir DIR to
`tfds build`).
"""


def _manual_dir(dl_manager) -> Path:
    # Raises TFDS's AssertionError (with the instructions) when missing or empty.
    return Path(dl_manager.manual_dir)


def _info(builder, features, supervised, citation):
    return dataset_info(builder, features, description=__doc__.split("\n\n")[0],
                        homepage=HOMEPAGE, citation=citation, supervised_keys=supervised)


def _text_builder_class():
    """Define (once) and return the ``lra_text`` builder class."""
    global _TEXT_BUILDER
    if _TEXT_BUILDER is not None:
        return _TEXT_BUILDER
    tfds = import_tfds()

    class LraTextBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``lra_text``: labelled IMDB reviews from the manual dir."""

        name = TEXT_NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "IMDB review bytes, label (neg 0, pos 1), sorted by (label, id)."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

        def __init__(self, *, file_format: str = "array_record", **kwargs: Any):
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            return _info(self, {
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(IMDB_CLASSES))},
                ("text", "label"),
                "Maas et al. (2011), Learning Word Vectors for Sentiment Analysis; "
                "Tay et al. (2021), Long Range Arena.")

        def _split_generators(self, dl_manager):
            where = find_imdb(_manual_dir(dl_manager))
            data = read_imdb(where)
            self.info.metadata.update({"source": where.name})
            return {s: self._generate_examples(*data[s]) for s in IMDB_FILE_SPLITS}

        def _generate_examples(self, texts, labels):
            for i, (text, label) in enumerate(zip(texts, labels.tolist())):
                yield i, {"text": text, "label": label}

    _TEXT_BUILDER = LraTextBuilder
    return LraTextBuilder


def _retrieval_builder_class():
    """Define (once) and return the ``lra_retrieval`` builder class."""
    global _RETRIEVAL_BUILDER
    if _RETRIEVAL_BUILDER is not None:
        return _RETRIEVAL_BUILDER
    tfds = import_tfds()

    class LraRetrievalBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``lra_retrieval``: AAN pairs from the manual dir's TSVs."""

        name = RETRIEVAL_NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "AAN text1/text2 (UTF-8 bytes), id1/id2, label; file order."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

        def __init__(self, *, file_format: str = "array_record", **kwargs: Any):
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            return _info(self, {
                "text1": tfds.features.Text(), "text2": tfds.features.Text(),
                "id1": tfds.features.Text(), "id2": tfds.features.Text(),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES)},
                None,
                "Radev et al. (2013), The ACL Anthology Network Corpus; Tay et al. "
                "(2021), Long Range Arena.")

        def _split_generators(self, dl_manager):
            files = find_aan_files(_manual_dir(dl_manager))
            self.info.metadata.update(
                {"source_files": {s: p.name for s, p in files.items()}})
            names = {"train": "train", "eval": "validation", "test": "test"}
            return {names.get(s, s): self._generate_examples(p) for s, p in files.items()}

        def _generate_examples(self, path):
            split = read_aan_tsv(path)
            for i in range(len(split)):
                yield i, {"text1": _as_bytes(split.text1[i]),
                          "text2": _as_bytes(split.text2[i]),
                          "id1": _as_bytes(split.id1[i]), "id2": _as_bytes(split.id2[i]),
                          "label": int(split.labels[i])}

    _RETRIEVAL_BUILDER = LraRetrievalBuilder
    return LraRetrievalBuilder


_TEXT_BUILDER = None
_RETRIEVAL_BUILDER = None

# The builder classes are built on first access so that importing this module does not
# import tensorflow_datasets.
__getattr__ = lazy_builder_attribute(__name__, {
    "LraTextBuilder": _text_builder_class,
    "LraRetrievalBuilder": _retrieval_builder_class})


def prepare_text(manual_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, **kw: Any):
    """Build (or reuse) ``lra_text`` in `data_dir` from the IMDB archive or folder in
    `manual_dir` (default TFDS's ``<data_dir>/downloads/manual``).  Returns the
    builder (`TextSource` reads it)."""
    return prepare(_text_builder_class()(
        data_dir=None if data_dir is None else str(data_dir), **kw), manual_dir)


def prepare_retrieval(manual_dir: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None, **kw: Any):
    """Build (or reuse) ``lra_retrieval`` in `data_dir` from the AAN TSVs in
    `manual_dir`.  Returns the builder (`PairSource` reads it)."""
    return prepare(_retrieval_builder_class()(
        data_dir=None if data_dir is None else str(data_dir), **kw), manual_dir)


class _Source:
    """Random access to a prepared split (``tfds.data_source``).

    `builder_or_dir`: a prepared builder; a dataset version folder (holding
    ``dataset_info.json``); a TFDS data_dir; or an opened data source."""

    NAME = ""
    SPLITS: ClassVar[dict[str, str]] = {}

    def __init__(self, builder_or_dir: Any, split: str = "train", *, chunk: int = 1024):
        split = self.SPLITS.get(split, split)
        if isinstance(builder_or_dir, (str, os.PathLike)):
            tfds = import_tfds()
            folder = Path(builder_or_dir).expanduser()
            if (folder / "dataset_info.json").is_file():
                self.source = tfds.builder_from_directory(str(folder)).as_data_source(
                    split=split)
            else:
                self.source = tfds.data_source(self.NAME, split=split,
                                               data_dir=str(folder))
            self.name = f"{folder}:{split}"
        elif hasattr(builder_or_dir, "as_data_source"):
            self.source = builder_or_dir.as_data_source(split=split)
            self.name = f"{builder_or_dir.name}:{split}"
        else:
            self.source = builder_or_dir
            self.name = repr(builder_or_dir)
        self.split = split
        self._chunk = int(chunk)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64 labels (read on first use; touches every record once)."""
        if self._labels is None:
            self._labels = read_field(self.source, "label", np.int64, self._chunk)
        return self._labels

    def _records(self, indices: Sequence[int]) -> list[dict]:
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name}: index out of range [0, {len(self)})")
        return read_records(self.source, idx.tolist())


class TextSource(_Source):
    """A prepared ``lra_text`` split.  `split`: ``train``, ``test``, ``val`` /
    ``validation`` (= ``test``, `IMDB_SPLITS`) or TFDS slicing.  ``texts(indices)``
    gives the reviews' bytes, ``labels`` (n,) int64."""

    NAME = TEXT_NAME
    SPLITS: ClassVar[dict[str, str]] = {"val": "test", "validation": "test"}

    def texts(self, indices: Sequence[int]) -> list[bytes]:
        return [bytes(r["text"]) for r in self._records(indices)]

    def read_all(self) -> tuple[list[bytes], np.ndarray]:
        """Every review's bytes and the (n,) int64 labels, each record read once."""
        recs = self._records(range(len(self)))
        return [bytes(r["text"]) for r in recs], np.array([r["label"] for r in recs],
                                                           np.int64)


class PairSource(_Source):
    """A prepared ``lra_retrieval`` split.  `split`: ``train``, ``validation`` (aliases
    ``val``, ``eval``), ``test`` or TFDS slicing.  ``texts(indices)`` gives ``(text1,
    text2)`` lists of str (as `AANSplit`), ``ids(indices)`` ``(id1, id2)``,
    ``labels`` (n,) int64."""

    NAME = RETRIEVAL_NAME
    SPLITS: ClassVar[dict[str, str]] = {"val": "validation", "eval": "validation"}

    def texts(self, indices: Sequence[int]) -> tuple[list[str], list[str]]:
        recs = self._records(indices)
        return ([_as_str(bytes(r["text1"])) for r in recs],
                [_as_str(bytes(r["text2"])) for r in recs])

    def ids(self, indices: Sequence[int]) -> tuple[list[str], list[str]]:
        recs = self._records(indices)
        return ([_as_str(bytes(r["id1"])) for r in recs],
                [_as_str(bytes(r["id2"])) for r in recs])

    def read_all(self, char_limit: int | None = None) -> AANSplit:
        """The whole split as an `AANSplit`, each record read once; `char_limit` as
        `read_aan_tsv`'s."""
        cut = _char_cut(char_limit)
        recs = self._records(range(len(self)))
        return AANSplit([_as_str(bytes(r["text1"]))[cut] for r in recs],
                        [_as_str(bytes(r["text2"]))[cut] for r in recs],
                        np.array([r["label"] for r in recs], np.int64),
                        [_as_str(bytes(r["id1"])) for r in recs],
                        [_as_str(bytes(r["id2"])) for r in recs], self.name)
