"""The sampling flags that `generate`, `edit` and `vary` share, and their errors in the CLI's words.

The library, the server and a PNG's record name a setting by its API name (`negative_prompt`,
`lora_scale`); a CLI user typed a flag (`--negative`, `--lora-scale`). The library's errors lead
with the name of the argument they refuse (blinkgen.checks), so `flag_words` makes an error that
leads with the API name of a setting the user gave by flag lead with that flag instead, and
`check_family_flags` refuses, naming the flag, a setting the model's family does not have.

    given = given_settings(args)                 # {API name: flag} of the settings flags given
    kw = {api: getattr(args, dest(flag)) for api, flag in given.items()}
    apply_lora_flags(args, kw, given)            # --lora / --lora-scale (over a PNG's recorded ones)
    s = settings(pipe, args.steps, args.guidance, args.sampler, kw, given)
"""
from __future__ import annotations

import re
from contextlib import contextmanager

from .errors import UserInputError

# The settings flags of generate (edit and vary take the ones they have): API name -> flag.
SETTING_FLAGS = {"style": "--style", "guidance_interval": "--guidance-interval", "negative_prompt": "--negative",
                 "cache": "--cache", "truncation": "--truncation", "temperature": "--temperature"}
# The request flags of generate, by API name (vary's variation strength is its --strength).
REQUEST_FLAGS = {"variation_seed": "--variation-seed", "variation_strength": "--variation-strength"}
LORA_FLAGS = {"lora": "--lora", "lora_scale": "--lora-scale"}
NO_LORA = ("", "none")  # --lora none: no adapter (drops the one a replayed or varied PNG records)
LORA_HELP = ("a LoRA adapter fine-tuned from --model (`blinkgen finetune`; its folder or the run folder); "
             "'none' for none (dropping the adapter a replayed or varied PNG records)")


def dest(flag: str) -> str:
    """The argparse attribute of a flag: "--guidance-interval" -> "guidance_interval"."""
    return flag.lstrip("-").replace("-", "_")


def add_lora_flags(p) -> None:
    """--lora and --lora-scale, the same on every command that samples with an adapter."""
    p.add_argument("--lora", default=None, metavar="DIR", help=LORA_HELP)
    p.add_argument("--lora-scale", type=float, default=None, help="adapter strength in [-4, 4] (default 1); "
                   "without --lora: the strength of the adapter a replayed or varied PNG records")


def given_settings(args, flags: dict[str, str] = SETTING_FLAGS) -> dict[str, str]:
    """{API name: flag} of the settings flags in `flags` that the command line gave (not None;
    a flag this command does not have counts as not given)."""
    return {api: flag for api, flag in flags.items() if getattr(args, dest(flag), None) is not None}


def apply_lora_flags(args, kw: dict, given: dict[str, str]) -> None:
    """--lora and --lora-scale into the settings keywords `kw` (which may hold the lora and
    lora_scale a PNG records) and, when given, into `given`: --lora DIR draws with that adapter
    at --lora-scale (default 1); --lora none with no adapter; --lora-scale alone sets the strength
    of the adapter in `kw`. UserInputError (one line) for --lora-scale with no adapter."""
    lora, scale = getattr(args, "lora", None), getattr(args, "lora_scale", None)
    if lora is not None and lora.strip().lower() in NO_LORA:
        if scale is not None:
            raise UserInputError("--lora-scale needs an adapter, and --lora none draws without one")
        kw["lora"] = kw["lora_scale"] = None
        return
    if lora is not None:
        kw.update(lora=lora, lora_scale=scale)
        given["lora"] = LORA_FLAGS["lora"]
    elif scale is not None:
        if kw.get("lora") is None:
            raise UserInputError("--lora-scale needs --lora")
        kw["lora_scale"] = scale
    if scale is not None:
        given["lora_scale"] = LORA_FLAGS["lora_scale"]


def check_family_flags(pipe, given: dict[str, str]) -> None:
    """Refuse (UserInputError, one line naming the flag) a setting given by flag that the model's
    family has no field for, or does not support (Pipeline.settings' own refusal, in API names)."""
    from dataclasses import fields

    from .pipeline import Settings

    known = {f.name for f in fields(pipe.settings_type)}
    for api, flag in given.items():
        need = "lora" if api == "lora_scale" else api  # the scale comes with adapters
        if api not in known or (api in Settings.OPTIONAL and need not in pipe.supports):
            raise UserInputError(f"the {pipe.family} model {pipe.name!r} takes no {flag}")


@contextmanager
def flag_words(flags: dict[str, str]):
    """Re-raise a UserInputError whose message leads with one of the API names in `flags` (the
    library's errors lead with the argument they refuse) leading with its flag instead:
    "negative_prompt is 3000 characters; ..." -> "--negative is 3000 characters; ...". Only the
    settings the user gave by flag belong in `flags`: a value read from a PNG's record keeps its
    API name, which is what the record calls it."""
    try:
        yield
    except UserInputError as e:
        msg = str(e)
        for api, flag in flags.items():  # \b: "lora" does not lead "lora_scale ..."
            if re.match(re.escape(api) + r"\b", msg):
                e.args = (flag + msg[len(api):],)
                break
        raise


def settings(pipe, steps, guidance, sampler, kw: dict, given: dict[str, str]):
    """pipe.settings(steps, guidance, sampler, **kw) for a command whose flags gave the settings in
    `given` ({API name: flag}): one the model's family does not take is refused naming its flag
    (check_family_flags), and an error about one of them names its flag (flag_words)."""
    check_family_flags(pipe, given)
    with flag_words(given):
        return pipe.settings(steps, guidance, sampler, **kw)
