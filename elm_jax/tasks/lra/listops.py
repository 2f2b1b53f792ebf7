"""ListOps (Nangia & Bowman 2018, as used by the Long Range Arena): the generator, the
official TSV files (writer, strict reader, discovery), the tokeniser and one-hot input,
the ``listops`` TFDS dataset (array_record, no TensorFlow needed) and two random-access
readers with one API (`ListOpsSource` over TFDS, `ListOpsArrays` over the files).

The task (data-formats.md section 3.2): a prefix expression over digits 0-9 with the
operators ``[MIN``, ``[MAX``, ``[MED`` (median, as ``int(numpy.median(args))``) and
``[SM`` (sum mod 10), each closed by ``]``; the target is its value 0..9.

Official files (LRA release folder ``listops-1000/``): ``basic_train.tsv``,
``basic_val.tsv``, ``basic_test.tsv`` with 96,000 / 2,000 / 2,000 rows; a header
``Source<TAB>Target``, then one row per expression.  ``Source`` is the bracketed
string form: every 2-tuple of the left-folded tree is written ``( a b )``, so
``[MAX 2 9 4 ]`` is ``( ( ( ( [MAX 2 ) 9 ) 4 ) ] )``.  The original program writes the
files with Python's ``csv.writer(delimiter="\\t")`` (default dialect ``excel``, whose
line terminator is ``\\r\\n``) through ``tf.io.gfile.GFile``, which does no newline
translation, so official rows end with CRLF, the last one included.  (data-formats.md
does not state the line ending; this was read in the original generator,
``lra_benchmarks/data/listops.py``.)  `write_listops_tsv` therefore writes ``\\r\\n``
by default; `read_listops_tsv` accepts CRLF and LF, with or without a final newline.

Tokens (`VOCAB`, fixed, 16 ids): ``<pad>`` = 0, the digits ``"0".."9"`` = 1..10,
``[MIN [MAX [MED [SM`` = 11..14 and ``]`` = 15.  Parentheses are dropped (they carry
no information: the prefix form with ``]`` is unambiguous).  LRA renames ``]`` to
``X``; we keep ``]``.  The model input is `one_hot` with `INPUT_DIM` = 15 features:
id ``k > 0`` sets feature ``k - 1`` and padding is the all-zero vector, so a padded
step feeds nothing into the neuron, and since the class is read at each sequence's
last real token (``lengths - 1``), padding after it can never change a prediction.

Generator (`generate_tree`, `generate_listops`): the published grammar: a node at
depth < max_depth is an operator with probability 0.25 (else, and always at
max_depth, a uniform digit); an operator node has 2..max_args children (uniform) and a
uniform operator; a tree's length (tokens without parentheses) is
``1 + sum(children + 1 over operator nodes)``.  Trees are kept if
``min_length < length < max_length`` and not seen before (rejection sampling; only about
8 % of random trees fall in (500, 2000)).  Unlike the original (Python ``random`` and a
``set``, so an arbitrary order) ours is seeded with a NumPy ``Generator`` and returns
rows in generation order, so a seed gives the same files on every machine.  Speed:
the tree is grown with an explicit stack (no recursion), uniforms are drawn in blocks,
and a tree is abandoned as soon as its length is known to reach `max_length`.
Measured 2026-12-04 on one CPU core of the development machine::

    /work/venv/bin/python -c "import time; from elm_jax.tasks.lra.listops import \\
    generate_listops as g; t=time.time(); g(2000, 0); print(2000/(time.time()-t))"

1,090-1,330 rows/s over three runs (1,220 rows/s for 5,000 rows) at the official
settings, so the 100,000 official rows take about 80 s; ~12 trees are drawn per kept
row.  Reading: `read_listops_tsv` ~7,700 rows/s, `ListOpsArrays.from_tsv` ~2,400.

TFDS (`prepare_listops`, builder ``listops`` defined on first use so that importing
this module does not import tensorflow_datasets): the official files are read from
the manual directory when it holds them (`MANUAL_DOWNLOAD_INSTRUCTIONS`), otherwise
the splits are generated from the config's seed and sizes.  Records (in file order,
shuffling disabled): ``tokens`` (n,) int32 ids, ``label`` ClassLabel(10).
Built with ``file_format="array_record"`` and read with ``tfds.data_source`` /
``as_data_source`` only (data-formats.md section 4: both work without TensorFlow).

Readers: ``ListOpsSource(builder_or_dir, split)`` and ``ListOpsArrays.from_tsv(path)``
share ``len()``, ``labels`` (n,) int32 and ``batch(indices) -> (tokens (b, L) int32,
lengths (b,) int32, labels (b,) int32)`` (L = longest in the batch or `pad_to`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
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

NAME = "listops"

# ---------------------------------------------------------------------------- tokens
PAD = "<pad>"
DIGITS = tuple(str(d) for d in range(10))
MIN, MAX, MED, SUM_MOD = "[MIN", "[MAX", "[MED", "[SM"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
END = "]"
#: The token vocabulary: id 0 = padding, 1..10 digits, 11..14 operators, 15 = ``]``.
VOCAB: tuple[str, ...] = (PAD, *DIGITS, *OPERATORS, END)
NUM_TOKENS = len(VOCAB)
#: Features of the one-hot model input (padding is the zero vector; see module doc).
INPUT_DIM = NUM_TOKENS - 1
NUM_CLASSES = 10
TOKEN_IDS = {tok: i for i, tok in enumerate(VOCAB)}
#: Tokens allowed in a ``Source`` string (parentheses are dropped by `tokenize`).
SOURCE_TOKENS = frozenset(VOCAB[1:]) | {"(", ")"}
#: Probability that a node above max_depth is an operator (the published VALUE_P).
OPERATOR_P = 0.25
#: The official split sizes (train, val, test) and file split names.
OFFICIAL_SIZES = (96000, 2000, 2000)
FILE_SPLITS = ("train", "val", "test")
HEADER = ("Source", "Target")

# One character per token after the operators are renamed: a lookup table from bytes.
_OP_CHARS = {MIN: "a", MAX: "b", MED: "c", SUM_MOD: "d"}
_BYTE_IDS = np.full(256, -1, np.int16)
for _tok, _id in TOKEN_IDS.items():
    if _id:
        _BYTE_IDS[ord(_OP_CHARS.get(_tok, _tok))] = _id
del _tok, _id


class ListOpsFormatError(ValueError):
    """A ListOps file or string could not be read; the message names the file and line."""


def _ids_of_tokens(toks: list[str]) -> np.ndarray:
    """int32 ids of whitespace-split tokens already checked against SOURCE_TOKENS."""
    text = "".join(t for t in toks if t != "(" and t != ")")
    for op, ch in _OP_CHARS.items():
        text = text.replace(op, ch)
    return _BYTE_IDS[np.frombuffer(text.encode("ascii"), np.uint8)].astype(np.int32)


def _check_tokens(toks: list[str]) -> None:
    bad = set(toks) - SOURCE_TOKENS
    if bad:
        first = next(t for t in toks if t in bad)
        raise ListOpsFormatError(f"unknown ListOps token {first!r} (known: "
                                 f"{' '.join(VOCAB[1:])} and parentheses)")


def tokenize(source: str) -> np.ndarray:
    """Token ids (n,) int32 of a ``Source`` string: parentheses dropped, ``]`` kept.

    Raises ListOpsFormatError naming the first unknown token."""
    toks = source.split()
    _check_tokens(toks)
    return _ids_of_tokens(toks)


def pad_batch(sequences: Sequence[np.ndarray], pad_to: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D id arrays into ``(tokens (n, L) int32, lengths (n,) int32)``, padding
    with 0; L = the longest sequence, or `pad_to` (ValueError if one is longer)."""
    lengths = np.array([len(s) for s in sequences], np.int32)
    longest = int(lengths.max(initial=0))
    width = longest if pad_to is None else int(pad_to)
    if longest > width:
        raise ValueError(f"a sequence has {longest} tokens, more than pad_to={width} "
                         f"(pass max_length to truncate)")
    out = np.zeros((len(sequences), width), np.int32)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = seq
    return out, lengths


