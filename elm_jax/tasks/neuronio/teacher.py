"""Built-in teacher neurons that write NeuronIO datasets in the original file format.

Everything here is offline, seeded and deterministic, so every NeuronIO code path
(loading, training windows, the published evaluation) runs on a fresh machine without
the 115-GB download.

Inputs follow the original generator's statistics (Beniaguev et al. 2021, NMDA
configuration; data-formats.md section 1.3), per simulation:

1. a "rate-constant interval" from `RATE_INTERVAL_OPTIONS_MS` and a smoothing sigma from
   `SMOOTHING_SIGMA_OPTIONS_MS`, each with a uniform integer jitter in +-20 ms;
2. per interval and independently for the basal and the apical tree: the excitatory
   spike count per 100 ms ~ U[0, 800], the inhibitory one ~ U[max(0, e - 600), e + 200];
3. each count spread over the tree's segments in proportion to their length + 10 um,
   times an independent U[0.5, 1.5] factor per (segment, interval);
4. rates held over each interval, smoothed per segment with a normalised Gaussian window
   (length 1 + 7 sigma, "same" convolution with zero padding);
5. per 1-ms bin a spike with probability P(U < E) for E ~ Exp(mean = rate), i.e.
   ``r (1 - exp(-1/r))`` (the original draws E then U; the distribution is the same).

The cell is a synthetic morphology with the NeuronIO counts (262 basal then 377 apical
segments, one excitatory and one inhibitory synapse on each: 1278 inputs); its segment
lengths and distances are made up (plausible, fixed by `synthetic_morphology`'s seed).

Teachers (the neuron is fixed by ``teacher_seed``, independent of the data seed):

* ``"dendritic"``: synapses summed per dendritic branch (49 branches of ~13 neighbouring
  segments) into AMPA (tau 2 ms), NMDA (rise 2, decay 50 ms) and GABA_A (tau 8 ms)
  conductance traces; each branch's NMDA current is gated by a sigmoid of the branch's
  own depolarisation (Mg-block-like, so coincident input is supralinear and inhibition
  vetoes it), attenuated with distance, and feeds an adaptive integrate-and-fire soma
  (spike-triggered adaptation current, refractoriness, spike peaks in the voltage trace).
* ``"lif"``: linear integration -- every synapse's weighted, 5-ms filtered input summed
  into a leaky integrate-and-fire soma (the paper fits such a LIF with d_m = 1).
* ``"alif"``: the LIF with an adaptive threshold (jump per spike, decay 200 ms).

Voltages are produced on the 1-ms grid; the 1/8-ms traces of the file are linear
interpolations of them.  Spike times are the threshold crossings (interpolated within
the step) plus 0.5 ms, rounded to the 1/8-ms grid and stored as float16, like the
originals (so they are quantised to 2 ms after 2048 ms and 4 ms after 4096 ms).

Files are written with `write_neuronio_file` (pickle protocol 2, numpy int64 segment
indices and spike times, float16 voltages and output spike times, float32 time axes,
atomically) into ``full_ergodic_train_batch_k`` / ``Data_test`` folders by
`generate_dataset`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...fileio import atomic_write
from ...progress import StepProgress

__all__ = [
    "RATE_INTERVAL_OPTIONS_MS", "SMOOTHING_SIGMA_OPTIONS_MS", "TEACHER_KINDS", "Morphology",
    "synthetic_morphology", "generate_input_spikes", "TeacherOutput", "DendriticTeacher",
    "LIFTeacher", "make_teacher", "simulation_dict", "experiment_params",
    "write_neuronio_file", "neuronio_file_name", "generate_file", "generate_dataset",
]

RATE_INTERVAL_OPTIONS_MS = (25, 30, 35, 40, 45, 55, 60, 65, 70, 75, 80, 85, 90, 100, 150, 200,
                            300, 450)
SMOOTHING_SIGMA_OPTIONS_MS = (25, 30, 35, 40, 50, 60, 80, 100, 150, 200, 300, 400, 500, 600)
JITTER_MS = 20
EXC_SPIKES_PER_100MS_RANGE = (0, 800)
EXC_INH_DIFF_PER_100MS_RANGE = (-600, 200)
SEGMENT_LENGTH_PAD_UM = 10.0
NUM_BASAL_SEGMENTS = 262
NUM_APICAL_SEGMENTS = 377
HIGH_RES_SAMPLES_PER_MS = 8
TEACHER_KINDS = ("dendritic", "lif", "alif")


# ---------------------------------------------------------------------------- morphology
@dataclasses.dataclass(frozen=True, eq=False)
class Morphology:
    """Per-segment geometry, basal segments first (NeuronIO order).

    Attributes: ``segment_type`` ("basal"/"apical"), ``segment_length`` and
    ``segment_dist`` (um, distance of the segment centre from the soma),
    ``section_index`` (section of each segment), ``section_type``, ``section_length``,
    ``section_dist`` (per section, distance of its start).
    """

    segment_type: tuple[str, ...]
    segment_length: np.ndarray
    segment_dist: np.ndarray
    section_index: np.ndarray
    section_type: tuple[str, ...]
    section_length: np.ndarray
    section_dist: np.ndarray

    @property
    def num_segments(self) -> int:
        return len(self.segment_type)

    @property
    def is_basal(self) -> np.ndarray:
        return np.array([t == "basal" for t in self.segment_type])


def _tree_sections(rng: np.random.Generator, num_segments: int, length_range: tuple[float, float],
                   trunk: int, trunk_length: float) -> list[tuple[float, int, float]]:
    """Sections (length, nseg, start distance) with nseg = 1 + 2 floor(L / 40) until the
    tree has exactly `num_segments` segments; the first `trunk` sections form a chain."""
    sections: list[tuple[float, int, float]] = []
    ends: list[float] = [0.0]
    total = 0
    while total < num_segments:
        if len(sections) < trunk:
            length, start = trunk_length, (ends[-1] if sections else 0.0)
        else:
            length, start = rng.uniform(*length_range), float(rng.choice(ends))
        nseg = min(1 + 2 * int(length // 40), num_segments - total)
        sections.append((length, nseg, start))
        ends.append(start + length)
        total += nseg
    return sections


def synthetic_morphology(seed: int = 0, num_basal: int = NUM_BASAL_SEGMENTS,
                         num_apical: int = NUM_APICAL_SEGMENTS) -> Morphology:
    """A made-up but plausible dendritic tree with the NeuronIO segment counts."""
    rng = np.random.default_rng([seed, 7])
    seg_type, seg_len, seg_dist, seg_sec = [], [], [], []
    sec_type, sec_len, sec_dist = [], [], []
    trees = (("basal", num_basal, (20.0, 250.0), 0, 0.0),
             ("apical", num_apical, (30.0, 300.0), 8, 80.0))
    for kind, count, length_range, trunk, trunk_length in trees:
        for length, nseg, start in _tree_sections(rng, count, length_range, trunk, trunk_length):
            k = len(sec_type)
            sec_type.append(kind)
            sec_len.append(length)
            sec_dist.append(start)
            for j in range(nseg):
                seg_type.append(kind)
                seg_len.append(length / nseg)
                seg_dist.append(start + (j + 0.5) * length / nseg)
                seg_sec.append(k)
    return Morphology(tuple(seg_type), np.array(seg_len), np.array(seg_dist),
                      np.array(seg_sec), tuple(sec_type), np.array(sec_len),
                      np.array(sec_dist))


# ---------------------------------------------------------------------------- inputs
def _gaussian_window(sigma: int) -> np.ndarray:
    m = 1 + 7 * sigma
    n = np.arange(m) - (m - 1) / 2.0
    w = np.exp(-0.5 * (n / sigma) ** 2)
    return w / w.sum()


def _smoothed_indicators(duration: int, interval: int, sigma: int) -> np.ndarray:
    """(T, intervals) float32: each interval's indicator convolved ("same", zero padded)
    with the normalised Gaussian window -- so a piecewise-constant rate R (intervals, S)
    smooths to ``B @ R`` exactly like a per-row ``np.convolve(..., "same")``."""
    w = _gaussian_window(sigma)
    m = w.size
    cum = np.concatenate([[0.0], np.cumsum(w)])
    starts = np.arange(0, duration, interval)
    stops = np.minimum(starts + interval, duration)
    # "same" output t is full-convolution index t + (m - 1) // 2: it sums w[t + c - u]
    # over input samples u of the interval, i.e. window indices (t + c - stop, t + c - start]
    t = np.arange(duration)[:, None] + (m - 1) // 2
    hi = np.clip(t - starts[None, :] + 1, 0, m)
    lo = np.clip(t - stops[None, :] + 1, 0, m)
    return (cum[hi] - cum[lo]).astype(np.float32)


def generate_input_spikes(rng: np.random.Generator, morphology: Morphology, duration_ms: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """One simulation's input spikes with the original statistics (module docstring).

    Returns: ``(exc, inh)``, each (T, S) bool: spike of the excitatory / inhibitory
    synapse on segment ``k`` at ms ``t``.
    """
    T, S = int(duration_ms), morphology.num_segments
    interval = int(rng.choice(RATE_INTERVAL_OPTIONS_MS)) + int(rng.integers(-JITTER_MS, JITTER_MS + 1))
    sigma = int(rng.choice(SMOOTHING_SIGMA_OPTIONS_MS)) + int(rng.integers(-JITTER_MS, JITTER_MS + 1))
    interval, sigma = max(interval, 1), max(sigma, 1)
    n_int = -(-T // interval)
    adj = morphology.segment_length + SEGMENT_LENGTH_PAD_UM
    basal = morphology.is_basal
    rate_exc = np.empty((n_int, S))
    rate_inh = np.empty((n_int, S))
    for tree in (basal, ~basal):
        exc = rng.uniform(*EXC_SPIKES_PER_100MS_RANGE, size=n_int)
        inh = rng.uniform(np.maximum(0.0, exc + EXC_INH_DIFF_PER_100MS_RANGE[0]),
                          exc + EXC_INH_DIFF_PER_100MS_RANGE[1])
        per_um = 100.0 * adj[tree].sum()
        for counts, out in ((exc, rate_exc), (inh, rate_inh)):
            factor = rng.uniform(0.5, 1.5, size=(n_int, int(tree.sum())))
            out[:, tree] = (counts / per_um)[:, None] * factor * adj[tree][None, :]
    smooth = _smoothed_indicators(T, interval, sigma)
    spikes = []
    for rate in (rate_exc, rate_inh):
        r = np.maximum(smooth @ rate.astype(np.float32), np.float32(1e-20))
        with np.errstate(over="ignore"):
            p = r * -np.expm1(np.float32(-1.0) / r)
        spikes.append(rng.random((T, S), dtype=np.float32) < p)
    return spikes[0], spikes[1]


# ---------------------------------------------------------------------------- dynamics
def _exp_filter(x: np.ndarray, tau: float, block: int = 128) -> np.ndarray:
    """``y_t = exp(-1/tau) y_{t-1} + x_t`` along axis 1 of (n, T, ...) from y = 0,
    by blocks of lower-triangular matmuls (exact, vectorised)."""
    a = math.exp(-1.0 / tau)
    n, T = x.shape[:2]
    rest = x.shape[2:]
    flat = x.reshape(n, T, -1).astype(np.float32)
    k = np.arange(block)
    powers = np.where(k[:, None] >= k[None, :], a ** np.maximum(k[:, None] - k[None, :], 0),
                      0.0).astype(np.float32)
    carry_pow = (a ** (k + 1)).astype(np.float32)
    out = np.empty_like(flat)
    prev = np.zeros((n, flat.shape[2]), np.float32)
    for t0 in range(0, T, block):
        chunk = flat[:, t0:t0 + block]
        L = chunk.shape[1]
        y = np.matmul(powers[:L, :L], chunk) + carry_pow[None, :L, None] * prev[:, None]
        out[:, t0:t0 + L] = y
        prev = y[:, -1]
    return out.reshape((n, T) + rest)


@dataclasses.dataclass
class TeacherOutput:
    """What a teacher produces for n simulations of T ms.

    soma_mv (n, T) and nexus_mv (n, T) voltages (mV, 1-ms grid), spike_times: n arrays of
    output spike times (ms, 1/8-ms grid, float64 before the float16 cast), dendrite_mv
    (n, S, T) per-segment voltages (or None).
    """

    soma_mv: np.ndarray
    nexus_mv: np.ndarray
    spike_times: list[np.ndarray]
    dendrite_mv: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class SomaParams:
    """Integrate-and-fire soma (mV, ms): exponential-Euler leak to ``v_rest`` with input
    ``drive`` (mV of steady-state depolarisation above ``v_rest``), spike at ``v_threshold`` (+ adaptive
    part), peak ``v_peak`` written into the trace, reset to ``v_reset``, refractory for
    ``refractory_ms``; optional spike-triggered adaptation current (``adapt_current`` mV,
    ``tau_adapt_current``) and adaptive threshold (``adapt_threshold`` mV per spike,
    ``tau_adapt_threshold``)."""

    tau_m: float = 20.0
    v_rest: float = -70.0
    v_threshold: float = -54.0
    v_reset: float = -68.0
    v_peak: float = 25.0
    refractory_ms: int = 2
    adapt_current: float = 0.0
    tau_adapt_current: float = 100.0
    adapt_threshold: float = 0.0
    tau_adapt_threshold: float = 200.0


def _integrate_soma(drive: np.ndarray, p: SomaParams) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the soma over `drive` (n, T): input depolarisation in mV relative to
    ``v_rest`` (the voltage it would settle at without spikes and adaptation).
    Returns the voltage (n, T) and the spike times of each simulation."""
    n, T = drive.shape
    k_m = math.exp(-1.0 / p.tau_m)
    k_w = math.exp(-1.0 / p.tau_adapt_current)
    k_a = math.exp(-1.0 / p.tau_adapt_threshold)
    v = np.full(n, p.v_rest)
    w = np.zeros(n)
    a = np.zeros(n)
    refractory = np.zeros(n, np.int64)
    trace = np.empty((n, T))
    spike_sim, spike_t = [], []
    drive = drive.astype(np.float64)
    for t in range(T):
        v_prev = v
        v = p.v_rest + k_m * (v - p.v_rest) + (1.0 - k_m) * (drive[:, t] - w)
        v = np.where(refractory > 0, p.v_reset, v)
        refractory = np.maximum(refractory - 1, 0)
        w = k_w * w
        a = k_a * a
        threshold = p.v_threshold + a
        fired = v >= threshold
        trace[:, t] = v
        if fired.any():
            idx = np.flatnonzero(fired)
            frac = (threshold[idx] - v_prev[idx]) / np.maximum(v[idx] - v_prev[idx], 1e-9)
            spike_sim.append(idx)
            spike_t.append(t - 1.0 + np.clip(frac, 0.0, 1.0) + 0.5)
            trace[idx, t] = p.v_peak
            v = np.where(fired, p.v_reset, v)
            w = w + fired * p.adapt_current
            a = a + fired * p.adapt_threshold
            refractory = np.where(fired, p.refractory_ms, refractory)
    sims = np.concatenate(spike_sim) if spike_sim else np.zeros(0, np.int64)
    times = np.concatenate(spike_t) if spike_t else np.zeros(0)
    times = np.round(times * HIGH_RES_SAMPLES_PER_MS) / HIGH_RES_SAMPLES_PER_MS
    return trace, [np.sort(times[sims == s]) for s in range(n)]


