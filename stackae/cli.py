"""The `stackae` command line: thin click commands that parse flags, call the API (api.py) with
the settings they name, and print the outcome.

Options are generated from the config dataclasses (options.py), so defaults and help live in one
place. Settings flow one way: defaults -> --config FILE -> explicit flags. torch is imported
inside the commands, so `stackae --help` is instant.
"""
from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .config import FinetuneConfig, PretrainConfig
from .config_grid import AblateConfig
from .interrupt import deferred_interrupts
from .options import (common_run_options, config_option, friendly_errors, given, options_from,
                      out_default, preset_option, shard_param)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stackae")
def cli():
    """Greedy layer-wise autoencoder pretraining, measured against random init.

    pretrain a stack, finetune it (or the same network from random init), ablate over seeds and
    label budgets (or tune every arm on the same budget first), and report the comparison with
    its uncertainty.
    """


@cli.command(epilog="""\b
Examples:
  stackae pretrain --out runs/pretrain/demo
  stackae pretrain --layers 500,500 --objective rbm,denoising --epochs 5 --out runs/pretrain/mix
  stackae pretrain --train-size 5000 --epochs 2 --quiet --out runs/pretrain/quick
  stackae pretrain --out runs/pretrain/demo --resume     # after an interruption
""")
@config_option(PretrainConfig)
@options_from(PretrainConfig)
@common_run_options
@click.pass_context
@friendly_errors
def pretrain(ctx, out, resume, quiet, **kwargs):
    """Train a stack of autoencoders one layer at a time, freezing each."""
    from .api import pretrain_stack
    from .train import Diverged
    out = out_default("pretrain", out, resume)
    try:
        with deferred_interrupts():
            stack = pretrain_stack(out=out, resume=resume, quiet=quiet, **given(ctx, kwargs))
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; finished layers are kept in {out}. Continue "
                                   f"with: {again('pretrain', out)}")
    except Diverged as e:
        raise click.ClickException(f"{e}{after_divergence(out)}")
    summary = stack.summary
    for m in summary["layers"]:
        click.echo(f"layer {m['layer']} ({m['objective']}, {m['width']} units): val recon loss "
                   f"{m['val_recon_loss']:.4f}")
    if summary["unrolled"]:
        u = summary["unrolled"]
        # a summary written before the best epoch was kept has none: its loss is the last epoch's
        kept = (f" (epoch {u['best_epoch']} of {u['epochs']}, the lowest; kept)"
                if "best_epoch" in u else "")
        click.echo(f"unrolled deep autoencoder: val recon loss {u['val_recon_loss']:.4f}{kept}")
    click.echo(f"stack: {summary['stack']}  ({summary['seconds']:.1f}s)")


def again(command: str, out: Path, *extra: str) -> str:
    """The shell command that continues a run (quoted, so a path with spaces survives)."""
    return shlex.join(["stackae", command, "--out", str(out), "--resume", *extra])


def after_divergence(out: Path) -> str:
    """The resume that retries the diverged layer with a tenth of its learning rate."""
    from .resolve import saved_config
    from .checks import finished_count
    cfg = saved_config(PretrainConfig, out)
    n = len(cfg.layers)
    k = finished_count(out, n)
    if k >= n:
        return ""
    lrs = [cfg.per_layer("lr", j) for j in range(n)]
    lrs[k] /= 10
    return f". Continue with: {again('pretrain', out, '--lr', ','.join(f'{v:g}' for v in lrs))}"


@cli.command(epilog="""\b
Examples:
  stackae finetune --init runs/pretrain/demo/stack.pt --out runs/finetune/demo-pre
  stackae finetune --init random --like runs/pretrain/demo/stack.pt --out runs/finetune/demo-rand
  stackae finetune --init random --layers 1000,1000,500 --init-scheme xavier --labels 1000
  stackae finetune --init runs/pretrain/demo/stack.pt --freeze-encoder --out runs/finetune/probe
""")
@config_option(FinetuneConfig)
@options_from(FinetuneConfig)
@common_run_options
@click.pass_context
@friendly_errors
def finetune(ctx, out, resume, quiet, **kwargs):
    """Fine-tune a classifier from a pretrained stack or from random init."""
    from .api import finetune_classifier
    out = out_default("finetune", out, resume)
    try:
        with deferred_interrupts():
            run = finetune_classifier(out=out, resume=resume, quiet=quiet,
                                      **given(ctx, kwargs))
    except KeyboardInterrupt:
        from .checkpoint import resume_epoch
        epoch = resume_epoch(out)
        where = f"after epoch {epoch}, its resume point" if epoch else "from its start"
        raise click.ClickException(f"interrupted; continue ({where}) with: "
                                   f"{again('finetune', out)}")
    result = run.result
    error = (f"test error {100 * result['test_error']:.2f}%" if result["test_error"] is not None
             else f"validation error {100 * result['best_val_error']:.2f}% (test not read)")
    click.echo(f"{error} at best validation epoch {result['best_epoch']} ({result['init']}, "
               f"{result['labels']} labels, {result['seconds']:.1f}s)")
    click.echo(f"result: {out / 'result.json'}")


