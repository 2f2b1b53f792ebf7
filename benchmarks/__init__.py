"""Benchmarks of elm_jax: ``python -m benchmarks SUB ...`` from the repository root.

Not part of the installed package (the wheel holds ``elm_jax`` only).  Modules: `cli`
(the subcommands), `common` (machine info, interleaved timing, FLOP counting rule,
JSON + markdown + PNG writers), `matmul` (float32 matmul FLOP rate), `neuronio`
(NeuronIO training step vs the PyTorch per-step design and a Flax LSTM), `throughput`
(tokens/s per backend over T, d_m, batch; the d_m = 150, T = 16k training FLOP
fraction), `memory` (compiled temporary memory by remat mode and T), `suite` (all of
them in priority order), `gpu` (the prepared GPU check), `neuronio_loader` (NeuronIO
data-loader throughput), `cell_step` (the ``nn.RNN(ELMCell)`` step), `torch_baseline`
(the PyTorch per-step ELM, torch optional).  Results: ``benchmarks/results/``.
"""
