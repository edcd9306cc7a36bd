"""`blinkgen data ...`: build and inspect datasets. Each handler parses, calls the library, and
prints one short result; errors are BlinkgenError subclasses that the CLI prints as one line."""
from __future__ import annotations

import argparse
from pathlib import Path

from blinkgen.data.registry import SHAPES_DEFAULT_N
from blinkgen.errors import UserInputError


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {n}")
        return n
    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def cmd_emoji(args: argparse.Namespace) -> None:
    from blinkgen.data.emoji import build_emoji, parse_styles

    out = build_emoji(args.out, styles=parse_styles(args.styles), cache_dir=args.cache_dir,
                      overwrite=args.overwrite)
    print(f"emoji dataset ready at {out}")


def cmd_shapes(args: argparse.Namespace) -> None:
    from blinkgen.data.folder import save_folder
    from blinkgen.data.shapes import make_shapes
    from blinkgen.outputs import check_new

    out = Path(args.out)
    if (out / "metadata.jsonl").exists() and not args.overwrite:
        raise UserInputError(f"{out} already holds a dataset; pass --overwrite to replace its metadata")
    # the images it would write (save_folder's names) must not replace someone else's files either
    check_new([out / f"shapes-{i:05d}.png" for i in range(args.n)], args.overwrite)
    ds = make_shapes(n=args.n, seed=args.seed, size=args.size)
    save_folder(ds, out, prefix="shapes-")
    print(f"wrote {len(ds)} shapes images ({args.size}x{args.size}) to {out}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from blinkgen.data.folder import load_folder

    ds = load_folder(args.dir, size=args.size, log_summary=False)  # the report is printed below, once
    n_caps = sum(len(c) for c in ds.captions)
    unique = len({c for caps in ds.captions for c in caps})
    print(ds.report.summary(max_names=args.max_names))
    print(f"captions: {n_caps} ({unique} unique, {n_caps / len(ds):.1f} per image)")
    for name, caps in list(zip(ds.names, ds.captions))[: args.examples]:
        print(f"  {name}: {caps[0]!r}" + (f" (+{len(caps) - 1} more)" if len(caps) > 1 else ""))
    if len(ds) > args.examples:
        print(f"  ... and {len(ds) - args.examples} more images (--examples N shows N)")


def register(subparsers) -> argparse.ArgumentParser:
    """Add `data` with its subcommands to the top-level CLI's subparsers; handlers go in
    `args.func`."""
    data = subparsers.add_parser("data", help="build and inspect training datasets")
    sub = data.add_subparsers(dest="data_command", metavar="{emoji,shapes,inspect}", required=True)

    p = sub.add_parser("emoji", help="build the emoji dataset (npm emoji-datasource packages)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--styles", default="google,twitter", help="comma-separated: google, twitter")
    p.add_argument("--cache-dir", default=None, help="npm tarball cache (default ~/.cache/blinkgen/npm)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier emoji build in --out that has other styles or versions")
    p.set_defaults(func=cmd_emoji)

    p = sub.add_parser("shapes", help="write a procedural shapes dataset as a folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("-n", type=_positive, default=SHAPES_DEFAULT_N,
                   help=f"number of images (default {SHAPES_DEFAULT_N}, as for --data shapes)")
    p.add_argument("--seed", type=_non_negative, default=0)
    p.add_argument("--size", type=int, choices=(32, 64, 128), default=64)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser("inspect", help="load a folder dataset and print what was kept and skipped")
    p.add_argument("dir")
    p.add_argument("--size", type=_positive, default=64)
    p.add_argument("--examples", type=_non_negative, default=5, help="images whose captions to show (default 5)")
    p.add_argument("--max-names", type=_non_negative, default=10,
                   help="file names to show per skip reason (default 10)")
    p.set_defaults(func=cmd_inspect)
    return data
