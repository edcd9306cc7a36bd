"""Command-line usage errors in the user's terms: an unknown option is reported by the subcommand
it was given to, with the closest option that subcommand has."""
from __future__ import annotations

import argparse
import difflib


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, but an unknown option is reported by the subcommand it was given to (its
    usage, not the top level's) with the closest option it has ("did you mean --lora?"), or with
    why it does not take that option where the subcommand says (its `option_notes` default:
    {option: reason}, as upscale's --lora). SystemExit(2) on any usage error, as argparse."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = next((a.choices.get(args.command) for a in parser._actions
                if isinstance(a, argparse._SubParsersAction)), None) or parser
    options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    notes = getattr(args, "option_notes", None) or {}
    hints = []
    for x in extra:
        if x.startswith("-"):
            opt = x.split("=")[0]
            close = difflib.get_close_matches(opt, options, n=1, cutoff=0.6)
            if opt in notes:
                hints.append(f"{opt}: {notes[opt]}")
            elif close:
                hints.append(f"{opt}: did you mean {close[0]}?")
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + (" (" + "; ".join(hints) + ")" if hints else ""))
