"""The archive-backed LRA tasks ``lra_text``, ``lra_retrieval`` and ``lra_image``: they
train through the trainer on generated data in the official layouts, the evaluation
CLI reads fixture files as distributed, the TFDS reader gives the file reader's
batches, the encodings and pairs reach the model as documented, and bad input is
named."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from elm_jax.cli import main
from elm_jax.models import init_model, predict
from elm_jax.tasks.lra import image, text
from elm_jax.tasks.lra.archive_tasks import (
    ImageTaskConfig,
    RetrievalTaskConfig,
    TextTaskConfig,
    image_data,
    retrieval_data,
    text_data,
    text_location,
)
from elm_jax.train.trainer import Trainer, resolve_run

TINY_TEXT = TextTaskConfig(max_length=64, num_per_class=6)
TINY_PAIRS = RetrievalTaskConfig(max_length=48, num_train=16, num_val=4, num_test=6)
TINY_IMAGES = ImageTaskConfig(num_train=20, num_test=6)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ELM_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "lra_cache"))


def _fixture(task, folder):
    """Official-layout test files of `task` written into `folder`, and their test size."""
    if task == "lra_text":  # the unpacked aclImdb/ folder (training: the archive)
        return text.write_imdb_fixture(folder, 5, seed=7, as_archive=False), 10
    if task == "lra_retrieval":  # one TSV, evaluated whole as the test set
        return text.write_aan_fixture(folder, (4, 4, 9), seed=7) / \
            "new_aan_pairs.test.tsv", 9
    # the binary archive (training: the python one)
    return image.write_cifar_fixture(folder, 10, 7, seed=7, fmt="binary"), 7


@pytest.mark.parametrize("task_name", ["lra_text", "lra_retrieval", "lra_image"])
def test_tiny_task_trains_and_eval_reads_official_files(task_name, tmp_path):
    task, run = resolve_run(task_name, "tiny")
    report = Trainer(task, run, tmp_path / "run", progress=False).fit()
    final = report["final_evaluation"]
    assert report["status"] == "completed" and "GENERATED" in final["data"]
    # the final evaluation reads each sequence at its last real token, as training
    assert final["accuracy"] == pytest.approx(report["test"]["accuracy"])
    data_path, size = _fixture(task_name, tmp_path / "official")
    out = tmp_path / "report.json"
    assert main(["eval", "--task", task_name, "--checkpoint",
                 str(tmp_path / "run" / "best_model"), "--data-dir", str(data_path),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_examples"] == size and 0.0 <= result["accuracy"] <= 1.0
    assert "GENERATED" not in result["data"]


def _ids(x):
    """Channel of each step, -1 where none, from dense one-hot input."""
    return np.where(x.sum(-1) > 0, x.argmax(-1), -1)


def test_tfds_reader_gives_the_file_readers_batches():
    for make, cfg in ((text_data, TINY_TEXT), (retrieval_data, TINY_PAIRS),
                      (image_data, TINY_IMAGES)):
        files = make(cfg, seed=3)
        tfds = make(dataclasses.replace(cfg, reader="tfds"), seed=3)
        assert (files.num_input, files.seq_len) == (tfds.num_input, tfds.seq_len)
        for a, b in ((files.train_batch(1, 4), tfds.train_batch(1, 4)),
                     (next(iter(files.eval_batches("test", 4))),
                      next(iter(tfds.eval_batches("test", 4))))):
            np.testing.assert_array_equal(a["x"], b["x"])
            np.testing.assert_array_equal(a["y"], b["y"])
            np.testing.assert_array_equal(a["length"], b["length"])


def test_documents_and_pairs_reach_the_model_as_encoded():
    # bytes: channel = byte value; padding steps feed nothing
    data = text_data(TINY_TEXT, seed=0)
    batch = next(iter(data.eval_batches("test", 3)))
    raw = text.read_imdb(text_location(TINY_TEXT)[0])
    first = raw["test"][0][0][:64]
    np.testing.assert_array_equal(_ids(batch["x"][0])[:len(first)], list(first))
    assert batch["x"].shape == (3, 64, 256) and batch["length"][0] == len(first)
    assert (_ids(batch["x"])[np.arange(64) >= batch["length"][:, None]] == -1).all()
    # chars: the vocabulary of the training texts sets the input size
    chars = text_data(dataclasses.replace(TINY_TEXT, encoding="chars", min_freq=2), 0)
    vocab = text.CharVocabulary.build(raw["train"][0], 2)
    assert chars.num_input == vocab.size < 256
    # pairs: (batch, 2, T, channels) with a length per document; the two-tower model
    # gives one prediction per pair, and padding after a document changes nothing
    pairs = retrieval_data(TINY_PAIRS, seed=0)
    batch = pairs.train_batch(0, 4)
    assert batch["x"].shape == (4, 2, 48, 256) and batch["length"].shape == (4, 2)
    assert pairs.seq_len == 96
    _, run = resolve_run("lra_retrieval", "tiny")
    params = init_model(jax.random.key(0), run.model)
    logits = predict(params, batch["x"], run.model, "last_step", batch["length"])
    assert logits.shape == (4, 2)
    padded = np.concatenate([batch["x"], np.ones_like(batch["x"][:, :, :5])], axis=2)
    np.testing.assert_allclose(predict(params, padded, run.model, "last_step",
                                       batch["length"]), logits, atol=1e-5)
    # images: 16 grey levels of the 1,024 pixels, row by row
    images = image_data(TINY_IMAGES, seed=0)
    batch = next(iter(images.eval_batches("val", 2)))
    assert batch["x"].shape == (2, 1024, 16) and (batch["x"].sum(-1) == 1).all()
    assert (len(images.splits["train"]), len(images.splits["val"]),
            len(images.splits["test"])) == (18, 2, 6)


def test_bad_options_and_mismatched_models_are_named(tmp_path):
    with pytest.raises(ValueError, match="task.encoding='words' is invalid"):
        TextTaskConfig(encoding="words")
    with pytest.raises(ValueError, match="task.input_format='events' is invalid"):
        RetrievalTaskConfig(input_format="events")
    with pytest.raises(ValueError, match="task.grey='average' is invalid"):
        ImageTaskConfig(grey="average")
    with pytest.raises(FileNotFoundError, match="no IMDB data"):
        text_data(TextTaskConfig(data_dir=str(tmp_path)), 0)
    with pytest.raises(FileNotFoundError, match="no AAN files"):
        retrieval_data(RetrievalTaskConfig(data_dir=str(tmp_path)), 0)
    # a chars model evaluated on data whose vocabulary differs: named, not misread
    task, run = resolve_run("lra_text", "tiny", ["task.encoding=chars", "task.min_freq=2"])
    params = init_model(jax.random.key(0), run.model)
    with pytest.raises(ValueError, match=r"the model has num_input=\d+"):
        task.final_evaluation(dataclasses.replace(run.task, encoding="bytes"), run.model,
                              params)
