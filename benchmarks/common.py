"""Shared helpers of the benchmarks: machine and version info, timing, FLOP counts and
the JSON + markdown + PNG writers.

Timing rules (the machines this runs on are shared and noisy):

* every callable is compiled and run once before it is timed (compile time is measured
  separately, with ``jit(...).lower(...).compile()``);
* the callables that are compared are timed *interleaved* (round-robin, one repetition
  of each per round), so a burst of load from another process hits all of them;
* a repetition runs the callable ``inner`` times back to back (enough for about
  `target_s` seconds) and blocks on the result; the reported time per call is the
  median over repetitions; the load average is recorded before and after.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

DEFAULT_OUT = "benchmarks/results"


# ----------------------------------------------------------------------------- machine
def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key == "model name" and "cpu_model" not in info:
            info["cpu_model"] = value
        elif key == "flags" and "cpu_flags" not in info:
            flags = set(value.split())
            info["cpu_flags"] = sorted(f for f in ("avx2", "fma", "avx512f", "avx512_bf16",
                                                   "avx512_vnni", "amx_tile") if f in flags)
        elif key == "cpu MHz" and "cpu_mhz" not in info:
            info["cpu_mhz"] = float(value)
    return info


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where unavailable)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info(torch_version: str | None = None) -> dict[str, Any]:
    """CPU model, cores, memory, load, Python and library versions, XLA flags."""
    import jax

    info: dict[str, Any] = _cpuinfo()
    info.setdefault("cpu_model", platform.processor() or "unknown")
    info["cores"] = os.cpu_count()
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        info["cores_usable"] = os.cpu_count()
    info["memory_gb"] = _mem_total_gb()
    info["load_average"] = load_average()
    info["platform"] = platform.platform()
    info["python"] = platform.python_version()
    info["versions"] = {name: _version(name) for name in
                        ("jax", "jaxlib", "flax", "optax", "numpy", "elm_jax")}
    torch_version = torch_version or (sys.modules["torch"].__version__
                                      if "torch" in sys.modules else None)
    if torch_version:
        info["versions"]["torch"] = torch_version
    info["jax_backend"] = jax.default_backend()
    info["devices"] = [str(d.device_kind) for d in jax.devices()]
    info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One line for tables and logs: CPU, cores, jax version, load."""
    v = info.get("versions", {})
    return (f"{info.get('cpu_model')} ({info.get('cores_usable')} cores, "
            f"{info.get('memory_gb')} GB), {info.get('jax_backend')}, jax {v.get('jax')}, "
            f"jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, python {info.get('python')}"
            + (f", torch {v['torch']}" if v.get("torch") else "")
            + f"; load average {info.get('load_average')}")


def print_machine(info: Mapping[str, Any]) -> None:
    print("machine:", machine_line(info), flush=True)


# ----------------------------------------------------------------------------- load
def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have been busy (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class LoadProbe:
    """Cores used by this process and by everything else between `start` and `stop`.

    ``own_cores`` = this process's CPU seconds / wall seconds; ``other_cores`` = (all
    busy CPU seconds of the machine - this process's) / wall seconds: the load of the
    other users of a shared machine during a measurement (None where /proc/stat is
    unavailable)."""

    def start(self) -> "LoadProbe":
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), \
            _busy_cpu_seconds()
        return self

    def stop(self) -> dict[str, float | None]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        cpu = time.process_time() - self.cpu
        busy = _busy_cpu_seconds()
        other = None if busy is None or self.busy is None else \
            max(0.0, (busy - self.busy - cpu) / wall)
        return {"wall_s": wall, "cpu_s": cpu, "own_cores": cpu / wall, "other_cores": other}


QUIET_CORES = 0.3  # other processes above this many cores = a contended repetition


def add_quiet_arguments(p: Any, before: str = "timing", quiet_cores: bool = True) -> None:
    """``--wait-quiet`` (and ``--quiet-cores``) for a benchmark's argument parser."""
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help=f"wait up to this many seconds for other processes to go quiet "
                        f"before {before} (shared machines)")
    if quiet_cores:
        p.add_argument("--quiet-cores", type=float, default=QUIET_CORES,
                       help="a repetition is 'quiet' (not contended) while other "
                            "processes use fewer cores than this")


def quiet_times(stats: Mapping[str, Any], threshold_cores: float) -> list[float]:
    """The times of the repetitions in `stats` (one entry of `measure_interleaved`)
    during which other processes used fewer than `threshold_cores` cores."""
    return [t for t, o in zip(stats["times_s"], stats.get("other_cores_reps", []))
            if o is not None and o < threshold_cores]