@cli.command(epilog="""\b
Examples:
  stackae ablate                                   # denoising vs xavier, ~5 min on 2 CPU cores
  stackae ablate --inits denoising,rbm,random,xavier --seeds 0,1,2,3,4,5 --labels 100,all
  stackae ablate --preset full --out runs/ablate/full --dry-run
  stackae ablate --preset full --out runs/ablate/full --shard 2/4   # one of 4 machines
  stackae ablate --preset full --out runs/ablate/full --executor slurm --slurm-partition gpu
  stackae ablate --out runs/ablate/demo --resume   # after an interruption
""")
@config_option(AblateConfig)
@preset_option
@options_from(AblateConfig)
@common_run_options
@click.option("--dry-run", is_flag=True, help="Print the plan (cells, pretraining runs, estimated "
              "work) and run nothing.")
@click.option("--shard", callback=shard_param, metavar="I/N", help="Run only slice I of N of the "
              "grid (deterministic; shards partition it). Shards share --out and may run at once.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local",
              show_default=True, help="local runs the cells here; slurm submits them as a job "
                                      "array through submitit (pip install 'stackae[slurm]').")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="SLURM jobs (chunks of cells) [default: one per seed and depth].")
@click.option("--slurm-partition", default=None, help="SLURM partition.")
@click.option("--slurm-time", type=click.IntRange(min=1), default=120, show_default=True,
              help="Time limit of each SLURM job, in minutes.")
@click.option("--slurm-gpus", type=click.IntRange(min=0), default=1, show_default=True,
              help="GPUs per SLURM job.")
@click.option("--slurm-cpus", type=click.IntRange(min=1), default=4, show_default=True,
              help="CPUs per SLURM job.")
@click.option("--wait", is_flag=True, help="With --executor slurm: wait for the jobs, then write "
                                           "the report.")
@click.pass_context
@friendly_errors
def ablate(ctx, out, resume, quiet, preset, dry_run, shard, executor, jobs, slurm_partition,
           slurm_time, slurm_gpus, slurm_cpus, wait, **kwargs):
    """Compare initializations over seeds and label budgets, paired by seed, then report."""
    from . import api
    out = out_default("ablate", out, resume)
    settings = given(ctx, kwargs)
    if dry_run:
        click.echo("\n".join(api.plan_ablation(out=out, resume=resume, shard=shard, **settings)))
        return
    if executor == "slurm":
        if importlib.util.find_spec("submitit") is None:
            raise click.BadParameter("slurm needs submitit, which is not installed: "
                                     "pip install 'stackae[slurm]'", param_hint="'--executor'")
        from .slurm import submit_grid
        grid = submit_grid(settings, out, resume, shard, quiet, jobs, partition=slurm_partition,
                           time_min=slurm_time, gpus=slurm_gpus, cpus=slurm_cpus, wait=wait,
                           say=click.echo)
        if grid is not None:
            finished_or_waiting(grid)
        return
    try:
        with deferred_interrupts():
            grid = api.run_ablation(out=out, resume=resume, shard=shard, quiet=quiet, **settings)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; finished cells are kept in {out}. "
                                   f"Continue with: {again('ablate', out)}")
    finished_or_waiting(grid)


@cli.command(epilog="""\b
Examples:
  stackae tune --trials 20 --out runs/tune/demo      # the fine-tuning lr, every arm and budget
  stackae tune --space '{"finetune_lr": {"low": 0.01, "high": 1, "log": true}, "dropout": [0, 0.2, 0.5]}'
  stackae tune --preset full --space space.json --tune-seeds 0,1,2 --out runs/tune/full
  stackae tune --space '{"finetune_lr": [0.03, 0.1, 0.3], "pretrain_epochs": [5, 15], "noise": [0.1, 0.3]}'
  stackae tune --preset full --space space.json --out runs/tune/full --dry-run
  stackae tune --out runs/tune/demo --resume          # after an interruption
""")
@config_option(AblateConfig)
@preset_option
@options_from(AblateConfig)
@common_run_options
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Trials per arm and label budget, the same for every arm [default: 20].")
@click.option("--space", metavar="JSON|FILE", default=None,
              help="Search space: fine-tuning settings and, for pretrained arms, pretraining "
                   "ones (tuned at the largest label budget, each trial pretraining its own "
                   "stacks), each a range {\"low\": a, \"high\": b} (\"log\": true, \"step\": s "
                   "optional) or a list of values, or one of those per arm ({\"rbm\": ..., "
                   "\"xavier\": ...}) [default: finetune_lr from a tenth to ten times "
                   "--finetune-lr, log scale].")
