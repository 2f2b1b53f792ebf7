"""The NeuronIO training step: JAX ELM vs the PyTorch per-step design vs a Flax LSTM.

The model is the published d_m = 15 Branch-ELM (`ELMConfig.preset
("neuronio_branch_dm15")`: 1278 inputs, 45 branches x 100 synapses, NeuronIO routing,
6,827 parameters), trained as the reference trains it: windows of 500 time steps
(500 ms), batch 8, Adam (lr 5e-4), loss 0.5 * BCE-with-logits(spike) + 0.5 *
MSE(soma) over all time steps.  Inputs are NeuronIO-like signed spikes
(`elm_jax.tasks.neuronio.synthetic_input.neuronio_like_spikes`), targets random (the
cost does not depend on them).

Competitors, all timed interleaved in the same process (ratios are what to read; the
machine is shared):

* JAX ELM through `elm_jax.apply`, with a few public settings (``backend``,
  ``unroll``); one jitted step = value_and_grad + Adam update, params and optimizer
  state donated;
* the PyTorch design of the published implementation (`torch_baseline`: TorchScript
  module, per-step ``dynamics`` over time, per-synapse traces with ``index_select``
  routing, Adam on CPU, ``torch.set_num_threads(threads)``), loaded with the same
  parameters and checked to give the same outputs; only when torch imports;
* Flax ``nn.RNN(nn.OptimizedLSTMCell(h))`` + Dense(2) for the paper's NeuronIO LSTM
  sizes (Table S10: h = 50 has 266K parameters and is the size the ELM is compared
  with; h = 150 is the best LSTM), the same loss and optimizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Callable

import numpy as np

from . import common

NAME = "neuronio_step"

# name -> options of `elm_jax.apply`, plus "input": "events" to feed the batch as
# `elm_jax.SpikeEvents` (built on the host once, as the NeuronIO sampler does; the
# conversion time from a dense array is reported separately, not inside the step).
# "matrix*" is the input path before issue 14 (the dense routing matrix R, and b_t @ W_b
# per token), kept as the "before" of the comparison; "auto" picks the input path by
# `elm_jax.input_paths` (folded for both published workloads).
JAX_VARIANTS = {
    "auto": {},
    "matrix": {"input_path": "matrix"},
    "scan": {"backend": "scan", "remat": "none"},
    "hoisted": {"backend": "hoisted"},
    "hoisted_unroll4": {"backend": "hoisted", "unroll": 4},
    "auto_events": {"input": "events"},
    "matrix_events": {"input": "events", "input_path": "matrix"},
    "scan_events": {"backend": "scan", "remat": "none", "input": "events"},
}
DEFAULT_VARIANTS = ["auto", "matrix", "auto_events", "matrix_events", "scan_events"]


def make_data(config, batch: int, steps: int, seed: int = 0):
    """x (batch, steps, num_input) float32 signed spikes, spike and soma targets."""
    from elm_jax.tasks.neuronio.synthetic_input import neuronio_like_spikes

    x = neuronio_like_spikes(seed, batch, steps, config.num_input).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    spikes = (rng.random((batch, steps)) < 0.01).astype(np.float32)
    soma = rng.normal(size=(batch, steps)).astype(np.float32)
    return x, spikes, soma


def _loss_jax(y, spikes, soma):
    import optax

    bce = optax.sigmoid_binary_cross_entropy(y[..., 0], spikes).mean()
    return 0.5 * bce + 0.5 * ((y[..., 1] - soma) ** 2).mean()


def _loss_torch(y, spikes, soma):
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits(y[..., 0], spikes)
    return 0.5 * bce + 0.5 * ((y[..., 1] - soma) ** 2).mean()


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one training-step benchmark trains: data, loss and optimizer (the runner,
    `run`, is shared by NeuronIO and SHD, `benchmarks.shd`).

    Attributes:
      name: output file stem.
      title: markdown title.
      make_data: ``(config, batch, steps, seed) -> (x, *targets)`` host arrays, x
        (batch, steps, num_input) float32.
      loss: JAX ``(y, *targets) -> scalar``; torch_loss: the same in torch.
      optimizer: optax name (``"adam"``, ``"adamax"``); the torch optimizer matches it.
      loss_text, input_text: descriptions for the report.
      target: the training-step ratio over the PyTorch per-step design to reach.
    """

    name: str
    title: str
    make_data: Callable
    loss: Callable
    torch_loss: Callable
    optimizer: str
    loss_text: str
    input_text: str
    target: float = 50.0


