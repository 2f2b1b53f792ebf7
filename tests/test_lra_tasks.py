"""The LRA tasks: ``listops``, ``pathfinder`` and ``pathx`` train and evaluate through the
trainer on generated data, padding never changes a prediction, events equal dense
input, the TFDS reader gives the file reader's batches, the evaluation CLI reads
official-layout files, and generated data is only used once complete."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from elm_jax.cli import main
from elm_jax.models import apply_model, init_model
from elm_jax.tasks.base import head_outputs
from elm_jax.tasks.lra import listops
from elm_jax.tasks.lra.task import (
    ListOpsTaskConfig,
    PathfinderTaskConfig,
    categorical_input,
    listops_data,
    pathfinder_data,
)
from elm_jax.train.trainer import Trainer, resolve_run

TINY_LISTOPS = ListOpsTaskConfig(max_length=40, num_train=24, num_val=8, num_test=8,
                                 min_length=5, gen_max_length=40)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ELM_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "lra_cache"))


def test_listops_padding_and_events_never_change_a_prediction():
    data = listops_data(dataclasses.replace(TINY_LISTOPS, input_format="events"), seed=0)
    _, run = resolve_run("listops", "tiny", ["task.max_length=40"])
    params = init_model(jax.random.key(0), run.model)
    batch = data.train_batch(0, 4)
    assert batch["x"].num_steps == 40 and batch["length"].max() < 40
    logits = head_outputs(apply_model(params, batch["x"], run.model), "last_step",
                          batch["length"])
    dense = categorical_input(_ids(batch), listops.INPUT_DIM, "dense")
    np.testing.assert_allclose(
        head_outputs(apply_model(params, dense, run.model), "last_step", batch["length"]),
        logits, atol=1e-5)
    # 25 more padding steps: the same outputs at each sequence's last real token
    longer = np.concatenate([_ids(batch), np.full((4, 25), -1)], axis=1)
    y = apply_model(params, categorical_input(longer, listops.INPUT_DIM, "events"),
                    run.model)
    np.testing.assert_allclose(head_outputs(y, "last_step", batch["length"]), logits,
                               atol=1e-5)
    # the one-hot input is the token id: channel = id - 1, padding feeds nothing
    tokens, lengths, _ = listops.ListOpsArrays.from_sources(
        ["( [MAX 2 ( [MIN 4 7 ) ] )"], [4]).batch([0], pad_to=8)
    x = categorical_input(tokens - 1, listops.INPUT_DIM, "dense")
    assert lengths[0] == 6 and x[0, 6:].sum() == 0
    np.testing.assert_array_equal(x[0, :6].argmax(-1), tokens[0, :6] - 1)


def _ids(batch):
    """(batch, T) channel of each step, -1 where none, from events or dense input."""
    events = batch["x"]
    if isinstance(events, np.ndarray):
        return np.where(events.sum(-1) > 0, events.argmax(-1), -1)
    ids = np.where(np.asarray(events.value) > 0, np.asarray(events.channel), -1)
    order = np.argsort(np.asarray(events.time), axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1)


def test_tfds_reader_gives_the_file_readers_batches():
    files = listops_data(TINY_LISTOPS, seed=3)
    tfds = listops_data(dataclasses.replace(TINY_LISTOPS, reader="tfds"), seed=3)
    for step in (0, 5):
        a, b = files.train_batch(step, 8), tfds.train_batch(step, 8)
        np.testing.assert_array_equal(_ids(a), _ids(b))
        np.testing.assert_array_equal(a["y"], b["y"])
    cfg = PathfinderTaskConfig(difficulty="easy", num_images=20)
    pf_files = pathfinder_data(cfg, seed=0)
    pf_tfds = pathfinder_data(PathfinderTaskConfig(difficulty="easy", num_images=20,
                                                   reader="tfds"), seed=0)
    a = next(iter(pf_files.eval_batches("test", 4)))
    b = next(iter(pf_tfds.eval_batches("test", 4)))
    np.testing.assert_array_equal(_ids(a), _ids(b))
    np.testing.assert_array_equal(a["y"], b["y"])
    assert _ids(a).shape == (4, 1024) and _ids(a).max() < 16 and (_ids(a) >= 0).all()


def test_tiny_listops_trains_and_eval_reads_an_official_file(tmp_path, capsys):
    # (the LSTM through the trainer and the eval CLI: tests/test_lstm.py)
    for kind in ("elm",):
        task, run = resolve_run("listops", "tiny", [f"model.kind={kind}"])
        report = Trainer(task, run, tmp_path / kind, progress=False).fit()
        final = report["final_evaluation"]
        assert report["status"] == "completed" and final["num_examples"] == 16
        # the final evaluation reads each sequence at its last real token, as training
        assert final["accuracy"] == pytest.approx(report["test"]["accuracy"])
        assert final["chance"] == 0.1 and "GENERATED" in final["data"]
    # an official-layout TSV (CRLF rows), evaluated whole as the test set
    rows = listops.generate_listops(12, seed=9, min_length=5, max_length=40)
    tsv = listops.write_listops_tsv(tmp_path / "basic_test.tsv", rows)
    out = tmp_path / "report.json"
    assert main(["eval", "--task", "listops", "--checkpoint", str(tmp_path / "elm" /
                 "best_model"), "--data-dir", str(tsv), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_examples"] == 12 and 0.0 <= result["accuracy"] <= 1.0
    assert str(tsv) in result["data"]


@pytest.mark.slow
def test_tiny_pathx_trains(tmp_path):
    # CI checks the Path-X data (below); this trains it at T = 16,384
    task, run = resolve_run("pathx", "tiny")
    report = Trainer(task, run, tmp_path, progress=False).fit()
    assert report["status"] == "completed"
    assert report["tokens_per_step"] == run.train.batch_size * 16384


def test_pathx_data_is_16384_steps_of_8_levels():
    data = pathfinder_data(PathfinderTaskConfig(resolution=128, levels=8, num_images=12), 0)
    batch = next(iter(data.eval_batches("val", 2)))
    assert data.seq_len == 16384 and batch["x"].shape == (2, 16384, 8)
    assert (batch["x"].sum(-1) == 1).all() and batch["length"].tolist() == [16384] * 2


def test_tiny_pathfinder_trains_and_eval_reads_an_official_folder(tmp_path):
    from elm_jax.tasks.lra import pathfinder

    for name in ("pathfinder",):
        task, run = resolve_run(name, "tiny")
        report = Trainer(task, run, tmp_path / name, progress=False).fit()
        assert report["status"] == "completed"
        assert report["tokens_per_step"] == run.train.batch_size * (
            1024 if name == "pathfinder" else 16384)
    # a difficulty folder in the official layout (binary metadata, as the public
    # generator writes it): the seeded 10 % test part is evaluated
    folder = pathfinder.generate_pathfinder(tmp_path / "pathfinder32", 32, "easy", 30,
                                            seed=5, metadata_format="npy")
    out = tmp_path / "report.json"
    assert main(["eval", "--task", "pathfinder", "--checkpoint", str(tmp_path / "pathfinder" /
                 "best_model"), "--data-dir", str(folder), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_examples"] == 3 and str(folder) in result["data"]


def test_generated_data_is_used_only_when_complete_and_bad_options_are_named(tmp_path):
    from elm_jax.tasks.lra.task import cache_root, listops_files

    files, description = listops_files(TINY_LISTOPS)
    root = files["train"].parent
    assert (root / "COMPLETE").is_file() and root.parent == cache_root()
    (root / "COMPLETE").unlink()  # as if generation had been cut off
    files2, _ = listops_files(TINY_LISTOPS)
    assert (files2["train"].parent / "COMPLETE").is_file()
    with pytest.raises(ValueError, match="task.input_format='onehot' is invalid"):
        ListOpsTaskConfig(input_format="onehot")
    with pytest.raises(ValueError, match="task.resolution=48 is invalid"):
        PathfinderTaskConfig(resolution=48)
    with pytest.raises(ValueError, match="task.max_length=10 is below the longest"):
        listops_data(ListOpsTaskConfig(data_dir=str(root.parent / root.name),
                                       max_length=10, gen_max_length=11), 0)
    with pytest.raises(FileNotFoundError, match="no Pathfinder difficulty folder"):
        pathfinder_data(PathfinderTaskConfig(data_dir=str(tmp_path)), 0)
