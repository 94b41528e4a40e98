"""Command line: ``python -m kdnb run|site|claims|bench|clean``."""
from __future__ import annotations

import argparse
import shutil
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdnb", description="Knowledge Distillation, Explained")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute chapters headless with papermill into _build/executed/")
    run.add_argument("chapters", nargs="*", help="chapter paths or name parts (default: all, in _toc.yml order)")
    run.add_argument("--profile", default=None, help="smoke | book | paper (default: $KDNB_PROFILE, else book)")
    site = commands.add_parser("site", help="build the Jupyter Book site from the executed chapters")
    site.add_argument("--profile", default=None, help="profile for chapters that were not executed yet")
    claims = commands.add_parser("claims", help="every executed chapter's claims and verdicts, as one table")
    claims.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                        help="text: a grid for the terminal (default); markdown: a pipe table; json: the data")
    bench = commands.add_parser("bench", help="performance ratios measured in one run (JSON)")
    bench.add_argument("names", nargs="*", help="which benches (default: all)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benches run")
    clean = commands.add_parser("clean", help="remove build outputs (and, with --runs, the run cache)")
    clean.add_argument("--runs", action="store_true", help="also delete runs/ (every trained model)")
    args = parser.parse_args(argv)

    if args.command in ("run", "site"):
        from . import notebooks, profiles

        try:
            profiles.get(args.profile)
        except ValueError as error:
            parser.error(str(error))
        if args.command == "run":
            return notebooks.run(args.chapters, args.profile)
        return notebooks.site(args.profile)
    if args.command == "claims":
        from . import book_pages

        return book_pages.print_claims(args.format)
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
