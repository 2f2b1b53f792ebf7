"""Teacher neurons, the NeuronIO-statistics input generator and the file writer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from elm_jax.cli import main as cli_main
from elm_jax.tasks import neuronio as nio
from elm_jax.tasks.neuronio import teacher


@pytest.fixture(scope="module")
def morph():
    return teacher.synthetic_morphology()


def test_morphology_has_the_neuronio_counts(morph):
    assert morph.num_segments == 639
    assert morph.is_basal.sum() == 262 and morph.is_basal[:262].all()
    assert (morph.segment_length > 0).all() and (morph.segment_dist > 0).all()
    assert len(morph.section_type) == morph.section_index.max() + 1


def test_smoothing_equals_per_row_same_convolution():
    rng = np.random.default_rng(0)
    T, interval, sigma = 700, 37, 23
    levels = rng.random((-(-T // interval), 3))
    held = np.repeat(levels, interval, axis=0)[:T]
    w = teacher._gaussian_window(sigma)
    expected = np.stack([np.convolve(held[:, j], w, mode="same") for j in range(3)], 1)
    got = teacher._smoothed_indicators(T, interval, sigma) @ levels
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_input_statistics(morph):
    rng = np.random.default_rng(1)
    exc_counts, inh_counts, per_segment = [], [], 0
    for _ in range(6):
        exc, inh = teacher.generate_input_spikes(rng, morph, 6000)
        assert exc.shape == inh.shape == (6000, 639) and exc.dtype == bool
        exc_counts.append(exc.sum())
        inh_counts.append(inh.sum())
        per_segment = per_segment + exc.sum(0)
    # rate proportional to (length + 10 um) within a tree: longer segments spike more
    adj = morph.segment_length + teacher.SEGMENT_LENGTH_PAD_UM
    for tree in (morph.is_basal, ~morph.is_basal):
        assert np.corrcoef(per_segment[tree], adj[tree])[0, 1] > 0.6
    # per tree E[exc] = 400 / 100 ms -> 2 trees x 6000 ms x 4/ms = 48k; inh ~ 37k
    assert 30_000 < np.mean(exc_counts) < 65_000
    assert 20_000 < np.mean(inh_counts) < 55_000
    assert np.mean(inh_counts) < np.mean(exc_counts)


def test_lif_integrates_linearly(morph):
    lif = teacher.make_teacher("lif")
    rng = np.random.default_rng(2)
    a = rng.random((1, 400, 639)) < 0.002
    b = (rng.random((1, 400, 639)) < 0.002) & ~a          # disjoint, so a | b = a + b
    none = np.zeros_like(a)
    out = {k: lif.simulate(x, none, morph) for k, x in (("a", a), ("b", b), ("ab", a | b))}
    assert not any(len(o.spike_times[0]) for o in out.values())   # subthreshold
    rest = lif.soma.v_rest
    np.testing.assert_allclose(out["ab"].soma_mv - rest,
                               (out["a"].soma_mv - rest) + (out["b"].soma_mv - rest),
                               atol=1e-4)


def test_dendritic_branches_are_supralinear_and_vetoed_by_inhibition(morph):
    dend = teacher.make_teacher("dendritic")
    lif = teacher.make_teacher("lif")
    branch = teacher._branches(morph, dend.segments_per_branch)
    T = 300
    clustered = np.zeros((1, T, 639), bool)
    spread = np.zeros((1, T, 639), bool)
    one_branch = np.flatnonzero(branch == 3)
    # 40 excitatory spikes, one per ms: all on one branch vs over 20 basal branches
    for k, t in enumerate(range(50, 90)):
        clustered[0, t, one_branch[k % one_branch.size]] = True
        spread[0, t, np.flatnonzero(branch == k % 20)[k // 20]] = True
    none = np.zeros_like(clustered)

    def peak(model, exc, inh=none):
        out = model.simulate(exc, inh, morph)
        assert not len(out.spike_times[0])
        return out.soma_mv.max() - model.soma.v_rest

    assert peak(dend, clustered) > 1.5 * peak(dend, spread)      # NMDA-like cooperativity
    assert peak(lif, clustered) < 1.2 * peak(lif, spread)         # the linear control
    inh = np.zeros_like(clustered)
    inh[0, 45:90, one_branch] = True
    assert peak(dend, clustered, inh) < 0.2 * peak(dend, clustered)


@pytest.mark.parametrize("kind", teacher.TEACHER_KINDS)
def test_teachers_fire_and_write_files(tmp_path, kind):
    path = teacher.generate_file(tmp_path, kind=kind, num_sims=4, duration_ms=3000, seed=2,
                                 with_dvt=(kind == "alif"))
    with open(path, "rb") as f:
        exp = pickle.load(f)
    params = exp["Params"]
    sims = exp["Results"]["listOfSingleSimulationDicts"]
    assert params["numSimulations"] == 4 and params["totalSimDurationInSec"] == 3
    assert params["teacher"]["kind"] == kind and len(params["allSegmentsType"]) == 639
    assert params["totalNumOutputSpikes"] == sum(params["numOutputSpikesPerSim"])
    assert f"__{params['totalNumOutputSpikes']}_outSpikes__4_simulationRuns__3_secDuration" \
        in path.name
    assert ("_DVTs__" in path.name) == (kind == "alif")
    sim = sims[0]
    assert sim["somaVoltageLowRes"].dtype == np.float16 and sim["somaVoltageLowRes"].shape == (3000,)
    assert sim["somaVoltageHighRes"].shape == (24000,)
    assert sim["recordingTimeLowRes"].dtype == np.float32
    assert sim["outputSpikeTimes"].dtype == np.float16
    seg = next(iter(sim["exInputSpikeTimes"]))
    assert type(seg) is np.int64 and type(sim["exInputSpikeTimes"][seg][0]) is np.int64
    assert ("dendriticVoltagesLowRes" in sim) == (kind == "alif")
    if kind == "alif":
        assert sim["dendriticVoltagesLowRes"].shape == (639, 3000)
    v = np.concatenate([s["somaVoltageLowRes"] for s in sims]).astype(float)
    capped = np.minimum(v, -55.0)
    assert -75 < capped.mean() < -60 and 1.0 < capped.std() < 10     # NeuronIO-like range
    assert params["totalNumOutputSpikes"] > 0
    data = nio.load_file(path)
    assert data.num_output_spikes.tolist() == params["numOutputSpikesPerSim"]


def test_generation_is_deterministic(tmp_path, morph):
    a = teacher.generate_file(tmp_path / "a", num_sims=2, duration_ms=1000, seed=9)
    b = teacher.generate_file(tmp_path / "b", num_sims=2, duration_ms=1000, seed=9)
    c = teacher.generate_file(tmp_path / "c", num_sims=2, duration_ms=1000, seed=10)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # (no wall-clock limit here: a shared 2-core machine makes one flaky; generation
    # speed shows in the trainer's progress output instead)


def test_writer_is_atomic(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        teacher.write_neuronio_file(tmp_path / "sim__x.p", {}, [])
    assert list(tmp_path.iterdir()) == []


def test_dataset_layout_and_cli(tmp_path, capsys):
    out = tmp_path / "data"
    assert cli_main(["neuronio-teacher", "--out", str(out), "--kind", "lif",
                     "--files-per-split", "train=2,valid=1,test=1", "--sims-per-file", "2",
                     "--duration-ms", "1200", "--seed", "1"]) == 0
    assert "wrote 8 lif teacher simulations" in capsys.readouterr().out
    assert [f.parent.name for f in nio.find_files(out, "train")] == \
        ["full_ergodic_train_batch_2", "full_ergodic_train_batch_3"]
    assert [f.parent.name for f in nio.find_files(out, "valid")] == ["full_ergodic_train_batch_1"]
    assert [f.parent.name for f in nio.find_files(out, "test")] == ["Data_test"]
    data = [nio.load_file(f) for f in nio.find_files(out)]
    assert all(d.num_sims == 2 and d.duration_ms == 1200 for d in data)
    # different files hold different inputs
    assert not np.array_equal(data[0].x_dense(), data[1].x_dense())
    assert cli_main(["neuronio-teacher", "--out", str(out), "--files-per-split", "x=1"]) == 2
    assert "unknown split 'x'" in capsys.readouterr().err
