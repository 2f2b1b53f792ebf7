"""NeuronIO files: discovery, strict loading, dense conversion, cache, training windows."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from helpers import require_shared
from elm_jax.tasks import neuronio as nio
from elm_jax.tasks.neuronio import reader as nio_reader
from elm_jax.tasks.neuronio import teacher

# ../shared/data/neuronio_l5pc/README.md: folder -> (sims, output spikes per simulation)
REAL_FILES = {
    "full_ergodic_train_batch_1": (2, [13, 0]),
    "full_ergodic_train_batch_2": (8, [19, 7, 27, 16, 28, 0, 7, 7]),
    "full_ergodic_train_batch_3": (8, [1, 31, 12, 0, 0, 0, 3, 0]),
}


def _dense_from_plain_pickle(path):
    """Independent dense conversion: trusted pickle.load + the published dict-to-binary
    loop, exc rows then inh rows, signed."""
    with open(path, "rb") as f:
        exp = pickle.load(f, encoding="latin1")
    segments = len(exp["Params"]["allSegmentsType"])
    sims = exp["Results"]["listOfSingleSimulationDicts"]
    T = len(sims[0]["somaVoltageLowRes"])
    x = np.zeros((len(sims), T, 2 * segments), np.int8)
    y = np.zeros((len(sims), T), np.float32)
    for s, sim in enumerate(sims):
        for seg, times in sim["exInputSpikeTimes"].items():
            for t in times:
                x[s, t, seg] = 1
        for seg, times in sim["inhInputSpikeTimes"].items():
            for t in times:
                x[s, t, segments + seg] = -1
        for t in sim["outputSpikeTimes"]:
            y[s, int(float(t) - 0.5)] = 1.0
    return exp, x, y


@pytest.fixture(scope="module")
def real_dir():
    return require_shared("data", "neuronio_l5pc")


@pytest.fixture(scope="module")
def real_data(real_dir):
    return {f.parent.name: nio.load_file(f) for f in nio.find_files(real_dir)}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "full_ergodic_train_batch_2"
    return teacher.generate_file(folder, num_sims=3, duration_ms=1500, seed=5)


# ---------------------------------------------------------------------------- real files
@pytest.mark.parametrize("folder", sorted(REAL_FILES))
def test_real_file_counts_and_layout(real_data, folder):
    sims, spikes = REAL_FILES[folder]
    data = real_data[folder]
    assert data.num_sims == sims and data.duration_ms == 6000
    assert data.num_segments == 639 and data.num_input == 1278
    assert data.num_output_spikes.tolist() == spikes
    assert data.y_spike.sum(1).tolist() == spikes      # no two spikes share a bin here
    assert data.soma_mv.dtype == np.float32 and data.y_spike.dtype == np.float32
    # ~11 Hz per synapse: ~48k excitatory + ~36k inhibitory events per 6-s simulation
    assert 50_000 < data.num_events / sims < 150_000


def test_real_file_with_dvts_equals_independent_conversion(real_dir, real_data):
    path = nio.find_files(real_dir, "valid")[0]
    assert "_DVTs__" in path.name
    exp, x, y = _dense_from_plain_pickle(path)
    data = real_data["full_ergodic_train_batch_1"]
    assert "dendriticVoltagesLowRes" in exp["Results"]["listOfSingleSimulationDicts"][0]
    np.testing.assert_array_equal(data.x_dense(), x)
    np.testing.assert_array_equal(data.y_spike, y)
    soma = np.stack([s["somaVoltageLowRes"] for s in exp["Results"]["listOfSingleSimulationDicts"]])
    np.testing.assert_array_equal(data.soma_mv, soma.astype(np.float32))


def test_real_file_without_dvts_equals_independent_conversion(real_dir, real_data):
    path = [f for f in nio.find_files(real_dir, "train") if "batch_3" in str(f)][0]
    assert "InputSpikes___" in path.name
    exp, x, y = _dense_from_plain_pickle(path)
    assert "dendriticVoltagesLowRes" not in exp["Results"]["listOfSingleSimulationDicts"][0]
    data = real_data["full_ergodic_train_batch_3"]
    sims = [0, 1, 5]
    np.testing.assert_array_equal(data.x_dense(sims), x[sims])
    np.testing.assert_array_equal(data.y_spike, y)


def test_find_files_splits(real_dir):
    assert [f.parent.name for f in nio.find_files(real_dir, "valid")] == \
        ["full_ergodic_train_batch_1"]
    assert [f.parent.name for f in nio.find_files(real_dir, "train")] == \
        ["full_ergodic_train_batch_2", "full_ergodic_train_batch_3"]
    assert len(nio.find_files(real_dir)) == 3
    with pytest.raises(FileNotFoundError, match="Data_test"):
        nio.find_files(real_dir, "test")
    with pytest.raises(ValueError, match="split='bogus'"):
        nio.find_files(real_dir, "bogus")


def test_find_files_both_globs_and_nested_layout(tmp_path, teacher_file):
    beniaguev = ("exBas_0_800_inhBasDiff_-600_200__exApic_0_800_inhApicDiff_-600_200__saved_"
                 "InputSpikes_DVTs__561_outSpikes__128_simulationRuns__6_secDuration__"
                 "randomSeed_100520.p")
    test_dir = tmp_path / "neuronio" / "test" / "Data_test"
    train_dir = tmp_path / "neuronio" / "train" / "full_ergodic_train_batch_4"
    test_dir.mkdir(parents=True)
    train_dir.mkdir(parents=True)
    shutil.copy(teacher_file, test_dir / beniaguev)
    shutil.copy(teacher_file, train_dir / teacher_file.name)
    (train_dir / "notes.txt").write_text("not data")
    assert nio.find_files(tmp_path / "neuronio", "test") == [test_dir / beniaguev]
    assert nio.find_files(tmp_path / "neuronio", "train") == [train_dir / teacher_file.name]
    assert len(nio.find_files(tmp_path / "neuronio")) == 2
    assert nio.load_file(test_dir / beniaguev).num_sims == 3


# ---------------------------------------------------------------------------- round trip
def test_teacher_file_round_trips_exactly(tmp_path):
    morph = teacher.synthetic_morphology()
    rng = np.random.default_rng(3)
    pairs = [teacher.generate_input_spikes(rng, morph, 2100) for _ in range(2)]
    exc = np.stack([p[0] for p in pairs])
    inh = np.stack([p[1] for p in pairs])
    out = teacher.make_teacher("dendritic").simulate(exc, inh, morph)
    sims = [teacher.simulation_dict(exc[i], inh[i], out.soma_mv[i], out.nexus_mv[i],
                                    out.spike_times[i]) for i in range(2)]
    params = teacher.experiment_params(morph, sims, seed=3, duration_ms=2100, with_dvt=False,
                                       teacher={"kind": "dendritic"})
    path = teacher.write_neuronio_file(tmp_path / "sim__x.p", params, sims)
    data = nio.load_file(path)
    assert data.num_sims == 2 and data.duration_ms == 2100
    x = np.concatenate([exc, inh], -1).astype(np.int8) * np.r_[np.ones(639), -np.ones(639)].astype(np.int8)
    np.testing.assert_array_equal(data.x_dense(), x)
    np.testing.assert_array_equal(data.soma_mv, out.soma_mv.astype(np.float16).astype(np.float32))
    for i in range(2):
        t16 = out.spike_times[i].astype(np.float16).astype(np.float64)
        expected = np.zeros(2100, np.float32)
        expected[(t16 - 0.5).astype(int)] = 1
        np.testing.assert_array_equal(data.y_spike[i], expected)
        assert data.num_output_spikes[i] == len(out.spike_times[i])


def test_windows_pad_outside_the_simulation(teacher_file):
    data = nio.load_file(teacher_file)
    dense = data.x_dense([1])[0]
    w = data.x_windows([1, 1, 1], [-100, 1400, 3000], 300)
    np.testing.assert_array_equal(w[0, 100:], dense[:200])
    assert not w[0, :100].any()
    np.testing.assert_array_equal(w[1, :100], dense[1400:])
    assert not w[1, 100:].any() and not w[2].any()
    sub = data.subset([2, 0])
    np.testing.assert_array_equal(sub.x_dense(), data.x_dense([2, 0]))


# ---------------------------------------------------------------------------- bad files
def _bad_files(tmp_path, teacher_file):
    raw = teacher_file.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2],
        "corrupt": raw[:2] + b"\xff\xfe garbage that is no pickle" * 10,
        "empty": b"",
        "text": b"Params,Results\n1,2\n",
        "protocol4": pickle.dumps({"Params": {}, "Results": {}}, protocol=4),
        "trailing": raw + b"extra",
    }

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    files["evil_global"] = pickle.dumps({"Params": Evil()}, protocol=2)
    files["no_results"] = pickle.dumps({"Params": {"allSegmentsType": ["basal"]}}, protocol=2)
    files["not_a_dict"] = pickle.dumps([1, 2, 3], protocol=2)
    exp = pickle.loads(raw)
    exp["Results"]["listOfSingleSimulationDicts"][1]["exInputSpikeTimes"][np.int64(5)] = [99999]
    files["time_out_of_range"] = pickle.dumps(exp, protocol=2)
    exp = pickle.loads(raw)
    exp["Params"]["totalSimDurationInSec"] = 6
    files["duration_mismatch"] = pickle.dumps(exp, protocol=2)
    paths = {}
    for name, content in files.items():
        path = tmp_path / f"sim__{name}.p"
        path.write_bytes(content)
        paths[name] = path
    return paths


def test_bad_files_raise_errors_naming_the_file(tmp_path, teacher_file):
    expected = {"truncated": "truncated", "corrupt": "corrupt", "empty": "protocol-2",
                "text": "protocol-2", "protocol4": "protocol 4", "trailing": "after the end",
                "evil_global": "refusing to load the global", "no_results": "no key 'Results'",
                "not_a_dict": "expected a dict", "time_out_of_range": "99999",
                "duration_mismatch": "totalSimDurationInSec"}
    for name, path in _bad_files(tmp_path, teacher_file).items():
        with pytest.raises(nio.NeuronIOFormatError) as err:
            nio.load_file(path)
        assert str(path) in str(err.value), name
        assert expected[name] in str(err.value), (name, str(err.value))
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        nio.load_file(tmp_path / "does_not_exist.p")


# ---------------------------------------------------------------------------- cache
def test_cache_is_used_and_invalidated(tmp_path, teacher_file, monkeypatch):
    src = tmp_path / teacher_file.name
    shutil.copy(teacher_file, src)
    cache_dir = tmp_path / "cache"
    first = nio.load_file(src, cache_dir=cache_dir)
    caches = list(cache_dir.glob("*.npz"))
    assert len(caches) == 1 and not list(cache_dir.glob(".*"))

    def no_parse(path):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(nio_reader, "read_neuronio_pickle", no_parse)
        cached = nio.load_file(src, cache_dir=cache_dir)
    for name in ("event_ptr", "event_channel", "y_spike", "soma_mv", "num_output_spikes"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(first, name))
        assert getattr(cached, name).dtype == getattr(first, name).dtype
    os.utime(src, ns=(1, 1))  # source changed -> cache stale -> reparsed and rewritten
    with monkeypatch.context() as m:
        m.setattr(nio_reader, "read_neuronio_pickle", no_parse)
        with pytest.raises(AssertionError, match="cache should have been used"):
            nio.load_file(src, cache_dir=cache_dir)
    caches[0].write_bytes(b"not a zip")  # unreadable cache -> rebuilt
    assert nio.load_file(src, cache_dir=cache_dir).num_sims == 3
    assert np.load(caches[0])["num_segments"] == 639


def test_cache_is_never_half_written(tmp_path, teacher_file, monkeypatch):
    cache_dir = tmp_path / "cache"
    real_savez = np.savez

    def crash_mid_write(f, **arrays):
        real_savez(f, **{k: arrays[k] for k in list(arrays)[:3]})  # part of the file...
        raise OSError("disk full")                                  # ...then a failure

    monkeypatch.setattr(np, "savez", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        nio.load_file(teacher_file, cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == []          # neither a cache nor a temporary file
    monkeypatch.setattr(np, "savez", real_savez)
    nio.load_file(teacher_file, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*.npz"))) == 1


def test_prepare_cache_in_parallel(tmp_path, teacher_file):
    other = teacher.generate_file(tmp_path / "src", num_sims=1, duration_ms=1200, seed=8)
    caches = nio.prepare_cache([teacher_file, other], tmp_path / "cache", workers=2)
    assert [c.exists() for c in caches] == [True, True]
    assert sorted(tmp_path.joinpath("cache").iterdir()) == sorted(caches)
    cached = nio.load_file(other, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(cached.x_dense(), nio.load_file(other).x_dense())


# ---------------------------------------------------------------------------- sampling
def test_window_sampler_batches(teacher_file, real_data):
    data = real_data["full_ergodic_train_batch_1"]       # 2 simulations < batch 8
    sampler = nio.WindowSampler([data, teacher_file], seed=4, window=500)
    x, y_spike, y_soma = sampler.batch(0)
    assert x.shape == (8, 500, 1278) and x.dtype == np.int8
    assert y_spike.shape == (8, 500) and y_spike.dtype == np.float32
    assert y_soma.shape == (8, 500) and y_soma.dtype == np.float32
    again = sampler.batch(0)
    for a, b in zip((x, y_spike, y_soma), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sampler.batch(1)[0], x)
    # each window is a slice [start, start + 500) with start in [500, T - 500)
    for idx in range(4):
        k = sampler.file_index(idx)
        d = sampler.file(k)
        xb, sb, vb = sampler.batch(idx)
        dense = d.x_dense()
        for w in range(8):
            hits = [(s, t0) for s in range(d.num_sims) for t0 in range(500, d.duration_ms - 500)
                    if np.array_equal(d.y_spike[s, t0:t0 + 500], sb[w])
                    and np.array_equal(nio.soma_train_target(d.soma_mv[s, t0:t0 + 500]), vb[w])]
            assert hits, (idx, w)
            s, t0 = hits[0]
            np.testing.assert_array_equal(dense[s, t0:t0 + 500], xb[w])
    # streamed batches equal the pure function; every file is used once per pass
    streamed = list(sampler.iterate(2, 5, prefetch=2))
    assert len(streamed) == 3 and len(list(sampler.iterate(2, 5, prefetch=0))) == 3
    for i, batch in zip(range(2, 5), streamed):
        for a, b in zip(batch, sampler.batch(i)):
            np.testing.assert_array_equal(a, b)
    bpf = sampler.batches_per_file
    assert sorted(sampler.file_index(c * bpf) for c in range(2)) == [0, 1]


def test_window_sampler_errors(teacher_file):
    short = teacher.generate_file(teacher_file.parent.parent / "short", num_sims=1,
                                  duration_ms=900, seed=1)
    with pytest.raises(ValueError, match="too short"):
        nio.WindowSampler([short]).batch(0)
    with pytest.raises(ValueError, match="at least one"):
        nio.WindowSampler([])
    bad = teacher_file.parent / "sim__broken.p"
    bad.write_bytes(b"\x80\x02garbage")
    sampler = nio.WindowSampler([teacher_file, bad], batches_per_file=1)
    bad_index = next(i for i in range(10) if sampler.file_index(i) == 1)
    with pytest.raises(nio.NeuronIOFormatError, match="sim__broken.p"):
        list(sampler.iterate(0, bad_index + 1))


# ---------------------------------------------------------------------------- events
def test_window_events_equal_dense_windows(teacher_file):
    data = nio.load_file(teacher_file)
    sims, starts = [1, 1, 1, 0, 2], [-100, 1400, 3000, 0, 700]
    events = data.x_window_events(sims, starts, 300)
    assert events.shape == (5, 300, data.num_input) and events.value.dtype == np.int8
    assert events.time.dtype == events.channel.dtype == np.int32
    counts = (events.value != 0).sum(1)
    assert events.capacity == counts.max() and counts[2] == 0  # window past the end
    np.testing.assert_array_equal(events.to_dense(), data.x_windows(sims, starts, 300))
    with pytest.raises(ValueError, match="capacity=3 is too small"):
        data.x_window_events(sims, starts, 300, capacity=3)
    # the window bound: the largest count over the allowed starts, by brute force
    window, lo, hi = 200, 500, 1299
    dense = data.x_dense()
    brute = max(int((dense[s, t0:t0 + window] != 0).sum())
                for s in range(data.num_sims) for t0 in range(lo, hi + 1))
    assert data.max_window_events(window, lo, hi) == brute
    assert data.max_window_events(window, 2000, 2100) == 0


def test_window_sampler_events(teacher_file, x64):
    import jax
    import jax.numpy as jnp

    import elm_jax

    dense = nio.WindowSampler([teacher_file], seed=2, window=300, batch_size=4)
    events = nio.WindowSampler([teacher_file], seed=2, window=300, batch_size=4,
                               input_format="events")
    assert dense.capacity is None
    # capacity: the largest window the sampler can draw (starts in [500, T - window))
    data = events.file(0)
    assert events.capacity == data.max_window_events(300, 500, data.duration_ms - 301)
    for index in range(3):
        (xe, se, ve), (xd, sd, vd) = events.batch(index), dense.batch(index)
        assert xe.capacity == events.capacity and xe.shape == xd.shape
        np.testing.assert_array_equal(xe.to_dense(), xd)
        np.testing.assert_array_equal(se, sd)
        np.testing.assert_array_equal(ve, vd)
    # the same windows through apply: equal outputs
    config = elm_jax.ELMConfig(num_input=data.num_input, num_output=2, num_memory=3,
                               num_branch=5, num_synapse_per_branch=256, routing="neuronio")
    params = elm_jax.init_params(jax.random.key(0), config, jnp.float64)
    y_events = elm_jax.apply(params, xe, config)
    y_dense = elm_jax.apply(params, xd, config)
    assert y_events.dtype == jnp.float64
    np.testing.assert_allclose(y_events, y_dense, rtol=0, atol=1e-10)
    # a given capacity is used as is; too small fails when a batch needs more
    small = nio.WindowSampler([teacher_file], seed=2, window=300, batch_size=4,
                              input_format="events", capacity=2)
    with pytest.raises(ValueError, match="capacity=2 is too small"):
        small.batch(0)
    with pytest.raises(ValueError, match="input_format='sparse' is invalid"):
        nio.WindowSampler([teacher_file], input_format="sparse")
    with pytest.raises(ValueError, match="capacity=0 is invalid"):
        nio.WindowSampler([teacher_file], input_format="events", capacity=0)
