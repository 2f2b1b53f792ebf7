"""``elm-jax train | eval | tasks`` (registered by `elm_jax.cli` through `register`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _cmd_tasks(args: argparse.Namespace) -> int:
    from ..tasks import list_tasks

    for task in list_tasks():
        print(f"{task.name}: {task.description} [head {task.head}, loss "
              f"{task.loss if isinstance(task.loss, str) else task.loss.__name__}, "
              f"default preset {task.default_preset}]")
        for name, preset in task.presets.items():
            print(f"  {task.name} --preset {name}: {preset.description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    given = [f"--{name.replace('_', '-')}" for name in
             ("coordinator_address", "num_processes", "process_id")
             if getattr(args, name) is not None]
    if given and not args.distributed:
        raise ValueError(f"{', '.join(given)} need(s) --distributed")
    if args.distributed and args.num_processes is not None and args.process_id is not None \
            and not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id {args.process_id} must be in [0, --num-processes "
                         f"{args.num_processes})")
    if args.distributed:
        import jax

        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)
    from .summary import summary_table
    from .trainer import (
        EXIT_DIVERGED,
        EXIT_INTERRUPTED,
        Trainer,
        json_dumps,
        resolve_run,
    )

    task, run = resolve_run(args.task, args.preset, args.set or [])
    trainer = Trainer(task, run, args.workdir, resume=args.resume,
                      progress=not args.no_progress, stop_after_steps=args.stop_after_steps,
                      command=["elm-jax", *sys.argv[1:]])
    report = trainer.fit()
    print(json_dumps(report) if args.json else summary_table(report))
    return {"completed": 0, "diverged": EXIT_DIVERGED}.get(report["status"], EXIT_INTERRUPTED)


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..checkpoints.model_dir import load_model
    from ..fileio import atomic_write_text, strict_json
    from .trainer import evaluate_params, read_run, resolve_run

    if bool(args.workdir) == bool(args.checkpoint):
        raise ValueError("give exactly one of --workdir (a training run) or --checkpoint "
                         "(a model directory)")
    meta: dict = {}
    if args.workdir:
        task, run, _ = read_run(args.workdir)
        model_dir = Path(args.workdir) / f"{args.which}_model"
        if not model_dir.exists():
            raise FileNotFoundError(f"{model_dir} does not exist (the run has not produced "
                                    f"its {args.which} model yet)")
        source = str(model_dir)
    else:
        model_dir = Path(args.checkpoint)
        meta_path = model_dir / "config.json"
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path} is not valid JSON: {err}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
        if "run" in meta:
            from ..tasks import get_task
            from ..tasks.run_config import run_config_from_dict

            task = get_task(meta["run"]["task_name"])
            run = run_config_from_dict(meta["run"], task.config_cls)
        elif args.task:
            task, run = resolve_run(args.task, args.preset, [*(args.set or []), *(
                [f"task.data_dir={args.data_dir}"] if args.data_dir else [])])
        else:
            raise ValueError(f"{model_dir} does not record its task; pass --task NAME "
                             f"[--preset NAME] [--set ...]")
        source = str(model_dir)
    if args.data_dir:
        if "data_dir" not in {f.name for f in dataclasses.fields(run.task)}:
            raise ValueError(f"--data-dir: task {run.task_name!r} has no data_dir option")
        run = dataclasses.replace(run, task=dataclasses.replace(run.task, data_dir=args.data_dir))
    if args.workdir or "run" in meta:
        config, params = load_model(model_dir, run.model)
    else:
        # a model directory from `elm-jax convert` (or elsewhere): its own config wins
        config, params = load_model(model_dir)
        if (config.num_input, config.num_output) != (run.model.num_input, run.model.num_output):
            raise ValueError(f"{model_dir} has num_input={config.num_input}, num_output="
                             f"{config.num_output}; task {run.task_name!r} needs "
                             f"{run.model.num_input} and {run.model.num_output}")
        run = dataclasses.replace(run, model=config)
    metrics = evaluate_params(task, run, params, args.split)
    result = {"source": source, "task": run.task_name, "preset": run.preset,
              "split": args.split, "metrics": metrics}
    if task.final_evaluation is not None:
        # the task's own (e.g. published) evaluation; its metrics go to the top level
        # plots go to --plots, else beside the --out report
        plots = args.plots or (str(Path(args.output).parent) if args.output else None)
        published = task.final_evaluation(run.task, run.model, params, out_dir=plots,
                                          split=args.split,
                                          apply_kwargs=run.options.apply_kwargs())
        result = {**published, **result}
    text = strict_json(result, indent=1, default=float)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    print(text)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an ELM on a registered task",
                              description="Train an ELM on a task (elm-jax tasks lists them).")
    p.add_argument("--task", required=True, help="task name (see `elm-jax tasks`)")
    p.add_argument("--preset", help="preset of the task (default: the task's default)")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override a setting, e.g. train.learning_rate=1e-3 "
                        "model.num_memory=50 task.seq_len=2000 (repeatable)")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs, report)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --workdir from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true",
                   help="print the full report JSON (as in WORKDIR/report.json) instead of "
                        "the summary table")
    p.add_argument("--stop-after-steps", type=int, default=None,
                   help="stop as if interrupted after this many steps (testing)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host runs; "
                        "auto-detected on Cloud TPU, SLURM, Open MPI, ...)")
    p.add_argument("--coordinator-address", help="with --distributed: HOST:PORT of process 0")
    p.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
    p.add_argument("--process-id", type=int, help="with --distributed: this process's index")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="evaluate a trained model on its task's data")
    p.add_argument("--workdir", help="run directory of `elm-jax train`")
    p.add_argument("--checkpoint", help="model directory (best_model/, final_model/, convert)")
    p.add_argument("--which", choices=("best", "final"), default="best",
                   help="with --workdir: the best (by validation) or the final model")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--task", help="task of a --checkpoint that does not record one")
    p.add_argument("--preset", help="with --task: the preset")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="with --task: overrides")
    p.add_argument("--output", "--out", help="also write the JSON result to this file")
    p.add_argument("--data-dir", help="the task's data (sets task.data_dir), e.g. NeuronIO files")
    p.add_argument("--plots", help="folder for the plots of the task's evaluation (NeuronIO, "
                        "spoken digits; default: the folder of --out)")
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("tasks", help="list the registered tasks and their presets")
    p.set_defaults(func=_cmd_tasks)
