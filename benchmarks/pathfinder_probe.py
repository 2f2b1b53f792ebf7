"""Pathfinder learnability probe: is generated Pathfinder-32 learnable, and what does a
small sequence model pick up within a given budget?

``python -m benchmarks pathfinder-probe`` runs two parts (``--parts``):

* ``stats``: on ``--stat-images`` freshly generated images of ``--difficulty`` (the
  marker centres taken exactly from the generator's masks):

  - the label balance;
  - the **marker-distance shortcut**: the accuracy of the best single threshold on the
    Euclidean distance between the two markers, fitted on one half of the images and
    scored on the other half.  The generator puts both target snakes' starts
    ``seed_distance`` apart, so "same snake" and "other snake" endpoints lie at
    different typical distances: a model that only measures the distance gets this;
  - the **connectivity oracle**: grey values above ``--oracle-threshold`` are strokes;
    the label is predicted 1 iff both marker centres fall in one 8-connected
    component.  It measures how much of the label the downsampled 8-bit pixels still
    carry (anti-aliasing breaks thin strokes and merges touching ones).

* ``train``: for every ``--variants`` x ``--models``, a model trained from scratch
  (the trainer's optimizer: Adam with a cosine decay, gradient clipping 1.0, the ELM's
  fixed time constants untouched; cross-entropy on the last output,
  batch ``--batch``) on ``--train-images`` generated images, validated on
  ``--val-images`` others every ``--eval-every`` steps.  Variants, all 32 x 32,
  16 grey levels, flattened row by row (T = 1,024) as the ``pathfinder`` task:

  - ``dots``: two 2 x 2 white squares on black, label 1 iff they are less than
    ``--dots-threshold`` px apart: a pure "relate two distant events" task;
  - ``no_distractors``: the generator with no distractor snakes (the two target
    snakes and the markers only);
  - ``standard``: the generator exactly as the ``pathfinder`` task uses it.

  Models: the small presets' ELM (``--elm-memory`` memory units, d_mlp twice that,
  tau_m 1-1e3) at ``--elm-lr``, and the Chrono-LSTM (``--lstm-hidden``, chrono 1-2e3) at
  ``--lstm-lr``.  The ELM's ``--elm-tau-s`` defaults to 32 (one image row), not the
  paper's Pathfinder 5: the paper found a larger tau_s picks up Path-X's learning
  signal faster (tau_s 150 for 128-pixel rows); docs/lra.md has the learning-rate and
  tau_s trials behind these defaults.

The images are generated in memory with the package's generator (image ``n`` from
``image_rng(--seed, n)``, as `elm_jax.tasks.lra.pathfinder.generate_pathfinder`),
so a run needs no files.  Results are single runs of one seed: read them as "learns
within this budget or not", not as the models' accuracies.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from . import common

NAME = "pathfinder_probe"
VARIANTS = ("dots", "no_distractors", "standard")
MODELS = ("elm", "lstm")
RESOLUTION = 32
LEVELS = 16


# ----------------------------------------------------------------------------- data
def _generator_chunk(job: tuple[int, int, str, str, int, bool]) -> tuple[Any, ...]:
    """Images ``lo .. lo + n - 1`` of one variant: (images (n, 32, 32) uint8, labels
    (n,), marker centres (n, 2, 2) in output pixels or None)."""
    from elm_jax.tasks.lra import pathfinder_generator as gen

    lo, n, variant, difficulty, seed, with_tips = job
    params = gen.GENERATOR_PARAMS[RESOLUTION]
    if variant == "no_distractors":
        params = dataclasses.replace(params, distractor_budget=0)
    length = gen.CONTOUR_LENGTHS[difficulty]
    images, labels, tips = [], [], []
    for i in range(lo, lo + n):
        out = gen.generate_image(gen.image_rng(seed, i), RESOLUTION, length, params=params,
                                 return_masks=with_tips)
        images.append(out[0])
        labels.append(out[1])
        if with_tips:
            scale = params.antialias_scale
            tips.append((np.asarray(out[2]["tips"], np.float64) + 0.5) / scale - 0.5)
    return (np.stack(images), np.asarray(labels, np.int32),
            np.stack(tips) if with_tips else None)


def dots_images(n: int, seed: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (32, 32) uint8 with two 2 x 2 white squares at least 3 px apart;
    label 1 iff their distance is below `threshold` px."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    images = np.zeros((n, RESOLUTION, RESOLUTION), np.uint8)
    labels = np.zeros(n, np.int32)
    for i in range(n):
        while True:
            a, b = rng.integers(0, RESOLUTION - 1, (2, 2))
            distance = float(np.hypot(*(a - b)))
            if distance >= 3.0:
                break
        for y, x in (a, b):
            images[i, y:y + 2, x:x + 2] = 255
        labels[i] = distance < threshold
    return images, labels


def make_images(variant: str, n: int, args: argparse.Namespace, seed: int,
                with_tips: bool = False) -> tuple[Any, ...]:
    """(images (n, 32, 32) uint8, labels (n,), tips (n, 2, 2) or None) of a variant."""
    if variant == "dots":
        return (*dots_images(n, seed, args.dots_threshold), None)
    chunk = 500
    jobs = [(lo, min(chunk, n - lo), variant, args.difficulty, seed, with_tips)
            for lo in range(0, n, chunk)]
    if args.workers > 1 and len(jobs) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            parts = list(pool.map(_generator_chunk, jobs))
    else:
        parts = [_generator_chunk(job) for job in jobs]
    tips = np.concatenate([p[2] for p in parts]) if with_tips else None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tips


# ----------------------------------------------------------------------------- stats
def best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """Fit one threshold rule ``label = (value < t)`` or ``(value >= t)`` on the first
    half (t at midpoints between the values seen), score it on the second half:
    (held-out accuracy, t, direction +1 for ``<`` / -1 for ``>=``)."""
    half = len(values) // 2
    fit_v, fit_y = values[:half], labels[:half]
    cuts = np.unique(fit_v)
    best = (-1.0, 0.0, 1)
    for t in np.concatenate([cuts[:1] - 1.0, (cuts[1:] + cuts[:-1]) / 2, cuts[-1:] + 1.0]):
        for direction in (1, -1):
            pred = (fit_v < t) if direction == 1 else (fit_v >= t)
            acc = float((pred == fit_y).mean())
            if acc > best[0]:
                best = (acc, float(t), direction)
    _, t, direction = best
    test_v, test_y = values[half:], labels[half:]
    pred = (test_v < t) if direction == 1 else (test_v >= t)
    return float((pred == test_y).mean()), t, direction


def connectivity_oracle(images: np.ndarray, tips: np.ndarray, threshold: int) -> np.ndarray:
    """Predicted labels: 1 iff both marker centres (rounded) lie in one 8-connected
    component of ``image > threshold``."""
    from scipy import ndimage

    pred = np.zeros(len(images), np.int32)
    for i, (image, tip) in enumerate(zip(images, tips, strict=True)):
        components, _ = ndimage.label(image > threshold, structure=np.ones((3, 3)))
        (y0, x0), (y1, x1) = np.clip(np.rint(tip).astype(int), 0, RESOLUTION - 1)
        c0, c1 = components[y0, x0], components[y1, x1]
        pred[i] = int(c0 > 0 and c0 == c1)
    return pred


def measure_stats(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    rows = []
    for variant in ("standard", "no_distractors"):
        images, labels, tips = make_images(variant, args.stat_images, args,
                                           args.seed + 1000, with_tips=True)
        distance = np.hypot(*(tips[:, 0] - tips[:, 1]).T)
        shortcut, threshold, direction = best_threshold_accuracy(distance, labels)
        oracle = connectivity_oracle(images, tips, args.oracle_threshold)
        rows.append({
            "variant": variant, "difficulty": args.difficulty, "images": len(labels),
            "label_mean": float(labels.mean()),
            "mean_distance_label0": float(distance[labels == 0].mean()),
            "mean_distance_label1": float(distance[labels == 1].mean()),
            "distance_shortcut_accuracy": shortcut,
            "distance_rule": f"label 1 iff distance {'<' if direction == 1 else '>='} "
                             f"{threshold:.2f} px",
            "oracle_accuracy": float((oracle == labels).mean()),
            "oracle_connected_label1": float(oracle[labels == 1].mean()),
            "oracle_connected_label0": float(oracle[labels == 0].mean()),
        })
        print(f"stats {variant}: balance {rows[-1]['label_mean']:.3f}, distance "
              f"shortcut {shortcut:.3f}, oracle {rows[-1]['oracle_accuracy']:.3f}",
              flush=True)
    return {"rows": rows, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- train
def model_config(model: str, args: argparse.Namespace) -> Any:
    from elm_jax import ELMConfig
    from elm_jax.modules.lstm import LSTMConfig
    from elm_jax.tasks.lra.presets import elm

    if model == "lstm":
        return LSTMConfig(num_input=LEVELS, num_output=2, hidden=args.lstm_hidden,
                          chrono_range=(1.0, 2000.0))
    options = elm(args.elm_memory, 1000.0, tau_s=args.elm_tau_s)
    options = {k: v for k, v in options.items() if not k.startswith("lstm")}
    return ELMConfig(num_input=LEVELS, num_output=2, **options)


def train_one(model: str, ids: tuple[np.ndarray, ...], args: argparse.Namespace
              ) -> dict[str, Any]:
    """Train one model on (train ids, train labels, val ids, val labels); ids are
    (n, 1024) int8 grey levels."""
    import jax
    import jax.numpy as jnp
    import optax

    from elm_jax.models import count_model_params, init_model, predict
    from elm_jax.tasks.run_config import TrainConfig
    from elm_jax.train.optim import make_optimizer

    x_train, y_train, x_val, y_val = ids
    config = model_config(model, args)
    lr = args.elm_lr if model == "elm" else args.lstm_lr
    params = init_model(jax.random.key(args.seed), config)
    # the trainer's optimizer (clipping, schedule, frozen leaves as in a training run)
    optimizer, _ = make_optimizer(
        TrainConfig(steps=args.steps, batch_size=args.batch, optimizer="adam",
                    learning_rate=lr, schedule="cosine", grad_clip=1.0), config, params)
    opt_state = optimizer.init(params)

    def logits(p, batch_ids):
        x = jax.nn.one_hot(batch_ids.astype(jnp.int32), LEVELS, dtype=jnp.float32)
        return predict(p, x, config, "last_step")

    def loss_fn(p, batch_ids, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, batch_ids),
                                                               labels).mean()

    @jax.jit
    def step(p, state, batch_ids, labels):
        value, grads = jax.value_and_grad(loss_fn)(p, batch_ids, labels)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    @jax.jit
    def correct(p, batch_ids, labels):
        return jnp.sum(jnp.argmax(logits(p, batch_ids), -1) == labels)

    def validate(p) -> float:
        hits = sum(int(correct(p, x_val[i:i + args.batch], y_val[i:i + args.batch]))
                   for i in range(0, len(x_val) - args.batch + 1, args.batch))
        return hits / (len(x_val) // args.batch * args.batch)

    rng = np.random.default_rng(args.seed)
    curve, losses = [], []
    start = time.perf_counter()
    for i in range(1, args.steps + 1):
        idx = rng.integers(0, len(x_train), args.batch)
        params, opt_state, value = step(params, opt_state, x_train[idx], y_train[idx])
        losses.append(float(value))
        if i % args.eval_every == 0 or i == args.steps:
            curve.append({"step": i, "train_loss": float(np.mean(losses[-args.eval_every:])),
                          "val_accuracy": validate(params),
                          "seconds": time.perf_counter() - start})
            print(f"  {model} step {i}: loss {curve[-1]['train_loss']:.4f}, val "
                  f"{curve[-1]['val_accuracy']:.3f} ({curve[-1]['seconds']:.0f} s)",
                  flush=True)
    return {"model": model, "num_params": count_model_params(config), "lr": lr,
            "curve": curve, "final_val_accuracy": curve[-1]["val_accuracy"],
            "best_val_accuracy": max(c["val_accuracy"] for c in curve),
            "seconds": time.perf_counter() - start}


def measure_train(args: argparse.Namespace) -> dict[str, Any]:
    from elm_jax.tasks.lra.pathfinder import quantize

    rows = []
    for variant in args.variants:
        images, labels, _ = make_images(variant, args.train_images + args.val_images,
                                        args, args.seed)
        ids = quantize(images, LEVELS).astype(np.int8)
        n = args.train_images
        split = (ids[:n], labels[:n], ids[n:], labels[n:])
        majority = max(float(labels[n:].mean()), 1.0 - float(labels[n:].mean()))
        print(f"train {variant}: {n} training / {args.val_images} validation images, "
              f"majority class {majority:.3f}", flush=True)
        for model in args.models:
            rows.append({"variant": variant, "val_majority": majority,
                         **train_one(model, split, args)})
    return {"rows": rows}


# ----------------------------------------------------------------------------- output
def run(args: argparse.Namespace) -> dict[str, Any]:
    info, record = common.start_record(NAME, args.command_str)
    md = [common.header_md("Pathfinder-32 learnability probe (GENERATED images)", info,
                           args.command_str)]
    if "stats" in args.parts:
        record["stats"] = measure_stats(args)
        md.append("\nImage statistics (marker centres from the generator's masks; "
                  "the distance rule fitted on one half, scored on the other):\n")
        md.append(common.md_table(record["stats"]["rows"], [
            ("variant", "variant"), ("difficulty", "difficulty"), ("images", "images"),
            ("label_mean", "label mean"), ("distance_shortcut_accuracy", "distance rule"),
            ("distance_rule", "rule"), ("oracle_accuracy", "connectivity oracle"),
            ("oracle_connected_label1", "connected (label 1)"),
            ("oracle_connected_label0", "connected (label 0)")]))
    if "train" in args.parts:
        record["train"] = measure_train(args)
        md.append(f"\nTraining from scratch: {args.steps} steps of batch {args.batch} "
                  f"on {args.train_images} images, validation on {args.val_images}:\n")
        md.append(common.md_table(record["train"]["rows"], [
            ("variant", "variant"), ("model", "model"), ("num_params", "params"),
            ("lr", "lr"), ("val_majority", "majority"),
            ("best_val_accuracy", "best val"), ("final_val_accuracy", "final val"),
            ("seconds", "s")]))
    common.write_outputs(args.out, NAME, record, "\n".join(md))
    return record


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", default=["stats", "train"],
                   choices=["stats", "train"])
    p.add_argument("--difficulty", default="easy", choices=["easy", "intermediate", "hard"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--stat-images", type=int, default=4000)
    p.add_argument("--oracle-threshold", type=int, default=30)
    p.add_argument("--train-images", type=int, default=32_000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--elm-memory", type=int, default=64)
    p.add_argument("--elm-tau-s", type=float, default=32.0)
    p.add_argument("--elm-lr", type=float, default=1e-3)
    p.add_argument("--lstm-hidden", type=int, default=64)
    p.add_argument("--lstm-lr", type=float, default=1e-3)
    p.add_argument("--dots-threshold", type=float, default=14.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)


def quick_overrides(args: argparse.Namespace) -> None:
    args.stat_images, args.train_images, args.val_images = 40, 64, 32
    args.steps, args.eval_every, args.batch = 4, 2, 8
    args.elm_memory, args.lstm_hidden, args.workers = 4, 4, 1