def wait_for_quiet(max_wait_s: float, threshold_cores: float = QUIET_CORES,
                   sample_s: float = 3.0) -> dict[str, Any]:
    """Wait (at most `max_wait_s`) until other processes use < `threshold_cores` over a
    `sample_s` window; returns what was seen.  For shared machines."""
    start = time.perf_counter()
    seen = None
    while True:
        probe = LoadProbe().start()
        time.sleep(sample_s)
        seen = probe.stop()["other_cores"]
        waited = time.perf_counter() - start
        if seen is None or seen < threshold_cores or waited >= max_wait_s:
            break
    quiet = seen is not None and seen < threshold_cores
    print(f"wait for quiet: other processes use {seen if seen is None else round(seen, 2)} "
          f"cores after {waited:.0f} s ({'quiet' if quiet else 'still busy'})", flush=True)
    return {"waited_s": waited, "other_cores": seen, "quiet": quiet,
            "threshold_cores": threshold_cores}


# ----------------------------------------------------------------------------- timing
def block(tree: Any) -> Any:
    """Wait for every array in `tree` (jax arrays; others pass through)."""
    import jax

    return jax.block_until_ready(tree)


def compile_timed(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``jitted.lower(*args).compile()`` and the seconds it took."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start


def time_once(fn: Callable[[], Any]) -> float:
    """Seconds of one blocking call of `fn`."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def measure_interleaved(fns: Mapping[str, Callable[[], Any]], *, reps: int = 5,
                        target_s: float = 0.2, budget_s: float | None = None,
                        warmup: bool = True) -> dict[str, dict[str, Any]]:
    """Time several callables round-robin; return per-name statistics.

    Args:
      fns: name -> zero-argument callable returning arrays (blocked on).
      reps: repetitions (rounds) wanted.
      target_s: each repetition calls a callable ``inner`` times with ``inner`` chosen
        from the warm-up call so that one repetition takes about `target_s`.
      budget_s: stop starting new rounds after this many seconds (at least one round
        always runs).
      warmup: call each callable once (untimed) first.
    Returns: name -> {"median_s", "min_s", "times_s", "reps", "inner", "first_call_s",
      "cpu_s" (median process CPU seconds per call, all threads), "own_cores" and
      "other_cores" (medians over repetitions, see `LoadProbe`), "other_cores_reps"
      (per repetition)}.
    """
    first: dict[str, float] = {}
    for name, fn in fns.items():
        first[name] = time_once(fn) if warmup else 0.0
    inner = {name: max(1, min(1000, int(target_s / max(t, 1e-6)))) if warmup else 1
             for name, t in first.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    loads: dict[str, list[dict]] = {name: [] for name in fns}
    start = time.perf_counter()
    for rnd in range(reps):
        if rnd and budget_s is not None and time.perf_counter() - start > budget_s:
            break
        for name, fn in fns.items():
            probe = LoadProbe().start()
            out = None
            for _ in range(inner[name]):
                out = fn()
            block(out)
            load = probe.stop()
            times[name].append(load["wall_s"] / inner[name])
            loads[name].append(load)

    def med(values):
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    return {name: {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)),
                   "times_s": [float(t) for t in ts], "reps": len(ts), "inner": inner[name],
                   "first_call_s": first[name],
                   "cpu_s": med([l["cpu_s"] / inner[name] for l in loads[name]]),
                   "own_cores": med([l["own_cores"] for l in loads[name]]),
                   "other_cores": med([l["other_cores"] for l in loads[name]]),
                   "other_cores_reps": [l["other_cores"] for l in loads[name]]}
            for name, ts in times.items()}


# ----------------------------------------------------------------------------- steps
def make_train_step(forward: Callable, loss: Callable, lr: float, optimizer: str = "adam"):
    """A jitted optimizer step ``(params, opt_state, x, *targets) -> (params, opt_state,
    loss)`` for ``forward(params, x) -> y`` and ``loss(y, *targets) -> scalar``; params
    and optimizer state are donated (updated in place).  `optimizer` names an optax
    optimizer (``"adam"``, ``"adamax"``).  Returns (step, optimizer)."""
    import jax
    import optax

    optimizer = getattr(optax, optimizer)(lr)

    def step(params, opt_state, x, *targets):
        value, grads = jax.value_and_grad(lambda p: loss(forward(p, x), *targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1)), optimizer


class Stepper:
    """Zero-argument callable that runs a compiled (donating) training step on state
    it holds: each call advances the parameters and optimizer state by one step."""

    def __init__(self, compiled: Any, params: Any, opt_state: Any, data: Sequence[Any]):
        import jax

        self.compiled = compiled
        self.params = jax.tree_util.tree_map(lambda a: a.copy(), params)
        self.opt_state = jax.tree_util.tree_map(lambda a: a.copy(), opt_state)
        self.data = tuple(data)

    def __call__(self) -> Any:
        self.params, self.opt_state, value = self.compiled(self.params, self.opt_state,
                                                           *self.data)
        return value


def build_train(forward: Callable, loss: Callable, lr: float, params: Any,
                data: Sequence[Any], optimizer: str = "adam") -> tuple[Stepper, float]:
    """Compile `make_train_step` for these shapes; return (Stepper, compile seconds)."""
    step, optimizer = make_train_step(forward, loss, lr, optimizer)
    opt_state = optimizer.init(params)
    compiled, seconds = compile_timed(step, params, opt_state, *data)
    return Stepper(compiled, params, opt_state, data), seconds


# ----------------------------------------------------------------------------- FLOPs
FLOP_RULE = (
    "Matmul FLOPs only, 2 per multiply-add, per token (one sample at one time step): "
    "the routing matmul x@R as executed (2*num_input*num_branch; for NeuronIO also the "
    "sparse synaptic count 2*num_synapse, reported separately), every MLP layer "
    "including both halves of the first ([branch traces, kappa_m*m] -> hidden), and the "
    "readout; elementwise work (leaks, activations, tanh) is not counted. Training = 3 x "
    "forward (the backward pass counted as 2 forwards); recomputation by remat or by the "
    "custom backward is not counted as useful work.")


def flops_per_token(config: Any) -> dict[str, float]:
    """Forward matmul FLOPs per token by part, and the forward/training totals.

    Returns a dict with ``routing_dense``, ``routing_synaptic``, ``mlp``, ``readout``,
    ``forward`` (dense routing + mlp + readout) and ``train`` (3 x forward).
    """
    from elm_jax.params import mlp_layer_sizes

    mlp = sum(2.0 * fan_in * fan_out for fan_in, fan_out in mlp_layer_sizes(config))
    parts = {
        "routing_dense": 2.0 * config.num_input * config.num_branch,
        "routing_synaptic": 2.0 * config.num_synapse,
        "mlp": mlp,
        "readout": 2.0 * config.num_memory * config.num_output,
    }
    parts["forward"] = parts["routing_dense"] + parts["mlp"] + parts["readout"]
    parts["train"] = 3.0 * parts["forward"]
    return parts


def input_path_flops(config: Any, input_path: str, events_per_step: float | None = None
                     ) -> float:
    """Forward matmul FLOPs per token as executed by one input path of `elm_jax.apply`
    (2 per multiply-add): the input projection (``x @ R`` or, folded, ``x @ F``; for
    events one gathered row per event: ``2 * width * events_per_step``), the MLP
    (without its trace half when folded: it is inside ``F``) and the readout.  The
    ``"structured"`` path counts its routing as ``2 * num_synapse`` (a gather/scale)."""
    parts = flops_per_token(config)
    nb, h1 = config.num_branch, config.mlp_hidden_size
    mlp = parts["mlp"] - (2.0 * nb * h1 if input_path == "folded" else 0.0)
    width = h1 if input_path == "folded" else nb
    if events_per_step is not None:
        routing = 2.0 * width * events_per_step
    elif input_path == "folded":
        routing = 2.0 * config.num_input * h1
    elif input_path == "structured":
        routing = parts["routing_synaptic"]
    else:
        routing = parts["routing_dense"]
    return routing + mlp + parts["readout"]


# ----------------------------------------------------------------------------- output
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def fmt(value: Any, spec: str = ".3g") -> str:
    """Format a number for a markdown cell (``-`` for None)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and spec == ".3g":
        return f"{value:,}"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def si(value: float | None, unit: str = "") -> str:
    """12345678 -> '12.3 M' (+unit)."""
    if value is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Markdown table of `rows` (dicts) with (key, header) columns; values pre-formatted
    or formatted with `fmt`."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_outputs(out_dir: str | os.PathLike, name: str, payload: Mapping[str, Any],
                  markdown: str, plot: Callable[[Path], None] | None = None
                  ) -> dict[str, str]:
    """Write ``name.json``, ``name.md`` and (if `plot`) ``name.png`` under `out_dir`.

    Returns: kind -> path of each file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md"}
    paths["json"].write_text(json.dumps(_jsonable(dict(payload)), indent=1) + "\n")
    paths["markdown"].write_text(markdown.rstrip() + "\n")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        paths["png"] = out / f"{name}.png"
        plot(paths["png"])
    for kind, path in paths.items():
        print(f"wrote {path}", flush=True)
    return {k: str(v) for k, v in paths.items()}


def start_record(name: str, command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Print the machine; return (machine info, the record ``{"benchmark", "command",
    "machine"}`` a benchmark fills in)."""
    info = machine_info()
    print_machine(info)
    return info, {"benchmark": name, "command": command, "machine": info}


def header_md(title: str, info: Mapping[str, Any], command: str) -> str:
    """Markdown header: title, the command and the machine."""
    return (f"# {title}\n\n`{command}`\n\nMachine: {machine_line(info)}\n")
