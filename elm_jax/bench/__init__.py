"""Benchmarks of elm_jax (``elm-jax bench ...``; thin wrappers in ``benchmarks/``).

Modules: `common` (machine info, interleaved timing, FLOP counting rule, JSON + markdown
+ PNG writers), `matmul` (float32 matmul FLOP rate), `neuronio` (NeuronIO training step
vs the PyTorch per-step design and a Flax LSTM), `throughput` (tokens/s per backend over
T, d_m, batch; the d_m = 150, T = 16k training FLOP fraction), `memory` (compiled
temporary memory by remat mode and T), `suite` (all of them in priority order), `gpu`
(the prepared GPU check), `torch_baseline` (the PyTorch per-step ELM, torch optional),
`cli` (the ``bench`` subcommands).
"""