def _branch_sum(spikes: np.ndarray, branch: np.ndarray, weight: np.ndarray, nb: int
                ) -> np.ndarray:
    """(n, T, S) bool spikes -> (n, T, nb) float32 weighted sums per branch (sparse)."""
    n, T, S = spikes.shape
    flat = np.flatnonzero(spikes)
    row, seg = np.divmod(flat, S)
    sums = np.bincount(row * nb + branch[seg], weights=weight[seg], minlength=n * T * nb)
    return sums.reshape(n, T, nb).astype(np.float32)


def _branches(morphology: Morphology, segments_per_branch: int) -> np.ndarray:
    """Branch id of every segment: each tree cut into runs of ~`segments_per_branch`
    neighbouring segments (NeuronIO orders segments section by section)."""
    out = np.empty(morphology.num_segments, np.int64)
    basal = morphology.is_basal
    next_id = 0
    for tree in (basal, ~basal):
        idx = np.flatnonzero(tree)
        parts = np.array_split(idx, max(1, round(idx.size / segments_per_branch)))
        for part in parts:
            out[part] = next_id
            next_id += 1
    return out


@dataclasses.dataclass(frozen=True)
class DendriticTeacher:
    """Nonlinear dendritic neuron: NMDA-like sigmoidal branches -> adaptive IF soma.

    Per branch b (synapse weights w ~ lognormal, fixed by `teacher_seed`):
    ``A_b, N_b, G_b`` = AMPA / NMDA / GABA_A traces of the branch's weighted input;
    local depolarisation ``u_b = ampa_gain A_b + nmda_gain N_b - gaba_gain G_b`` (mV);
    Mg unblock ``P_b = sigmoid((u_b - nmda_threshold) / nmda_slope)``; current to the
    soma ``att_b (ampa_gain A_b + nmda_gain N_b P_b * nmda_boost - gaba_gain G_b)`` with
    ``att_b = exp(-dist_b / length_constant)`` (apical tuft inputs arrive weaker).
    """

    teacher_seed: int = 0
    segments_per_branch: int = 13
    tau_ampa: float = 2.0
    tau_nmda_rise: float = 2.0
    tau_nmda_decay: float = 50.0
    tau_gaba: float = 8.0
    ampa_gain: float = 7.5
    nmda_gain: float = 5.0
    gaba_gain: float = 3.5
    nmda_threshold: float = 4.0
    nmda_slope: float = 1.5
    nmda_boost: float = 5.5
    length_constant: float = 700.0
    soma_gain: float = 0.15
    soma: SomaParams = SomaParams(tau_m=15.0, v_rest=-77.0, v_threshold=-56.0, v_reset=-72.0,
                                  adapt_current=4.0, tau_adapt_current=120.0)
    kind: str = "dendritic"

    def simulate(self, exc: np.ndarray, inh: np.ndarray, morphology: Morphology,
                 with_dendrites: bool = False) -> TeacherOutput:
        """exc, inh: (n, T, S) bool input spikes."""
        rng = np.random.default_rng([self.teacher_seed, 11])
        S = morphology.num_segments
        branch = _branches(morphology, self.segments_per_branch)
        nb = int(branch.max()) + 1
        w_exc = rng.lognormal(0.0, 0.35, S)
        w_inh = rng.lognormal(0.0, 0.35, S)
        e = _branch_sum(exc, branch, w_exc, nb)
        i = _branch_sum(inh, branch, w_inh, nb)
        ampa = _exp_filter(e, self.tau_ampa)
        nmda = (_exp_filter(e, self.tau_nmda_decay) - _exp_filter(e, self.tau_nmda_rise)) \
            * (self.tau_nmda_rise / (self.tau_nmda_decay - self.tau_nmda_rise))
        gaba = _exp_filter(i, self.tau_gaba)
        u = self.ampa_gain * ampa + self.nmda_gain * nmda - self.gaba_gain * gaba
        unblock = 0.5 + 0.5 * np.tanh((u - self.nmda_threshold) / (2.0 * self.nmda_slope))
        local = u + self.nmda_gain * self.nmda_boost * nmda * unblock
        dist = np.bincount(branch, morphology.segment_dist, nb) / np.bincount(branch, None, nb)
        att = np.exp(-dist / self.length_constant).astype(np.float32)
        drive = self.soma_gain * (local * att).sum(-1)
        soma, spikes = _integrate_soma(drive, self.soma)
        apical = ~morphology.is_basal
        apical_branches = np.unique(branch[apical])
        nexus = self.soma.v_rest + 0.5 * local[..., apical_branches].mean(-1) + \
            0.3 * (np.minimum(soma, -50.0) - self.soma.v_rest)
        dend = None
        if with_dendrites:
            dend = (self.soma.v_rest + np.minimum(local, 60.0)[..., branch]
                    + 0.5 * (np.minimum(soma, -50.0) - self.soma.v_rest)[..., None])
            dend = np.swapaxes(dend, 1, 2)
        return TeacherOutput(soma, nexus, spikes, dend)

    def describe(self) -> dict[str, Any]:
        return _describe(self)