NEURONIO = Workload(
    NAME, "NeuronIO training step (d_m = 15 Branch-ELM)",
    lambda config, batch, steps, seed: make_data(config, batch, steps, seed),
    lambda y, *t: _loss_jax(y, *t), lambda y, *t: _loss_torch(y, *t), "adam",
    "0.5*BCE-with-logits(spike) + 0.5*MSE(soma), all steps",
    "NeuronIO-like signed spikes, float32 dense or SpikeEvents (*_events settings)")


def to_events(x: np.ndarray):
    """`elm_jax.SpikeEvents` of a dense host batch, on the device, and the host seconds."""
    import jax

    from elm_jax.events import SpikeEvents

    start = time.perf_counter()
    events = SpikeEvents.from_dense(x)
    seconds = time.perf_counter() - start
    return jax.device_put(events), seconds


def build_jax_elm(config, params, data, lr, options, events=None, workload=NEURONIO):
    """Compiled JAX ELM training step (a `common.Stepper`), its compile seconds and a
    zero-argument forward callable; `data` holds host (NumPy) arrays, `events` the
    same input as device `SpikeEvents` (built here when needed and not given)."""
    import jax

    from elm_jax.apply import apply

    options = dict(options)
    if options.pop("input", "dense") == "events":
        x = events if events is not None else to_events(data[0])[0]
    else:
        x = jax.numpy.asarray(data[0])
    data = (x, *(jax.numpy.asarray(a) for a in data[1:]))  # on the device once

    def forward(p, x):
        return apply(p, x, config, **options)

    stepper, compile_s = common.build_train(forward, workload.loss, lr, params, data,
                                            workload.optimizer)
    fwd = jax.jit(forward)
    return stepper, compile_s, (lambda: fwd(params, data[0]))


def build_breakdown(config, params, data, lr, events=None, workload=NEURONIO):
    """Two parts of the JAX step, timed alongside it to show where the time goes:

    * ``routing_only``: the dense routing matmul ``x @ R`` (R: num_input x num_branch)
      and its gradient with respect to R, as the training step computes them;
    * ``routing_events``: the same from `elm_jax.SpikeEvents` (gather + scatter-add);
    * ``elm_on_branch_inputs``: the same ELM (d_m, MLP, readout, loss, Adam) fed the 45
      per-branch input sums directly (``num_input = num_branch``, no routing), i.e. the
      training step without the routing matmul.
    """
    import jax
    import jax.numpy as jnp

    from elm_jax.apply import apply
    from elm_jax.core import prepare
    from elm_jax.params import init_params

    matrix = prepare(params, config).input_matrix
    x = jnp.asarray(data[0])
    probe = jnp.ones((x.shape[1], x.shape[0], config.num_branch), jnp.float32)

    def routing(r, xs, weights):
        return (jnp.matmul(jnp.swapaxes(xs, 0, 1), r) * weights).sum()

    grad, routing_compile = common.compile_timed(jax.jit(jax.value_and_grad(routing)),
                                                 matrix, x, probe)

    def routing_fn():
        return grad(matrix, x, probe)

    from elm_jax.events import branch_drive

    if events is None:
        events, _ = to_events(np.asarray(data[0]))

    def routing_events(r, ev, weights):
        return (branch_drive(ev, r) * weights).sum()

    grad_ev, events_compile = common.compile_timed(
        jax.jit(jax.value_and_grad(routing_events)), matrix, events, probe)

    def routing_events_fn():
        return grad_ev(matrix, events, probe)
    small = config.replace(num_input=config.num_branch, num_synapse_per_branch=1,
                           routing="none", routing_table=None)
    small_params = init_params(jax.random.key(0), small)
    branch_x = jnp.matmul(x, matrix)

    def forward(p, xs):
        return apply(p, xs, small, backend="hoisted")

    stepper, compile_s = common.build_train(forward, workload.loss, lr, small_params,
                                            (branch_x, *data[1:]), workload.optimizer)
    return {"breakdown:routing_only": (routing_fn, routing_compile),
            "breakdown:routing_events": (routing_events_fn, events_compile),
            "breakdown:elm_on_branch_inputs": (stepper, compile_s)}


