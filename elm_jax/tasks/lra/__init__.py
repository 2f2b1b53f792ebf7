"""Long Range Arena task family: ListOps, Pathfinder, Path-X, Text, Retrieval, Image.

Modules: `listops` (generator, official TSV reader/writer, tokeniser, TFDS builder),
`pathfinder` (stimulus generator, official PNG + metadata layout reader/writer, grey
quantisation, TFDS builder), `text` (IMDB archive and AAN TSV readers, byte and
character encodings, fixture writers, TFDS builders), `image` (CIFAR-10 python and
binary archives, grey conversion, seeded split, fixture writer, TFDS builder),
`task` (the ``listops``, ``pathfinder`` and ``pathx`` tasks and the shared sequence
classification data), `archive_tasks` (``lra_text``, ``lra_retrieval``,
``lra_image``), `presets` (Table S2 / S3 settings and small CPU presets).
"""