@dataclasses.dataclass(frozen=True)
class LIFTeacher:
    """Linear integration into a (adaptive-threshold) leaky integrate-and-fire soma.

    ``drive = input_gain * exp_filter_{tau_syn}(sum_i w_i x_i)`` (mV above rest) with
    excitatory weights ``w_i ~ lognormal > 0`` and inhibitory ones ``< 0`` (fixed by
    `teacher_seed`); the soma is `SomaParams` (``kind="alif"`` adds an adaptive threshold).
    """

    kind: str = "lif"
    teacher_seed: int = 0
    tau_syn: float = 5.0
    input_gain: float = 0.7
    inh_scale: float = 0.8
    soma: SomaParams = SomaParams(tau_m=20.0, v_rest=-80.0, v_threshold=-54.0, v_reset=-70.0)

    def simulate(self, exc: np.ndarray, inh: np.ndarray, morphology: Morphology,
                 with_dendrites: bool = False) -> TeacherOutput:
        rng = np.random.default_rng([self.teacher_seed, 13])
        S = morphology.num_segments
        w_exc = rng.lognormal(0.0, 0.5, S).astype(np.float32)
        w_inh = (self.inh_scale * rng.lognormal(0.0, 0.5, S)).astype(np.float32)
        one = np.zeros(S, np.int64)
        current = (_branch_sum(exc, one, w_exc, 1) - _branch_sum(inh, one, w_inh, 1))[..., 0]
        drive = self.input_gain * _exp_filter(current, self.tau_syn)
        soma, spikes = _integrate_soma(drive, self.soma)
        dend = None
        if with_dendrites:
            dend = np.repeat(np.minimum(soma, -50.0)[:, None, :], S, axis=1)
        return TeacherOutput(soma, np.minimum(soma, -50.0), spikes, dend)

    def describe(self) -> dict[str, Any]:
        return _describe(self)