def build_lstm(hidden: int, num_input: int, num_output: int, data, lr, seed: int = 0,
               workload=NEURONIO):
    import flax.linen as nn
    import jax

    class LSTMModel(nn.Module):
        hidden: int

        @nn.compact
        def __call__(self, x):
            h = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
            return nn.Dense(num_output)(h)

    model = LSTMModel(hidden)
    params = model.init(jax.random.key(seed), data[0][:, :2])
    count = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    stepper, compile_s = common.build_train(model.apply, workload.loss, lr, params, data,
                                            workload.optimizer)
    return stepper, compile_s, count


def build_torch(config, params, data, lr, threads: int, min_calls: int = 5,
                warmup_budget_s: float = 120.0, workload=NEURONIO):
    """The torch per-step ELM, its Adam step, and the max |y_torch - y_jax| check."""
    import torch

    from elm_jax.apply import apply
    from .torch_baseline import build_torch_elm

    model = build_torch_elm(config, params, threads=threads)
    x, *targets = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    with torch.no_grad():
        y_torch = model(x).numpy()
    y_jax = np.asarray(apply(params, data[0], config, backend="scan"))
    max_diff = float(np.abs(y_torch - y_jax).max())
    optimizer_cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[workload.optimizer]
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = workload.torch_loss(model(x), *targets)
        loss.backward()
        optimizer.step()
        return None

    # TorchScript's profiling executor specialises and optimises the graph over the
    # first calls, which are much slower: warm up until the step time settles (the
    # last 3 calls within 25 % of the fastest seen, at least `min_calls`), bounded by
    # `warmup_budget_s`; the calls and seconds are reported.
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        settled = len(times) >= min_calls and max(times[-3:]) <= 1.25 * min(times)
        if settled or time.perf_counter() - start > warmup_budget_s:
            break
    warm = {"calls": len(times), "seconds": time.perf_counter() - start,
            "settled": bool(settled), "times_s": times}
    return step, max_diff, float(np.abs(y_jax).max()), warm


