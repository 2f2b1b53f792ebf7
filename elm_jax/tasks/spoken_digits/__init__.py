"""Spoken digits in SHD's spike format (Spiking Heidelberg Digits and SHD-Adding).

* `formats` -- the HDF5 layout, `SpikeDataset`, `read_shd` / `write_shd`, file discovery;
* `synthetic` -- a seeded synthetic spike-digit generator in that layout (offline
  fallback, tests);
* `preprocess` -- binning as published, splits, input-spike dropout, the SHD and
  SHD-Adding batch samplers (dense bins or `elm_jax.SpikeEvents`);
* `tfds_builder` -- the ``shd`` TFDS builder (array_record, no TensorFlow) and a
  random-access source over the prepared dataset;
* `task` -- the task data (splits, samplers), the classification evaluation
  (accuracy, per-class accuracy, confusion-matrix PNG);
* `presets` -- the ``shd`` and ``shd_adding`` tasks and their presets (registered on
  import; ``elm-jax eval --task shd`` evaluates a model directory).
"""
