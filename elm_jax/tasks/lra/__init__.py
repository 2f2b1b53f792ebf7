"""Long Range Arena task family: ListOps, Pathfinder and Path-X.

Modules: `listops` (generator, official TSV reader/writer, tokeniser, TFDS builder),
`pathfinder` (stimulus generator, official PNG + metadata layout reader/writer, grey
quantisation, TFDS builder), `task` (the ``listops``, ``pathfinder`` and ``pathx``
tasks), `presets` (Table S2 / S3 settings and small CPU presets).
"""
