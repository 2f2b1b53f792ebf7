"""SYNTHETIC spike digits in SHD's layout: a seeded offline stand-in for SHD.

Nothing here is recorded speech.  The generator only imitates the shape of SHD data so
that every code path (reading, binning, splits, SHD-Adding, training, evaluation) runs
on a fresh machine without the download, and tests have small learnable files:

* 700 channels, spike times in seconds (float16 when written), units uint16, labels,
  speakers, ``extra/keys`` prefixed ``synthetic-``, ``extra/meta_info`` and a root
  ``description`` attribute that say SYNTHETIC;
* each class is a fixed spatio-temporal pattern: 3-5 consecutive "syllables", each a
  few channel bands (a centre channel and a width, like formants on the cochlea) that
  fire at a class-specific rate over the syllable's time span;
* each speaker shifts every band by a few channels (pitch/timbre), speaks faster or
  slower (tempo 0.75-1.45) and louder or softer (rate gain);
* each sample jitters onset (0-50 ms), tempo (+-8 %), band centres (+-4 channels) and
  draws its spikes as Poisson processes, plus sparse spontaneous spikes on all
  channels that run 150 ms past the word.  The last spike of a sample falls at about
  0.6-1.1 s (with some seeds a few spikes fall after 1 s, as in SHD).

Samples are ordered by speaker, then label cycling ``0, 1, ..., C-1``; every sample is
a pure function of ``(seed, speaker, sample index)``, the class patterns of
``(seed, class)`` and the speaker traits of ``(seed, speaker)``.  A 200-sample file
with the defaults takes well under a second to generate.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from .formats import NUM_CHANNELS, SHD_FILES, SpikeDataset, write_dataset

_ENGLISH = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_GERMAN = ("null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht",
           "neun")
DESCRIPTION = ("SYNTHETIC spike digits (elm_jax.tasks.spoken_digits.synthetic): seeded "
               "class-dependent spatio-temporal spike patterns in the SHD HDF5 layout; "
               "not recorded speech, not SHD")


def synthetic_class_names(num_classes: int) -> tuple[str, ...]:
    """``synthetic-english-zero`` ... ``synthetic-german-neun`` (SHD's 20 classes in
    SHD's order), ``synthetic-class-k`` beyond 20."""
    names = [f"english-{w}" for w in _ENGLISH] + [f"german-{w}" for w in _GERMAN]
    return tuple(f"synthetic-{names[k]}" if k < len(names) else f"synthetic-class-{k}"
                 for k in range(num_classes))


def _class_pattern(seed: int, label: int, num_channels: int) -> list[tuple]:
    """Syllables of a class: ``(start, end (fractions of the word), centres (bands,),
    widths (bands,), rates Hz per channel (bands,))``."""
    rng = np.random.default_rng([seed, 1, label])
    cuts = np.sort(rng.uniform(0.1, 0.9, rng.integers(2, 5)))
    edges = np.concatenate([[0.0], cuts, [1.0]])
    out = []
    for a, b in itertools.pairwise(edges):
        bands = rng.integers(2, 5)
        # bands on the apical (low-frequency) part, units 175-665, where speech drives SHD
        centres = rng.uniform(0.25 * num_channels, 0.95 * num_channels, bands)
        widths = rng.uniform(0.01, 0.04, bands) * num_channels
        rates = rng.uniform(20.0, 60.0, bands)
        out.append((a, b, centres, widths, rates))
    return out


def _speaker_traits(seed: int, speaker: int) -> tuple[float, float, float]:
    """(channel shift, tempo, rate gain) of a speaker."""
    rng = np.random.default_rng([seed, 2, speaker])
    return (float(rng.uniform(-15, 15)), float(rng.uniform(0.75, 1.45)),
            float(rng.uniform(0.75, 1.3)))


def synthetic_sample(seed: int, label: int, speaker: int, index: int, *,
                     num_channels: int = NUM_CHANNELS, word_s: float = 0.6,
                     spontaneous_hz: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic sample: ``(times (n,) float64 seconds, units (n,) int64)``, times
    on the float16 grid (as stored), sorted by time then channel (module docstring)."""
    shift, tempo, gain = _speaker_traits(seed, speaker)
    rng = np.random.default_rng([seed, 3, speaker, index])
    onset = rng.uniform(0.0, 0.05)
    length = word_s * tempo * rng.uniform(0.92, 1.08)
    times, units = [], []
    for a, b, centres, widths, rates in _class_pattern(seed, label, num_channels):
        t0, t1 = onset + a * length, onset + b * length
        for c, w, r in zip(centres, widths, rates):
            centre = c + shift + rng.uniform(-4, 4)
            expected = r * gain * (t1 - t0) * 2.5 * w   # rate x time x channels spanned
            n = rng.poisson(expected)
            times.append(rng.uniform(t0, t1, n))
            units.append(np.rint(rng.normal(centre, w, n)))
    n = rng.poisson(spontaneous_hz * num_channels * (onset + length + 0.15))
    times.append(rng.uniform(0.0, onset + length + 0.15, n))
    units.append(rng.integers(0, num_channels, n).astype(float))
    t, u = np.concatenate(times), np.concatenate(units).astype(np.int64)
    keep = (u >= 0) & (u < num_channels)
    t, u = t[keep].astype(np.float16).astype(np.float64), u[keep]   # the stored grid
    order = np.lexsort((u, t))
    return t[order], u[order]


def synthetic_dataset(num_samples: int = 200, *, num_classes: int = 20,
                      num_speakers: int = 4, first_speaker: int = 0, first_index: int = 0,
                      seed: int = 0,
                      num_channels: int = NUM_CHANNELS, word_s: float = 0.6,
                      source: str = "synthetic") -> SpikeDataset:
    """A SYNTHETIC `SpikeDataset` (module docstring), in memory.

    Args:
      num_samples: samples, split evenly over speakers (the first ones get one more).
      num_classes: classes; labels cycle ``0 .. C-1`` within each speaker.
      num_speakers: speakers, ids ``first_speaker ..`` (use a disjoint range for a test
        file of unseen speakers, as SHD's test set has).
      first_index: sample index of each speaker's first sample (another value gives
        other samples of the same speakers and classes).
      seed: fixes the class patterns, speaker traits and every sample.
      word_s: mean word duration in seconds at tempo 1.
    Returns: `SpikeDataset` with times rounded to float16 (as when written), units
      uint16; ``meta_info`` and ``attrs`` label it synthetic.
    """
    if num_samples < 0 or num_classes < 1 or num_speakers < 1:
        raise ValueError(f"num_samples={num_samples}, num_classes={num_classes}, "
                         f"num_speakers={num_speakers}: expected >= 0, >= 1, >= 1")
    per = [num_samples // num_speakers + (s < num_samples % num_speakers)
           for s in range(num_speakers)]
    times, units, labels, speakers = [], [], [], []
    for s, count in enumerate(per):
        spk = first_speaker + s
        for i in range(count):
            t, u = synthetic_sample(seed, i % num_classes, spk, first_index + i,
                                    num_channels=num_channels, word_s=word_s)
            times.append(t.astype(np.float16))
            units.append(u)
            labels.append(i % num_classes)
            speakers.append(spk)
    n_spk = first_speaker + num_speakers
    return SpikeDataset.from_samples(
        times, units, labels, speakers, source=source,
        class_names=synthetic_class_names(num_classes), num_channels=num_channels,
        meta_info={"gender": np.array([b"synthetic"] * n_spk),
                   "age": np.zeros(n_spk, np.uint16),
                   "body_height": np.zeros(n_spk, np.float32)},
        attrs={"description": DESCRIPTION, "synthetic": "yes", "seed": str(seed)})


def write_synthetic(path: str | os.PathLike, num_samples: int = 200, **kw) -> Path:
    """Write `synthetic_dataset` (same arguments) to `path` in SHD's layout
    (``.h5``, ``.h5.gz`` or ``.h5.zip``)."""
    data = synthetic_dataset(num_samples, **kw)
    return write_dataset(path, data, attrs=dict(data.attrs))


def write_synthetic_shd(folder: str | os.PathLike, *, num_train: int = 400,
                        num_test: int = 100, num_classes: int = 20, num_speakers: int = 4,
                        seed: int = 0) -> dict[str, Path]:
    """A SYNTHETIC stand-in for the SHD download: ``shd_train.h5`` and ``shd_test.h5``
    in `folder`.  The test file holds the training speakers plus one unseen speaker
    (SHD's test set also has speakers never seen in training), samples drawn
    independently of the training ones.  Returns ``{"train": path, "test": path}``."""
    folder = Path(folder)
    train = write_synthetic(folder / SHD_FILES["train"], num_train, num_classes=num_classes,
                            num_speakers=num_speakers, seed=seed)
    # sample indices past the training ones: other samples of the same speakers
    test = write_synthetic(folder / SHD_FILES["test"], num_test, num_classes=num_classes,
                           num_speakers=num_speakers + 1, seed=seed, first_index=num_train)
    return {"train": train, "test": test}