def _describe(teacher: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(teacher):
        value = getattr(teacher, f.name)
        out[f.name] = _describe(value) if dataclasses.is_dataclass(value) else value
    return out


def make_teacher(kind: str = "dendritic", teacher_seed: int = 0, **overrides: Any):
    """A teacher neuron by name: ``"dendritic"``, ``"lif"`` or ``"alif"``."""
    if kind == "dendritic":
        return DendriticTeacher(teacher_seed=teacher_seed, **overrides)
    if kind == "lif":
        return LIFTeacher(teacher_seed=teacher_seed, **overrides)
    if kind == "alif":
        soma = dataclasses.replace(LIFTeacher.soma, adapt_threshold=3.0,
                                   tau_adapt_threshold=200.0)
        return LIFTeacher(kind="alif", teacher_seed=teacher_seed,
                          **{"soma": soma, **overrides})
    raise ValueError(f"teacher kind={kind!r} is invalid: expected one of {TEACHER_KINDS}")


# ---------------------------------------------------------------------------- file format
def _int64_scalars(n: int) -> np.ndarray:
    """Object array of ``np.int64(0) ... np.int64(n - 1)``: one shared scalar object per
    value, so the pickler writes each value once and then memo references (the unpickled
    lists are equal to the originals'; the file is ~4x smaller and faster to write/read)."""
    return np.array(list(np.arange(n, dtype=np.int64)) + [None], dtype=object)[:-1]


def _spike_dict(spikes: np.ndarray, scalars: np.ndarray) -> dict:
    """(T, S) bool -> {np.int64 segment: [np.int64 ms, ...]} for segments that spiked
    (segments and times ascending, as the original generator's ``np.nonzero``)."""
    seg, t = np.nonzero(spikes.T)
    if seg.size == 0:
        return {}
    bounds = np.flatnonzero(np.diff(seg)) + 1
    keys = scalars[seg[np.r_[0, bounds]]].tolist()
    return dict(zip(keys, (part.tolist() for part in np.split(scalars[t], bounds))))


def simulation_dict(exc: np.ndarray, inh: np.ndarray, soma_mv: np.ndarray,
                    nexus_mv: np.ndarray, spike_times: np.ndarray,
                    dendrite_mv: np.ndarray | None = None) -> dict:
    """One entry of ``listOfSingleSimulationDicts`` with the original keys and dtypes."""
    T = soma_mv.shape[0]
    scalars = _int64_scalars(max(T, exc.shape[1]))
    t_low = np.arange(T, dtype=np.float32)
    t_high = (np.arange(T * HIGH_RES_SAMPLES_PER_MS) / HIGH_RES_SAMPLES_PER_MS).astype(np.float32)
    sim = {
        "recordingTimeHighRes": t_high,
        "somaVoltageHighRes": np.interp(t_high, t_low, soma_mv).astype(np.float16),
        "nexusVoltageHighRes": np.interp(t_high, t_low, nexus_mv).astype(np.float16),
        "recordingTimeLowRes": t_low,
        "somaVoltageLowRes": soma_mv.astype(np.float16),
        "nexusVoltageLowRes": nexus_mv.astype(np.float16),
        "exInputSpikeTimes": _spike_dict(exc, scalars),
        "inhInputSpikeTimes": _spike_dict(inh, scalars),
        "outputSpikeTimes": np.asarray(spike_times, np.float64).astype(np.float16),
    }
    if dendrite_mv is not None:
        sim["dendriticVoltagesLowRes"] = dendrite_mv.astype(np.float16)
    return sim


def experiment_params(morphology: Morphology, sims: Sequence[dict], *, seed: int,
                      duration_ms: int, with_dvt: bool, teacher: Mapping[str, Any]) -> dict:
    """The ``Params`` dict with the original generator's keys (values of this teacher)."""
    counts = [int(len(s["outputSpikeTimes"])) for s in sims]
    isis: list[Any] = []
    for s in sims:
        isis.extend(np.diff(np.asarray(s["outputSpikeTimes"], np.float64)))
    isis_arr = np.asarray(isis, np.float64)
    seconds = duration_ms / 1000
    return {
        "randomSeed": int(seed),
        "numSimulations": len(sims),
        "totalSimDurationInSec": int(seconds) if float(seconds).is_integer() else seconds,
        "collectAndSaveDVTs": bool(with_dvt),
        "numSamplesPerMS_HighRes": HIGH_RES_SAMPLES_PER_MS,
        "excitatorySynapseType": "NMDA" if teacher.get("kind") == "dendritic" else "AMPA",
        "inhibitorySynapseType": "GABA_A",
        "useActiveDendrites": teacher.get("kind") == "dendritic",
        "Ih_vshift": 0,
        "inst_rate_sampling_time_interval_options_ms": list(RATE_INTERVAL_OPTIONS_MS),
        "num_bas_ex_spikes_per_100ms_range": list(EXC_SPIKES_PER_100MS_RANGE),
        "num_bas_ex_inh_spike_diff_per_100ms_range": list(EXC_INH_DIFF_PER_100MS_RANGE),
        "num_apic_ex_spikes_per_100ms_range": list(EXC_SPIKES_PER_100MS_RANGE),
        "num_apic_ex_inh_spike_diff_per_100ms_range": list(EXC_INH_DIFF_PER_100MS_RANGE),
        "allSectionsType": list(morphology.section_type),
        "allSections_DistFromSoma": [float(v) for v in morphology.section_dist],
        "allSectionsLength": [float(v) for v in morphology.section_length],
        "allSegmentsType": list(morphology.segment_type),
        "allSegmentsLength": [float(v) for v in morphology.segment_length],
        "allSegments_DistFromSoma": [float(v) for v in morphology.segment_dist],
        "allSegments_SectionDistFromSoma": [float(morphology.section_dist[k])
                                            for k in morphology.section_index],
        "allSegments_SectionInd": [int(k) for k in morphology.section_index],
        "ISICV": np.float64(isis_arr.std() / isis_arr.mean()) if isis_arr.size > 1
        else np.float64(np.nan),
        "listOfISIs": list(isis_arr),
        "numOutputSpikesPerSim": counts,
        "totalNumOutputSpikes": int(sum(counts)),
        "totalNumSimulationSeconds": seconds * len(sims),
        "averageOutputFrequency": float(sum(counts) / max(seconds * len(sims), 1e-9)),
        # the original records the wall time; a fixed 0.0 keeps the files byte-identical
        # for a seed (the loader does not use it)
        "entireExperimentDurationInMinutes": 0.0,
        "teacher": dict(teacher),
    }


def neuronio_file_name(total_spikes: int, num_sims: int, duration_ms: int, seed: int,
                       with_dvt: bool) -> str:
    """The original naming scheme (``..._DVTs__`` only when the file holds DVTs)."""
    dvt = "_DVTs" if with_dvt else "_"
    return (f"sim__saved_InputSpikes{dvt}__{total_spikes}_outSpikes__{num_sims}_simulationRuns__"
            f"{duration_ms / 1000:g}_secDuration__randomSeed_{seed}.p")


def write_neuronio_file(path: str | os.PathLike, params: dict, sims: list[dict]) -> Path:
    """Pickle ``{"Params": params, "Results": {"listOfSingleSimulationDicts": sims}}``
    with protocol 2 to `path`, atomically (temporary file in the same folder, renamed)."""
    content = {"Params": params, "Results": {"listOfSingleSimulationDicts": sims}}
    return atomic_write(path, lambda f: pickle.dump(content, f, protocol=2))


def generate_file(folder: str | os.PathLike, *, kind: str = "dendritic", num_sims: int = 8,
                  duration_ms: int = 6000, seed: int = 0, file_number: int = 0,
                  teacher_seed: int = 0, with_dvt: bool = False, chunk: int = 8,
                  morphology: Morphology | None = None) -> Path:
    """Simulate `num_sims` simulations and write them as one NeuronIO file in `folder`.

    The inputs are drawn from ``np.random.default_rng([seed, file_number])`` (recorded
    as ``randomSeed = seed * 100000 + file_number``), the teacher is fixed by
    `teacher_seed`; simulations are made `chunk` at a time to bound memory.
    """
    if num_sims < 1 or duration_ms < 1:
        raise ValueError(f"num_sims={num_sims} and duration_ms={duration_ms} must be >= 1")
    morphology = morphology or synthetic_morphology()
    teacher = make_teacher(kind, teacher_seed)
    rng = np.random.default_rng([seed, file_number])
    sims: list[dict] = []
    for lo in range(0, num_sims, chunk):
        n = min(chunk, num_sims - lo)
        pairs = [generate_input_spikes(rng, morphology, duration_ms) for _ in range(n)]
        exc = np.stack([p[0] for p in pairs])
        inh = np.stack([p[1] for p in pairs])
        out = teacher.simulate(exc, inh, morphology, with_dendrites=with_dvt)
        for j in range(n):
            sims.append(simulation_dict(exc[j], inh[j], out.soma_mv[j], out.nexus_mv[j],
                                        out.spike_times[j],
                                        None if out.dendrite_mv is None else out.dendrite_mv[j]))
    random_seed = seed * 100000 + file_number
    params = experiment_params(morphology, sims, seed=random_seed, duration_ms=duration_ms,
                               with_dvt=with_dvt, teacher=teacher.describe())
    name = neuronio_file_name(params["totalNumOutputSpikes"], num_sims, duration_ms,
                              random_seed, with_dvt)
    return write_neuronio_file(Path(folder) / name, params, sims)


def _split_counts(files_per_split: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(files_per_split, int):
        counts = {"train": files_per_split, "valid": files_per_split, "test": files_per_split}
    else:
        counts = {"train": 0, "valid": 0, "test": 0}
        for key, value in files_per_split.items():
            if key not in counts:
                raise ValueError(f"files_per_split: unknown split {key!r}; expected "
                                 f"train, valid, test")
            counts[key] = int(value)
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"files_per_split={files_per_split!r}: counts must be >= 0")
    return counts


def generate_dataset(out_dir: str | os.PathLike, *, kind: str = "dendritic",
                     files_per_split: int | Mapping[str, int] = 1, sims_per_file: int = 8,
                     duration_ms: int = 6000, seed: int = 0, teacher_seed: int = 0,
                     with_dvt: bool = False, progress: bool = True) -> dict[str, list[Path]]:
    """A NeuronIO-layout dataset of teacher simulations under `out_dir`.

    Layout: validation files in ``full_ergodic_train_batch_1/``, training files spread
    round-robin over ``full_ergodic_train_batch_2/`` ... ``_10/``, test files in
    ``Data_test/`` (the published split, so `find_files(out_dir, split)` finds them).
    File numbers (and so their inputs) are fixed per split and index, so regenerating
    with more files keeps the existing ones identical.  With `progress`, a line per
    file on stderr (``teacher data: file 3/12 (train 2/10, 8 simulations of 6000 ms) |
    00:41 elapsed, ETA 02:03``).
    """
    counts = _split_counts(files_per_split)
    out = Path(out_dir)
    lines = StepProgress("teacher data: file", sum(counts.values()), enabled=progress)
    lines.message(f"teacher data: generating {lines.total} {kind} files of {sims_per_file} "
                  f"simulations x {duration_ms} ms in {out}")
    result: dict[str, list[Path]] = {"train": [], "valid": [], "test": []}
    split_base = {"valid": 10000, "train": 20000, "test": 30000}
    for split in ("valid", "train", "test"):
        for i in range(counts[split]):
            folder = {"valid": "full_ergodic_train_batch_1", "test": "Data_test",
                      "train": f"full_ergodic_train_batch_{2 + i % 9}"}[split]
            result[split].append(generate_file(
                out / folder, kind=kind, num_sims=sims_per_file, duration_ms=duration_ms,
                seed=seed, file_number=split_base[split] + i, teacher_seed=teacher_seed,
                with_dvt=with_dvt))
            lines.advance(f"{split} {i + 1}/{counts[split]}, {sims_per_file} simulations of "
                          f"{duration_ms} ms")
    return result