def _with_threads(step, threads: int):
    """`step` run with ``torch.set_num_threads(threads)`` (set before every call, as
    the settings are timed interleaved)."""
    import torch

    def call():
        torch.set_num_threads(threads)
        return step()

    return call


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from elm_jax.config import ELMConfig
    from elm_jax.input_paths import resolve_input_path
    from elm_jax.params import count_params, init_params

    torch_version = None
    torch_error = None
    if args.torch:
        try:
            import torch

            torch_version = torch.__version__
        except Exception as err:  # torch absent or broken: run without it, say so
            torch_error = f"torch not importable ({type(err).__name__}: {err})"
    else:
        torch_error = "disabled (--no-torch)"
    info = common.machine_info(torch_version)
    common.print_machine(info)

    workload = getattr(args, "workload", NEURONIO)
    config = ELMConfig.preset(args.preset) if isinstance(args.preset, str) else args.preset
    batch, steps = args.batch, args.steps
    params = init_params(jax.random.key(args.seed), config)
    data = workload.make_data(config, batch, steps, args.seed)
    jdata = tuple(jax.numpy.asarray(a) for a in data)  # on the device once, not per call
    tokens = batch * steps
    flops = common.flops_per_token(config)
    variants = {k: JAX_VARIANTS[k] for k in args.variants}

    steppers: dict[str, Any] = {}
    forwards: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    events, events_host_s = to_events(data[0])  # once, shared by every events setting
    for name, options in variants.items():
        stepper, compile_s, fwd = build_jax_elm(config, params, data, args.lr, options,
                                                events, workload)
        steppers[f"jax_elm:{name}"] = stepper
        if args.forward:
            forwards[f"jax_elm:{name}"] = fwd
        is_events = options.get("input") == "events"
        path = resolve_input_path(options.get("input_path", "auto"), config,
                                  events if is_events else data[0])
        per_step = events.capacity / steps if is_events else None
        entries[f"jax_elm:{name}"] = {
            "kind": "jax_elm", "options": options, "compile_s": compile_s,
            "params": count_params(config), "input_path": path,
            "forward_flops_per_token": common.input_path_flops(config, path, per_step)}
        print(f"compiled jax_elm:{name} {options} in {compile_s:.1f} s", flush=True)
    if args.breakdown:
        for name, (fn, compile_s) in build_breakdown(config, params, jdata, args.lr,
                                                     events, workload).items():
            steppers[name] = fn
            entries[name] = {"kind": "breakdown", "compile_s": compile_s}
    for hidden in args.lstm_hidden:
        stepper, compile_s, count = build_lstm(hidden, config.num_input, config.num_output,
                                               jdata, args.lr, args.seed, workload)
        steppers[f"flax_lstm:{hidden}"] = stepper
        entries[f"flax_lstm:{hidden}"] = {"kind": "flax_lstm", "hidden": hidden,
                                          "compile_s": compile_s, "params": count}
        print(f"compiled flax_lstm:{hidden} ({count} params) in {compile_s:.1f} s", flush=True)
    parity = None
    if torch_error is None:
        try:
            step, max_diff, y_scale, warm = build_torch(
                config, params, data, args.lr, args.threads[0],
                min_calls=2 if args.quick else 5, warmup_budget_s=args.torch_warmup,
                workload=workload)
            for n in args.threads:
                steppers[f"torch_per_step:{n}t"] = _with_threads(step, n)
                entries[f"torch_per_step:{n}t"] = {
                    "kind": "torch_per_step", "threads": n, "params": count_params(config),
                    "warmup": warm if n == args.threads[0] else None}
            parity = {"max_abs_diff_y": max_diff, "max_abs_y": y_scale,
                      "same_outputs": max_diff <= 1e-4 * max(1.0, y_scale)}
            print(f"torch per-step ELM: max |y_torch - y_jax| = {max_diff:.2e} "
                  f"(|y| <= {y_scale:.2f}); warm-up {warm['calls']} calls, "
                  f"{warm['seconds']:.0f} s, settled: {warm['settled']}", flush=True)
        except Exception as err:  # report, do not hide
            torch_error = f"torch baseline failed: {type(err).__name__}: {err}"
            print(torch_error, flush=True)

    quiet = common.wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    stats = common.measure_interleaved(steppers, reps=args.reps, target_s=args.target_s,
                                       budget_s=args.budget)
    fwd_stats = common.measure_interleaved(forwards, reps=max(2, args.reps // 2),
                                           target_s=args.target_s, budget_s=args.budget / 3) \
        if forwards else {}
    for name, st in stats.items():
        e = entries[name]
        e.update(step_s=st["median_s"], step_min_s=st["min_s"], times_s=st["times_s"],
                 reps=st["reps"], tokens_per_s=tokens / st["median_s"], cpu_s=st["cpu_s"],
                 own_cores=st["own_cores"], other_cores=st["other_cores"])
        if name in fwd_stats:
            e["forward_s"] = fwd_stats[name]["median_s"]
        if e["kind"] != "flax_lstm":
            e["train_gflops"] = flops["train"] * tokens / st["median_s"] / 1e9
    jax_names = [n for n in entries if n.startswith("jax_elm:")]
    for name, e in entries.items():
        if e["kind"] == "breakdown":
            e.pop("train_gflops", None)
    best = min(jax_names, key=lambda n: entries[n]["step_s"]) if jax_names else None
    ratios: dict[str, Any] = {}
    if best:
        for name, e in entries.items():
            if name != best and e["kind"] != "breakdown":
                ratios[f"{best} vs {name}"] = e["step_s"] / entries[best]["step_s"]
        torch_names = [n for n in entries if entries[n]["kind"] == "torch_per_step"]
        if torch_names:
            # the baseline is the torch setting that ran fastest in this run
            torch_best = min(torch_names, key=lambda n: entries[n]["step_s"])
            default = "jax_elm:auto" if "jax_elm:auto" in entries else best
            ratios["torch_baseline"] = torch_best
            ratios["torch_over_jax_default"] = (entries[torch_best]["step_s"]
                                                / entries[default]["step_s"])
            ratios["torch_over_jax_best"] = (entries[torch_best]["step_s"]
                                             / entries[best]["step_s"])
            for n in torch_names:
                ratios[f"{n}_over_jax_best"] = entries[n]["step_s"] / entries[best]["step_s"]
            # the same from repetitions run while other processes were quiet, if any
            quiet_jax = common.quiet_times(stats[best], args.quiet_cores)
            quiet_torch = [t for n in torch_names
                           for t in common.quiet_times(stats[n], args.quiet_cores)]
            ratios["torch_over_jax_best_quiet_reps"] = (
                min(quiet_torch) / min(quiet_jax) if quiet_jax and quiet_torch else None)
    info["load_average_end"] = common.load_average()
    target = workload.target
    torch_ratio = ratios.get("torch_over_jax_best")
    payload = {
        "benchmark": workload.name, "command": args.command_str, "machine": info,
        "quick": bool(args.quick),
        "setup": {"preset": args.preset if isinstance(args.preset, str) else
                  config.to_dict(), "batch": batch, "time_steps": steps,
                  "tokens_per_step": tokens,
                  "optimizer": f"{workload.optimizer} lr {args.lr}",
                  "loss": workload.loss_text, "input": workload.input_text,
                  "events_per_sequence_max": int(np.count_nonzero(
                      data[0].reshape(batch, -1), axis=1).max()),
                  "events_from_dense_host_s": events_host_s},
        "flops_per_token": flops, "flop_rule": common.FLOP_RULE,
        "wait_for_quiet": quiet,
        "other_cores_max": max([e["other_cores"] for e in entries.values()
                                if e.get("other_cores") is not None] or [0.0]),
        "entries": entries, "best_jax": best, "ratios": ratios, "torch": {
            "version": torch_version, "error": torch_error, "parity": parity,
            "threads": args.threads},
        "target": {"description": "JAX ELM training step >= 50x the throughput of the "
                                  "PyTorch per-step design", "ratio": torch_ratio,
                   "threshold": target,
                   "met": None if torch_ratio is None else bool(torch_ratio >= target)},
    }

    rows = []
    for name, e in entries.items():
        rows.append({
            "name": name, "params": e.get("params"), "path": e.get("input_path", "-"),
            "step": f"{e['step_s'] * 1e3:.2f} ms" if "step_s" in e else "-",
            "fwd": f"{e['forward_s'] * 1e3:.2f} ms" if "forward_s" in e else "-",
            "tok": common.si(e.get("tokens_per_s")),
            "ratio": f"{e['step_s'] / entries[best]['step_s']:.2f}x" if best and "step_s" in e
            else "-",
            "compile": f"{e['compile_s']:.1f} s" if "compile_s" in e else "-",
            "reps": e.get("reps"),
            "other": common.fmt(e.get("other_cores"), ".2f"),
        })
    md = [common.header_md(workload.title, info, args.command_str),
          f"Batch {batch} x {steps} time steps ({tokens} tokens per step), "
          f"{workload.optimizer}, loss {workload.loss_text}. Input: {workload.input_text}. "
          f"Medians of interleaved repetitions.\n",
          common.md_table(rows, [("name", "model / setting"), ("params", "params"),
                                 ("path", "input path"),
                                 ("step", "train step"), ("fwd", "forward only"),
                                 ("tok", "train tokens/s"),
                                 ("ratio", f"time / {best}"), ("compile", "compile"),
                                 ("reps", "reps"), ("other", "other cores")])]
    if torch_ratio is not None:
        md.append(f"\nPyTorch per-step design ({ratios['torch_baseline']}, the faster torch "
                  f"setting) / JAX ELM ({best}): **{torch_ratio:.1f}x** "
                  f"(target >= {target:.0f}x: {'met' if torch_ratio >= target else 'NOT met'})."
                  f" Same outputs: max |y_torch - y_jax| = {parity['max_abs_diff_y']:.1e}."
                  + (f" With the dense float32 input (jax_elm:auto): "
                     f"{ratios['torch_over_jax_default']:.1f}x."
                     if "jax_elm:auto" in entries else "")
                  + (f" From quiet repetitions only: "
                     f"{ratios['torch_over_jax_best_quiet_reps']:.1f}x."
                     if ratios.get("torch_over_jax_best_quiet_reps") else ""))
    else:
        md.append(f"\nPyTorch baseline not run: {torch_error}.")
    md.append(f"\n`*_events` settings feed the batch as `elm_jax.SpikeEvents` (up to "
              f"{payload['setup']['events_per_sequence_max']} events per sequence; built "
              f"once on the host, {events_host_s * 1e3:.0f} ms from the dense array, not "
              f"timed in the step: the task samplers emit events directly from the "
              f"stored spike times).")
    md.append(f"\nFLOPs per token (forward, 2 per multiply-add) with the dense routing "
              f"matrix: routing x@R {flops['routing_dense']:.0f} "
              f"({config.num_input}x{config.num_branch}; {flops['routing_synaptic']:.0f} if "
              f"counted per synapse), MLP {flops['mlp']:.0f}, readout "
              f"{flops['readout']:.0f}. As executed by each setting's input path "
              f"(`benchmarks.common.input_path_flops`): " + ", ".join(
                  f"{n.split(':', 1)[1]} ({e['input_path']}) "
                  f"{e['forward_flops_per_token']:.0f}"
                  for n, e in entries.items() if e["kind"] == "jax_elm") + ".")

    payload["files"] = common.write_outputs(args.out, workload.name, payload, "\n".join(md),
                                            lambda path: plot(payload, path))
    print("\n".join(md[2:]), flush=True)
    return payload


def plot(payload: dict[str, Any], path) -> None:
    """Bar chart of training tokens/s per entry (log scale), coloured by kind."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter

    entries = payload["entries"]
    colours = {"jax_elm": "C0", "breakdown": "0.6", "flax_lstm": "C1", "torch_per_step": "C3"}
    names = [n for n in entries if "tokens_per_s" in entries[n]]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.4))
    values = [entries[n]["tokens_per_s"] for n in names]
    ax.barh(names, values, color=[colours.get(entries[n]["kind"], "C2") for n in names])
    for i, v in enumerate(values):
        ax.text(v, i, " " + common.si(v), va="center", fontsize=8)
    ax.set_xlim(min(values) / 2, max(values) * 4)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_yaxis()
    ax.set_xlabel("training tokens/s (batch x time steps per second); grey: parts of the "
                  "JAX step")
    setup = payload["setup"]
    ax.set_title(f"NeuronIO d_m=15 Branch-ELM training step, batch {setup['batch']}, "
                 f"T={setup['time_steps']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="neuronio_branch_dm15")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=500, help="time steps per window")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                   choices=list(JAX_VARIANTS), help="JAX ELM settings to time")
    p.add_argument("--lstm-hidden", type=int, nargs="*", default=[50, 150],
                   help="Flax LSTM hidden sizes (none: skip)")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="run the PyTorch per-step baseline when torch imports")
    p.add_argument("--forward", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the JAX forward pass alone")
    p.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the routing matmul alone and the ELM without routing")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch.set_num_threads settings, each timed; the baseline is the "
                        "fastest (on a loaded 2-core machine 2 OpenMP threads can be several "
                        "times slower than 1)")
    p.add_argument("--torch-warmup", type=float, default=120.0,
                   help="max seconds of TorchScript warm-up calls before timing")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--target-s", type=float, default=0.5,
                   help="seconds per repetition (calls are repeated to fill it)")
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds of timing after which no new round starts")
    common.add_quiet_arguments(p)
    p.add_argument("--seed", type=int, default=0)


def quick_overrides(args: argparse.Namespace) -> None:
    """Tiny settings for --quick (smoke test)."""
    args.steps = min(args.steps, 16)
    args.batch = min(args.batch, 2)
    args.variants, args.forward, args.breakdown = ["hoisted", "auto_events"], False, False
    args.lstm_hidden = [8] if args.lstm_hidden else []
    args.reps, args.target_s, args.budget = 2, 0.01, 5.0