def encode(sources: Iterable[str | np.ndarray], max_length: int | None = None,
           pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise and pad a batch: ``(tokens (n, L) int32, lengths (n,) int32)``.

    `sources` are ``Source`` strings (or already tokenised id arrays).  A sequence
    longer than `max_length` keeps its first `max_length` tokens (as LRA truncates to
    2000; official sequences are shorter).  L is the longest (truncated) length, or
    `pad_to` when given; a sequence still longer than `pad_to` raises ValueError.
    Padding is id 0; row ``i``'s real tokens are ``tokens[i, :lengths[i]]``."""
    seqs = [tokenize(s) if isinstance(s, str) else np.asarray(s, np.int32)
            for s in sources]
    if max_length is not None:
        seqs = [s[:int(max_length)] for s in seqs]
    return pad_batch(seqs, pad_to)


def one_hot(tokens: np.ndarray) -> np.ndarray:
    """(n, L) int ids -> (n, L, INPUT_DIM) float32 one-hot (NumPy); id k > 0 sets
    feature k - 1, padding (0) is all zeros.  Works for any leading shape."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= NUM_TOKENS):
        raise ValueError(f"token ids must lie in [0, {NUM_TOKENS})")
    return np.eye(NUM_TOKENS, dtype=np.float32)[:, 1:][tokens]


# ---------------------------------------------------------------------------- generator
#: A tree: a digit (int), or the left-folded 2-tuples of the original program:
#: ``((((op, c0), c1), ...), "]")``.
Tree = int | tuple


def _uniforms(rng: np.random.Generator, block: int = 8192) -> Iterator[float]:
    """An endless stream of U[0, 1) floats drawn from `rng` in blocks."""
    while True:
        yield from rng.random(block).tolist()


def _fold(op: str, children: list) -> tuple:
    tree: tuple = (op, children[0])
    for child in children[1:]:
        tree = (tree, child)
    return (tree, END)


def _fold_fast(op: str, children: list) -> tuple[str, int]:
    """`_fold` straight to ``(tree_to_string, evaluate)`` of the folded tree."""
    k = len(children)
    text = ("( " * (k + 1) + op + " " + " ) ".join([c[0] for c in children])
            + " ) ] )")
    return text, apply_operator(op, [c[1] for c in children])


_LEAVES = tuple(range(10))
_FAST_LEAVES = tuple((str(d), d) for d in range(10))


def _grow(uniform: Callable[[], float], depth: int, max_depth: int, max_args: int,
          limit: int | None, leaves: Sequence[Any] = _LEAVES,
          fold: Callable[[str, list], Any] = _fold) -> tuple[Any, int]:
    """Grow one tree (explicit stack, pre-order).  Returns ``(tree, length)``, or
    ``(None, bound)`` as soon as the length is known to exceed `limit`: each open
    operator still owes its ``]`` and >= 1 token per missing child, so ``length``
    (``1 + sum(k + 1)`` over the operators opened so far) is a lower bound.

    A digit d becomes ``leaves[d]`` and a finished operator ``fold(op, children)``:
    by default the tuple tree; `_FAST_LEAVES` / `_fold_fast` give ``(string, value)``
    directly (the same random draws, so the same trees)."""
    span = max_args - 1
    stack: list[list] = []          # [operator, number of children, children, depth]
    length = 1
    d = depth
    while True:
        if d < max_depth and uniform() <= OPERATOR_P:
            k = 2 + int(uniform() * span)
            op = OPERATORS[int(uniform() * 4)]
            length += k + 1
            if limit is not None and length > limit:
                return None, length
            stack.append([op, k, [], d])
            d += 1
            continue
        node = leaves[int(uniform() * 10)]
        while stack:
            frame = stack[-1]
            frame[2].append(node)
            if len(frame[2]) < frame[1]:
                break
            stack.pop()
            node = fold(frame[0], frame[2])
        else:
            return node, length
        d = stack[-1][3] + 1


def _stream(rng: np.random.Generator | int | None) -> Callable[[], float]:
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return _uniforms(gen).__next__


def generate_tree(rng: np.random.Generator | int, depth: int = 1, max_depth: int = 10,
                  max_args: int = 10, *, abort_above: int | None = None
                  ) -> tuple[Tree | None, int]:
    """One random tree of the published grammar: ``(tree, length)``.

    `rng` is a NumPy Generator (uniforms are drawn from it in blocks) or a seed.  The
    root is at `depth`; nodes at `max_depth` are digits.  With `abort_above`, growth
    stops as soon as the length must exceed it and ``(None, lower_bound)`` is
    returned."""
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    return _grow(_stream(rng), depth, max_depth, max_args, abort_above)


def _walk(tree: Tree, parens: bool) -> Iterator[str]:
    """The tokens of `tree` in order (iterative: no recursion limit)."""
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            if parens:
                stack.append(")")
            stack.append(item[1])
            stack.append(item[0])
            if parens:
                yield "("
        elif isinstance(item, str):
            yield item
        else:
            yield str(int(item))


def tree_to_string(tree: Tree) -> str:
    """The official bracketed form: each 2-tuple ``(a, b)`` as ``( a b )``."""
    return " ".join(_walk(tree, parens=True))


def tree_tokens(tree: Tree) -> list[str]:
    """The tokens of `tree` without parentheses (their count is the tree's length)."""
    return list(_walk(tree, parens=False))


def apply_operator(op: str, args: Sequence[int]) -> int:
    """MIN, MAX, MED (``int(numpy.median)``: the lower-rounded mean of the two middle
    values for an even count) or SM (sum mod 10) of digit `args`."""
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    if op == SUM_MOD:
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate_tokens(tokens: Iterable[str]) -> int:
    """Value of a prefix token sequence (parentheses allowed and ignored)."""
    stack: list[list] = []
    value = None
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        if tok in OPERATORS:
            stack.append([tok, []])
            continue
        if tok == END:
            if not stack:
                raise ValueError("unbalanced ']' in ListOps expression")
            op, args = stack.pop()
            v = apply_operator(op, args)
        elif tok in DIGITS:
            v = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
        if stack:
            stack[-1][1].append(v)
        elif value is None:
            value = v
        else:
            raise ValueError("ListOps expression has trailing tokens")
    if stack or value is None:
        raise ValueError("incomplete ListOps expression")
    return value


def evaluate(tree: Tree) -> int:
    """The value 0..9 of `tree`."""
    return evaluate_tokens(_walk(tree, parens=False))


def generate_listops(num: int, seed: int | np.random.Generator, *,
                     min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
                     max_args: int = 10, exclude: Collection[str] = (),
                     max_attempts: int | None = None) -> list[tuple[str, int]]:
    """`num` distinct ``(source, target)`` rows with ``min_length < length <
    max_length`` (rejection sampling), in generation order, deterministic per seed.

    `exclude`: sources (official strings) that must not be produced (e.g. rows of an
    existing file).  `max_attempts` (default ``1000 * num + 10**6``) bounds the trees
    tried; reaching it raises RuntimeError (bounds admitting too few distinct trees)."""
    if not min_length + 1 < max_length:
        raise ValueError(f"no length lies strictly between min_length={min_length} "
                         f"and max_length={max_length}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    uniform = _stream(seed)
    seen = set(exclude)
    rows: list[tuple[str, int]] = []
    budget = 1000 * num + 10**6 if max_attempts is None else int(max_attempts)
    attempts = 0
    while len(rows) < num:
        attempts += 1
        if attempts > budget:
            raise RuntimeError(f"only {len(rows)} of {num} distinct ListOps trees with "
                               f"{min_length} < length < {max_length} after {budget} "
                               f"trees; widen the bounds")
        node, length = _grow(uniform, 1, max_depth, max_args, max_length - 1,
                             _FAST_LEAVES, _fold_fast)
        if node is None or length <= min_length or node[0] in seen:
            continue
        seen.add(node[0])
        rows.append(node)
    return rows


# ---------------------------------------------------------------------------- files
def write_listops_tsv(path: str | os.PathLike, rows: Iterable[tuple[str, int]],
                      line_ending: str = "\r\n") -> Path:
    """Write an official-format TSV (header ``Source<TAB>Target``), atomically.

    `line_ending` defaults to CRLF, as the original program's csv writer ends rows
    (module doc); every row, the last included, ends with it."""
    lines = ["\t".join(HEADER)]
    for source, target in rows:
        if "\t" in source or "\n" in source or "\r" in source or '"' in source:
            raise ValueError(f"{path}: source {source[:40]!r}... has a tab, quote or "
                             "newline")
        lines.append(f"{source}\t{int(target)}")
    data = (line_ending.join(lines) + line_ending).encode("ascii")
    return atomic_write(path, lambda f: f.write(data))


def write_listops_splits(directory: str | os.PathLike, seed: int,
                         sizes: Sequence[int] = OFFICIAL_SIZES, task_name: str = "basic",
                         *, line_ending: str = "\r\n", **generator_kwargs: Any
                         ) -> dict[str, Path]:
    """Generate ``sum(sizes)`` distinct rows (`generate_listops` with `seed` and
    `generator_kwargs`) and write them, in order, to ``<task>_train.tsv``,
    ``<task>_val.tsv``, ``<task>_test.tsv``.  Returns ``{"train"|"val"|"test": path}``."""
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test), got {sizes!r}")
    rows = generate_listops(int(sum(sizes)), seed, **generator_kwargs)
    out: dict[str, Path] = {}
    start = 0
    for split, size in zip(FILE_SPLITS, sizes):
        out[split] = write_listops_tsv(Path(directory) / f"{task_name}_{split}.tsv",
                                       rows[start:start + int(size)], line_ending)
        start += int(size)
    return out


_INT = re.compile(r"[0-9]+")


def read_listops_tsv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read an official-format TSV: ``(sources list[str], targets (n,) int32)``.

    Accepts CRLF or LF rows and a missing final newline.  Strict: the header must be
    ``Source<TAB>Target``, each row two tab-separated fields, the target an integer
    0..9 and every source token in `VOCAB` (or a parenthesis); errors are
    ListOpsFormatError naming the file and the 1-based line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read ListOps file ({err})") from err
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        raise ListOpsFormatError(f"{path}: not an ASCII text file ({err})") from err
    if not text:
        raise ListOpsFormatError(f"{path}: empty file (expected the header "
                                 f"'Source<TAB>Target')")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    header = lines[0].removesuffix("\r")
    if header.split("\t") != list(HEADER):
        raise ListOpsFormatError(f"{path}: line 1: expected the header "
                                 f"'Source<TAB>Target', found {header[:60]!r}")
    sources: list[str] = []
    targets = np.zeros(len(lines) - 1, np.int32)
    for number, line in enumerate(lines[1:], start=2):
        fields = line.removesuffix("\r").split("\t")
        if len(fields) != 2:
            raise ListOpsFormatError(f"{path}: line {number}: expected 2 tab-separated "
                                     f"fields (Source, Target), found {len(fields)}")
        source, target = fields
        if not _INT.fullmatch(target.strip()) or int(target) > 9:
            raise ListOpsFormatError(f"{path}: line {number}: target {target!r} is not "
                                     f"an integer 0..9")
        toks = source.split()
        if not toks:
            raise ListOpsFormatError(f"{path}: line {number}: empty source")
        try:
            _check_tokens(toks)
        except ListOpsFormatError as err:
            raise ListOpsFormatError(f"{path}: line {number}: {err}") from None
        sources.append(source)
        targets[number - 2] = int(target)
    return sources, targets


_SUBFOLDERS = ("", "listops-1000", "lra_release/listops-1000",
               "lra_release/lra_release/listops-1000")


def find_listops_files(path: str | os.PathLike) -> dict[str, Path]:
    """The split files under `path`: ``{"train"|"val"|"test": Path}`` (the splits
    found).

    A file is returned as ``{"test": path}``.  A folder is searched, then its
    ``listops-1000/`` (and ``lra_release/listops-1000/``) subfolder, for
    ``<task>_train.tsv`` / ``<task>_val.tsv`` / ``<task>_test.tsv`` (any task prefix;
    ``basic`` preferred when several).  FileNotFoundError (listing what was looked
    for) if nothing is found; ValueError if several task prefixes and none is
    ``basic``."""
    root = Path(path).expanduser()
    if root.is_file():
        return {"test": root}
    if not root.is_dir():
        raise FileNotFoundError(f"ListOps data path {root} does not exist")
    for sub in _SUBFOLDERS:
        folder = root / sub if sub else root
        if not folder.is_dir():
            continue
        tasks: dict[str, dict[str, Path]] = {}
        for file in sorted(folder.iterdir()):
            for split in FILE_SPLITS:
                suffix = f"_{split}.tsv"
                if file.is_file() and file.name.endswith(suffix) \
                        and len(file.name) > len(suffix):
                    tasks.setdefault(file.name[:-len(suffix)], {})[split] = file
        if not tasks:
            continue
        if len(tasks) == 1:
            return next(iter(tasks.values()))
        if "basic" in tasks:
            return tasks["basic"]
        raise ValueError(f"{folder}: files of several ListOps tasks "
                         f"{sorted(tasks)}; point at one file or keep one task")
    looked = ", ".join(str(root / s) if s else str(root) for s in _SUBFOLDERS)
    raise FileNotFoundError(f"no ListOps files (*_train.tsv, *_val.tsv, *_test.tsv, "
                            f"e.g. basic_train.tsv) in {looked}")


# ---------------------------------------------------------------------------- arrays
def _split_key(split: str) -> str:
    return {"val": "val", "validation": "val"}.get(split, split)


@dataclasses.dataclass(frozen=True, eq=False)
class ListOpsArrays:
    """A ListOps split held in memory as flat arrays (no TFDS needed).

    Attributes:
      tokens: (total,) uint8 ids of all sequences, one after another.
      offsets: (n + 1,) int64; sequence ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
      labels: (n,) int32 targets.
      source: where it came from.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    source: str = ""

    @classmethod
    def from_sources(cls, sources: Sequence[str], labels: Sequence[int],
                     source: str = "") -> ListOpsArrays:
        seqs = [tokenize(s).astype(np.uint8) for s in sources]
        offsets = np.zeros(len(seqs) + 1, np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.uint8)
        return cls(flat, offsets, np.asarray(labels, np.int32), source)

    @classmethod
    def from_tsv(cls, path: str | os.PathLike, split: str | None = None) -> ListOpsArrays:
        """Read a TSV file, or the `split` file (``train``/``val``/``validation``/
        ``test``) of a folder (`find_listops_files`)."""
        path = Path(path)
        if path.is_dir():
            files = find_listops_files(path)
            key = _split_key(split or "train")
            if key not in files:
                raise FileNotFoundError(f"{path}: no {key} file (found {sorted(files)})")
            path = files[key]
        sources, targets = read_listops_tsv(path)
        return cls.from_sources(sources, targets, str(path))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """(n,) int32 sequence lengths."""
        return np.diff(self.offsets).astype(np.int32)

    def batch(self, indices: Sequence[int], pad_to: int | None = None,
              max_length: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens (b, L) int32, lengths (b,) int32, labels (b,) int32)`` (`encode`
        padding and truncation)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.source}: index out of range [0, {len(self)})")
        seqs = [self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        tokens, lengths = encode(seqs, max_length=max_length, pad_to=pad_to)
        return tokens, lengths, self.labels[idx]


# ---------------------------------------------------------------------------- TFDS
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Optional: to build from the official LRA ListOps files, download lra_release.gz from
the Long Range Arena repository (https://github.com/google-research/long-range-arena),
unpack it and put the folder listops-1000/ (basic_train.tsv, basic_val.tsv,
basic_test.tsv), or the three files themselves, in the manual directory:
`<data_dir>/downloads/manual/` (data_dir defaults to ~/tensorflow_datasets) or the
folder given as manual_dir (--manual_dir DIR to `tfds build`).  Any *_train.tsv /
*_val.tsv / *_test.tsv in that format work.  Without them the splits are generated
from the config's seed and sizes (the published ListOps generator).
"""


def _config_class():
    global _CONFIG
    if _CONFIG is not None:
        return _CONFIG
    tfds = import_tfds()

    @dataclasses.dataclass(eq=False)
    class ListOpsConfig(tfds.core.BuilderConfig):
        """Generation settings used when the manual directory has no files."""

        seed: int = 0
        sizes: tuple[int, int, int] = OFFICIAL_SIZES
        min_length: int = 500
        max_length: int = 2000
        max_depth: int = 10
        max_args: int = 10

    ListOpsConfig.__qualname__ = "ListOpsConfig"
    _CONFIG = ListOpsConfig
    return ListOpsConfig


def make_config(seed: int = 0, sizes: Sequence[int] = OFFICIAL_SIZES, *,
                min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
                max_args: int = 10, name: str | None = None):
    """A ``listops`` builder config; the default name encodes every setting (so
    different settings never share a dataset folder): ``basic`` for the official
    ones, else e.g. ``s1_n20-4-4_l5-60_d10_a10``."""
    sizes = tuple(int(s) for s in sizes)
    settings = (seed, sizes, min_length, max_length, max_depth, max_args)
    if name is None:
        name = "basic" if settings == (0, OFFICIAL_SIZES, 500, 2000, 10, 10) else (
            f"s{seed}_n{'-'.join(map(str, sizes))}_l{min_length}-{max_length}"
            f"_d{max_depth}_a{max_args}")
    return _config_class()(name=name, seed=int(seed), sizes=sizes,
                           min_length=int(min_length), max_length=int(max_length),
                           max_depth=int(max_depth), max_args=int(max_args),
                           description="ListOps (official files or generated)")


def _builder_class():
    """Define (once) and return the ``listops`` builder class (tfds imported lazily)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    tfds = import_tfds()

    class ListOpsBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``listops``: official TSVs from the manual dir, or generated."""

        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "ListOps token ids (VOCAB of elm_jax.tasks.lra.listops), label."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
        BUILDER_CONFIGS: ClassVar[list] = [make_config()]

        def __init__(self, *, file_format: str = "array_record", config: Any = None,
                     seed: int | None = None, sizes: Sequence[int] | None = None,
                     **kwargs: Any):
            gen_keys = ("min_length", "max_length", "max_depth", "max_args")
            gen = {k: kwargs.pop(k) for k in gen_keys if k in kwargs}
            if config is None and (seed is not None or sizes is not None or gen):
                config = make_config(0 if seed is None else seed,
                                     OFFICIAL_SIZES if sizes is None else sizes, **gen)
            super().__init__(file_format=file_format, config=config, **kwargs)

        def _info(self):
            features = {
                "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }
            return dataset_info(
                self, features, description=__doc__.split("\n\n")[0],
                homepage="https://github.com/google-research/long-range-arena",
                supervised_keys=("tokens", "label"),
                citation="Nangia & Bowman (2018), ListOps: A Diagnostic Dataset for "
                         "Latent Tree Learning; Tay et al. (2021), Long Range Arena.")

        def _split_generators(self, dl_manager):
            try:
                manual = Path(dl_manager.manual_dir)
            except AssertionError:           # no (or an empty) manual directory
                manual = None
            files = None
            if manual is not None:
                try:
                    files = find_listops_files(manual)
                except FileNotFoundError:
                    files = None
            cfg = self.builder_config
            if files is None:
                folder = Path(dl_manager.download_dir) / f"generated_{cfg.name}"
                files = write_listops_splits(
                    folder, cfg.seed, cfg.sizes, min_length=cfg.min_length,
                    max_length=cfg.max_length, max_depth=cfg.max_depth,
                    max_args=cfg.max_args)
                origin = "generated"
            else:
                origin = "manual"
            self.info.metadata.update({
                "origin": origin, "vocab": list(VOCAB),
                "source_files": {s: p.name for s, p in files.items()}})
            names = {"train": "train", "val": "validation", "test": "test"}
            return {names[s]: self._generate_examples(p) for s, p in files.items()}

        def _generate_examples(self, path):
            sources, targets = read_listops_tsv(path)
            for i, (source, target) in enumerate(zip(sources, targets)):
                yield i, {"tokens": tokenize(source), "label": int(target)}

    _BUILDER = ListOpsBuilder
    return ListOpsBuilder


_BUILDER = None
_CONFIG = None


# ``ListOpsBuilder`` / ``ListOpsConfig`` are built on first access so that importing
# this module does not import tensorflow_datasets.
__getattr__ = lazy_builder_attribute(__name__, {"ListOpsBuilder": _builder_class,
                                                "ListOpsConfig": _config_class})


def prepare_listops(manual_dir: str | os.PathLike | None = None,
                    data_dir: str | os.PathLike | None = None, **kw: Any):
    """Build (or reuse) the ``listops`` dataset in `data_dir`: from the official files
    in `manual_dir` (default TFDS's ``<data_dir>/downloads/manual``) when present, else
    generated.  `kw`: ``config`` or ``seed``, ``sizes``, ``min_length``,
    ``max_length``, ``max_depth``, ``max_args`` (see `make_config`; they only matter
    when the splits are generated, and name the dataset folder either way).
    ``builder.info.metadata["origin"]`` says ``"manual"`` or ``"generated"``.  Returns
    the builder (``builder.as_data_source()`` or `ListOpsSource` reads it)."""
    return prepare(_builder_class()(data_dir=None if data_dir is None else str(data_dir),
                                    **kw), manual_dir)


class ListOpsSource:
    """A prepared ``listops`` split, random access (``tfds.data_source``; NumPy out).

    Args:
      builder_or_dir: a prepared builder; a dataset version folder (holding
        ``dataset_info.json``); a TFDS data_dir (read with ``tfds.data_source(
        "listops[/config]", data_dir=..., split=...)``); or an opened data source.
      split: ``train``, ``validation`` (alias ``val``), ``test``, or TFDS slicing.
      config: the config name when `builder_or_dir` is a data_dir (default: TFDS's).
    ``labels`` (n,) int32 is read on first use (touches every record once).
    """

    def __init__(self, builder_or_dir: Any, split: str = "train", *,
                 config: str | None = None, chunk: int = 1024):
        split = "validation" if split == "val" else split
        if isinstance(builder_or_dir, (str, os.PathLike)):
            tfds = import_tfds()
            folder = Path(builder_or_dir).expanduser()
            if (folder / "dataset_info.json").is_file():
                self.source = tfds.builder_from_directory(str(folder)).as_data_source(
                    split=split)
            else:
                name = NAME if config is None else f"{NAME}/{config}"
                self.source = tfds.data_source(name, split=split, data_dir=str(folder))
            self.name = f"{folder}:{split}"
        elif hasattr(builder_or_dir, "as_data_source"):
            self.source = builder_or_dir.as_data_source(split=split)
            self.name = f"{builder_or_dir.name}:{split}"
        else:
            self.source = builder_or_dir
            self.name = repr(builder_or_dir)
        self._chunk = int(chunk)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = read_field(self.source, "label", np.int32, self._chunk)
        return self._labels

    def batch(self, indices: Sequence[int], pad_to: int | None = None,
              max_length: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens (b, L) int32, lengths (b,) int32, labels (b,) int32)``."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name}: index out of range [0, {len(self)})")
        recs = read_records(self.source, idx.tolist())
        tokens, lengths = encode([np.asarray(r["tokens"], np.int32) for r in recs],
                                 max_length=max_length, pad_to=pad_to)
        return tokens, lengths, np.array([r["label"] for r in recs], np.int32)
