"""``fastload bench``: fastload against its peers on the same files, with the decode-only limit.

    fastload bench [PATH] [--quick | --full] [--out DIR]   # run; writes results.json, results.md, plots
    fastload bench --readme [--out DIR]                   # put the latest table into README.md

Without PATH the suite generates its data sets (photo-like, deterministic from
``--seed``; cached under ``$FASTLOAD_BENCH_CACHE`` or ``~/.cache/fastload-bench``):
ImageNet-like JPEGs, 64x64 JPEGs, PNGs and an image + JSON + CSV set. With PATH
it measures your class-per-subfolder image folder. fastload runs on the folder
and on its own packed shards of it (``fastload pack``, cached like FFCV's
.beton). Contenders whose packages
conflict with this environment (pillow-simd, FFCV, SPDL, Grain) run in virtual
environments built on first use and reused; ``--no-envs`` leaves them out.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_parser", "run"]


BENCH_HELP = """\
Benchmark fastload against its peers (torch DataLoader, WebDataset, FFCV, ...)
on the same files, with the decode-only limit of each task, and write
results.json, results.md and plots to --out. Without PATH it generates its data
sets (cached under $FASTLOAD_BENCH_CACHE or ~/.cache/fastload-bench). Contenders
whose packages conflict with this environment run in virtual environments
built on first use; --no-envs leaves them out.

examples:
  fastload bench                                  # generated data sets, under 3 minutes
  fastload bench ~/data/train --no-envs --contenders fastload,webdataset
  fastload bench --readme                         # put the latest table into README.md
"""


def add_parser(subparsers):
    """Register ``bench`` on an argparse subparsers object; ``args.func`` runs it."""
    from .suite import contenders
    names = ", ".join("torch-N" if c.name == "torch-2" else c.name for c in contenders(2))
    p = subparsers.add_parser("bench", help="benchmark fastload against its peers (plots and a table)",
                              description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="class-per-subfolder image directory (default: generated sets)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="under 3 minutes (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="under 20 minutes")
    p.set_defaults(mode="quick", func=run)
    p.add_argument("--out", default=os.path.join("benchmarks", "results"), help="output folder (%(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads/workers per contender (default: the cores this process may use)")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated subset of: {names} (default: all; torch-N: N the thread count)")
    p.add_argument("--no-envs", action="store_true", help="skip the contenders that need their own environment")
    p.add_argument("--rebuild-envs", action="store_true", help="rebuild those environments (or retry failed ones)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data sets")
    p.add_argument("--readme", nargs="?", const="README.md", metavar="FILE",
                   help="do not run: write the table and plot of --out's results into FILE's bench section")
    return p


def run(args) -> int:
    from ..cli import UsageError, image_folder
    if args.readme:
        results = os.path.join(args.out, "results.json")
        for need, hint in ((args.readme, ""), (results, f" (run 'fastload bench --out {args.out}' first)")):
            if not os.path.isfile(need):
                raise UsageError(f"{need}: no such file{hint}")
        from .report import update_readme
        try:
            update_readme(args.readme, args.out)
        except ValueError as e:   # markers out of order: said, nothing written
            raise UsageError(str(e)) from e
        print(f"updated {args.readme} from {results}")
        return 0
    from .suite import contenders, run_suite
    if args.threads is not None and args.threads < 1:   # 0 is no count of threads; all cores is the default
        raise UsageError("--threads must be at least 1")
    from ..pipeline.node import usable_cores
    threads = args.threads or usable_cores()   # a taskset or a container's cpuset, not the machine's count
    if args.contenders is not None and not args.contenders.strip(", "):   # an unset shell variable: not "all"
        raise UsageError("--contenders is empty; name at least one (or leave the option out for all)")
    only = [c.strip() for c in args.contenders.split(",")] if args.contenders is not None else None
    known = [c.name for c in contenders(threads)]   # the torch rows are named by the thread count
    unknown = [c for c in only or () if c not in known]
    if unknown:
        raise UsageError(f"--contenders: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    if args.path:
        image_folder(args.path)   # a missing, empty or flat folder: one line, before any work
    _writable_folder(args.out, f"--out {args.out}")   # found now, not after the run
    from .datasets import cache_dir
    _writable_folder(cache_dir(), f"cache {cache_dir()} (FASTLOAD_BENCH_CACHE)")
    from .report import can_plot
    plots = can_plot()
    if not plots:   # said before the run, not found after it
        print("fastload bench: matplotlib is not installed, so the results are written without plots "
              "(pip install fastload[bench])", file=sys.stderr)
    results = run_suite(args.path, mode=args.mode, out=args.out, threads=threads, only=only,
                        use_envs=not args.no_envs, seed=args.seed, rebuild_envs=args.rebuild_envs)
    print(f"wrote {', '.join(os.path.join(args.out, n) for n in ('results.json', 'results.md'))}"
          + (" and plots" if plots else ""))
    if not any(r.get("status") == "ok" for task in results["tasks"] for r in task["results"].values()):
        print("fastload bench: no contender measured anything (see the reasons above)", file=sys.stderr)
        return 1
    return 0


def _writable_folder(path: str, what: str) -> None:
    """Make the folder ``path`` if need be; a UsageError naming ``what`` when it cannot be one or is
    not writable."""
    from ..cli import UsageError
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what}: not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{what}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: the folder is not writable")