@click.option("--tune-seeds", default=None, metavar="INT,...",
              help="Seeds each trial fine-tunes, judged on their mean validation error "
                   "[default: the first two of --seeds].")
@click.option("--trials-at-once", type=click.IntRange(min=1), default=None,
              help="Trials of each arm proposed together (from the trials of earlier rounds) "
                   "and trained at once, as one K-network loop where their settings allow "
                   "[default: 1 on a CPU, 5 on a GPU].")
@click.option("--prune-after", type=click.IntRange(min=0), default=None, metavar="EPOCH",
              help="From this epoch on, stop a trial's network whose best validation error is "
                   "worse than the median of its arm's finished trials at the same epoch "
                   "(Optuna's MedianPruner, once 5 have finished; under a cosine schedule, "
                   "trials of as many epochs); the trial scores the best it reached. 0: no "
                   "pruning [default: 0].")
@click.option("--dry-run", is_flag=True, help="Print the plan (trials, their fine-tunes and "
              "pretraining runs, the final cells, estimated work, progress) and run nothing.")
@click.pass_context
@friendly_errors
def tune(ctx, out, resume, quiet, preset, trials, space, tune_seeds, trials_at_once, prune_after,
         dry_run, **kwargs):
    """Tune every arm on the same budget (validation error only), then compare the choices.

    For each arm and label budget, --trials settings from --space (the first 10 a scrambled
    Sobol sequence, the same points for every arm; then Optuna's TPE) fine-tune the tuning seeds
    without reading the test set; the best of each then runs over every seed and budget as a
    paired ablation, whose report states the space, the budget and each choice.
    Pretraining settings in --space are tuned at the largest budget (random-init arms draw the
    fine-tuning settings only); a pretrained arm's choice there is its pretraining at every
    budget. Without them the stacks are pretrained once and shared by every trial.
    """
    from . import api
    if importlib.util.find_spec("optuna") is None:
        raise click.ClickException("stackae tune needs optuna, which is not installed: "
                                   "pip install 'stackae[tune]'")
    seeds = None
    if tune_seeds is not None:
        from .schema import coerce
        seeds = coerce("tune_seeds", tuple[int, ...], tune_seeds)
    out = out_default("tune", out, resume)
    args = dict(out=out, resume=resume, trials=trials, space=space, tune_seeds=seeds,
                trials_at_once=trials_at_once, prune_after=prune_after, **given(ctx, kwargs))
    if dry_run:
        click.echo("\n".join(api.plan_tuning(**args)))
        return
    try:
        with deferred_interrupts():
            grid = api.run_tuning(quiet=quiet, **args)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; finished trials and cells are kept in {out}. "
                                   f"Continue with: {again('tune', out)}")
    finished_or_waiting(grid)


def finished_or_waiting(grid) -> None:
    """The report's summary, or how many cells other shards still have to finish."""
    if not grid.finished:
        done, total = len(grid.records), len(grid.cells)
        click.echo(f"{done} of {total} cells finished; when the other shards finish: "
                   f"stackae report {grid.folder}")
        return
    echo_report(grid.folder, grid.report)


def echo_report(folder: Path, rep: dict | None = None) -> None:
    """The report's summary on stdout (writing the report first unless `rep` is given)."""
    from .artifacts import load_ablation
    from .report_text import summary
    rep = rep or load_ablation(folder).write_report()
    for line in summary(rep):
        click.echo(line)
    click.echo(f"report: {folder / 'REPORT.md'}")


@cli.command(epilog="""\b
Examples:
  stackae report runs/ablate/demo
  stackae report runs/ablate/full     # after every shard or SLURM job has finished
  stackae report runs/tune/demo       # a tuning still running: its trials so far
""")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@friendly_errors
def report(folder):
    """Write REPORT.md, report.json, results.csv and figures/ for an ablation folder.

    Reads only the folder's run folders and results.jsonl: mean ± std and 95% CI of test error per
    condition; per label budget, the paired difference to random init with its CI, a paired t-test
    and a Wilcoxon signed-rank test, Holm-corrected across budgets. For a `stackae tune` folder
    whose final cells have not run, REPORT.md shows the trials so far and each arm's best (no test
    error is read); the full report replaces it once the cells have run.
    """
    echo_report(folder)

def main():
    """Entry point: usage errors print one line and exit 2; runtime failures one line, exit 1."""
    try:
        rv = cli.main(prog_name="stackae", standalone_mode=False)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "stackae"
        click.echo(f"Error: {e.format_message()}  (see '{cmd} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
