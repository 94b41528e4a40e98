"""Command line: ``python -m kdnb run|plan|site|claims|train|bench|clean``."""
from __future__ import annotations

import argparse
import shutil
import sys


def _add_executor_options(run: argparse.ArgumentParser) -> None:
    """``kdnb run --executor``: train the chapters' uncached runs as jobs first (:mod:`kdnb.jobs`)."""
    jobs = run.add_argument_group("jobs", "with --executor, the runs the chapters ask for and the cache lacks are "
                                  "trained first as independent jobs (submitit), then the chapters execute")
    jobs.add_argument("--executor", choices=("local", "slurm"), default=None,
                      help="local: processes on this machine; slurm: one SLURM job per run (default: none, every "
                      "run trains inside its chapter)")
    jobs.add_argument("--workers", type=int, default=None,
                      help="jobs at a time (default: local 1, slurm 64)")
    jobs.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    jobs.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (default 1; local: 0 on a CPU box)")
    jobs.add_argument("--time-min", type=int, default=24 * 60, help="time limit per job in minutes (default 1440); "
                      "a job that reaches it is requeued and resumes from its last epoch")
    jobs.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per SLURM job (default 8)")
    jobs.add_argument("--mem-gb", type=int, default=None, help="memory per SLURM job in GB (default: the partition's)")
    jobs.add_argument("--log-folder", default=None,
                      help="the jobs' logs (default: <run cache>/jobs); on SLURM, on a filesystem the nodes share, "
                      "like the run cache ($KDNB_RUNS)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdnb", description="Knowledge Distillation, Explained")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute chapters headless with papermill into _build/executed/")
    run.add_argument("chapters", nargs="*", help="chapter paths or name parts (default: all, in _toc.yml order)")
    run.add_argument("--profile", default=None, help="smoke | book | paper (default: $KDNB_PROFILE, else book)")
    _add_executor_options(run)
    plan = commands.add_parser("plan", help="every run the chapters will ask for: cached or not, estimated cost")
    plan.add_argument("chapters", nargs="*", help="chapter paths or name parts (default: all)")
    plan.add_argument("--profile", default=None, help="smoke | book | paper (default: $KDNB_PROFILE, else book)")
    plan.add_argument("--no-estimate", action="store_true", help="skip timing the models (no cost column)")
    site = commands.add_parser("site", help="build the Jupyter Book site from the executed chapters")
    site.add_argument("--profile", default=None, help="profile for chapters that were not executed yet")
    claims = commands.add_parser("claims", help="every executed chapter's claims and verdicts, as one table")
    claims.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                        help="text: a grid for the terminal (default); markdown: a pipe table; json: the data")
    bench = commands.add_parser("bench", help="performance ratios measured in one run (JSON)")
    bench.add_argument("names", nargs="*", help="which benches (default: all)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benches run")
    train = commands.add_parser("train", help="train (or load) cached runs; under torchrun, one run on several "
                                "processes (torchrun --nproc_per_node=N -m kdnb train SPEC)")
    train.add_argument("specs", nargs="+", help="a spec.json, a run folder or a run key, each trained in turn")
    train.add_argument("--device", default=None, help="cpu | cuda (default: $KDNB_DEVICE, else CUDA when present)")
    clean = commands.add_parser("clean", help="remove build outputs (and, with --runs, the run cache)")
    clean.add_argument("--runs", action="store_true", help="also delete runs/ (every trained model)")
    args = parser.parse_args(argv)

    if args.command in ("run", "site", "plan"):
        from . import notebooks, profiles

        try:
            profiles.get(args.profile)
        except ValueError as error:
            parser.error(str(error))
        if args.command == "plan":
            from . import plan as plan_module

            return plan_module.main(args.chapters, args.profile, estimate=not args.no_estimate)
        if args.command == "run" and args.executor is not None:
            from . import jobs

            options = jobs.JobOptions(partition=args.partition, gpus_per_job=args.gpus_per_job,
                                      time_min=args.time_min, cpus_per_task=args.cpus_per_task,
                                      mem_gb=args.mem_gb, log_folder=args.log_folder)
            workers = args.workers or (1 if args.executor == "local" else 64)
            return jobs.run(args.chapters, args.profile, args.executor, workers, options)
        if args.command == "run":
            return notebooks.run(args.chapters, args.profile)
        return notebooks.site(args.profile)
    if args.command == "claims":
        from . import book_pages

        return book_pages.print_claims(args.format)
    if args.command == "train":
        import os

        from . import distributed

        try:
            specs = [distributed.load_spec(given) for given in args.specs]
        except FileNotFoundError as error:
            parser.error(str(error))
        finished = distributed.train(specs, device=args.device)
        if os.environ.get("RANK", "0") == "0":  # one report, not one per process
            for run in finished:
                print(f"{run.path} {run.spec.label}: "
                      + " ".join(f"{k}={v:.4g}" for k, v in run.final.items() if isinstance(v, float)))
        return 0
    if args.command == "bench":
        from . import bench as bench_module

        bench_module.main(args.names, quick=args.quick)
        return 0
    from . import book_layout, runs

    shutil.rmtree(book_layout.ROOT / "_build", ignore_errors=True)
    if args.runs:
        shutil.rmtree(runs.runs_root(), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
