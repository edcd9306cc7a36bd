"""`blinkgen eval`, `blinkgen caption`, `blinkgen bench`: thin -- parse, call the library, print."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from ..errors import UserInputError

REPO_BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"
# `blinkgen bench <name> ...` runs bench/bench_<name>.py; no name = the diffusion ladder
BENCHES = ("diffusion", "families", "ar", "tokenizer")


def cmd_eval(args) -> None:
    from ..api import load
    from .evaluate import evaluate

    from ..cli_flags import LORA_FLAGS, flag_words

    model = args.model
    if args.lora is not None:
        with flag_words(LORA_FLAGS):  # the CLI's flags, not the API's names, in its errors
            model = load(args.model).with_lora(args.lora, args.lora_scale)
    elif args.lora_scale is not None:
        raise UserInputError("--lora-scale needs --lora")
    captioner = None if args.captioner == "none" else args.captioner
    r = evaluate(model, args.data, samples=args.samples, out_dir=args.out, seed=args.seed,
                 steps=args.steps, guidance=args.guidance, sampler=args.sampler, prompts=args.prompts,
                 evaluator=args.evaluator, nn_reference=args.nn_data, style=args.style,
                 overwrite=args.overwrite, captioner=captioner)
    m = r["metrics"]
    summary = {k: m[k] for k in ("fd", "kid", "precision", "recall", "alignment", "retrieval_R@1") if k in m}
    if "shapes" in m:
        summary["shapes_overall"] = m["shapes"]["overall"]
    if "nn" in m:
        summary["nn_hits"] = f"{m['nn']['hits']}/{m['nn']['n']}"
    if "exact" in m.get("caption", {}):
        summary["caption_exact"] = m["caption"]["exact"]
    print(json.dumps(summary))
    print(Path(args.out) / "report.md")


def cmd_caption(args) -> None:
    if args.generate:
        from .captioner import load_captioner

        if args.candidates is not None:
            raise UserInputError("--generate writes a caption; --candidates ranks given ones: choose one")
        print(load_captioner(args.captioner, args.evaluator).write([args.image], beams=args.beams)[0])
        return
    from .caption import caption

    for text, score in caption(args.image, candidates=args.candidates, top_k=args.top_k, evaluator=args.evaluator):
        print(f"{score:.3f}  {text}")


def _model_family(argv: list[str]) -> str | None:
    if "--model" not in argv or argv.index("--model") + 1 >= len(argv):
        return None
    cfg = Path(argv[argv.index("--model") + 1]) / "config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8-sig")).get("family") if cfg.is_file() else None
    except (OSError, ValueError):
        return None


def cmd_bench(args) -> None:
    argv = list(args.bench_args)
    name = argv.pop(0) if argv and argv[0] in BENCHES else "diffusion"
    script = REPO_BENCH_DIR / f"bench_{name}.py"
    if not script.is_file():
        raise UserInputError(f"blinkgen bench runs from a source checkout ({script} not found)")
    if name == "diffusion" and _model_family(argv) == "ar":
        m = argv[argv.index("--model") + 1]
        raise UserInputError(f"{m} is an ar-family model: use `blinkgen bench ar --model {m} ...` (decode speed) "
                             f"or `blinkgen bench families --ar {m} ...` (speed + quality beside diffusion)")
    spec = importlib.util.spec_from_file_location(f"blinkgen_bench_{name}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if name == "diffusion":
        mod.main(argv, prog="blinkgen bench")
    else:
        mod.main(argv)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return n


def register(sub) -> None:
    from ..families import sampler_help

    p = sub.add_parser("eval", help="generate from held-out prompts and score quality (FD, KID, P/R, alignment, shapes)")
    p.add_argument("--model", default="default", help="embedded model name or model folder")
    p.add_argument("--data", required=True, help="dataset spec whose held-out images are the reference")
    p.add_argument("--samples", type=_positive, default=128)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sampler", default=None, help=sampler_help())
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", default=None, help="prompt file (default: the held-out captions)")
    p.add_argument("--evaluator", default=None, help="contrastive evaluator folder (default: shipped)")
    p.add_argument("--style", default=None, help="diffusion: style phrase (default: the model's; 'none' for none)")
    p.add_argument("--nn-data", default=None, help="emoji training folder: add the nearest-neighbour "
                   "recognisability check (own emoji among the 5 nearest of all its images, 32px)")
    p.add_argument("--lora", default=None, metavar="DIR", help="evaluate with this LoRA adapter of --model")
    p.add_argument("--lora-scale", type=float, default=None, help="adapter strength (default 1)")
    p.add_argument("--captioner", default="shipped", help="captioner folder for the caption-vs-prompt check, "
                   "'shipped' (default) or 'none'")
    p.add_argument("--out", required=True, help="folder for metrics.json, report.md, grid.png, prompts.txt")
    p.add_argument("--overwrite", action="store_true", help="replace those files if --out holds them (else refused)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("caption", help="rank candidate captions for an image with the contrastive evaluator")
    p.add_argument("image")
    p.add_argument("--candidates", default=None, help="text file, one caption per line (default: shipped)")
    p.add_argument("--top-k", type=_positive, default=5)
    p.add_argument("--evaluator", default=None)
    p.add_argument("--generate", action="store_true", help="write a new caption with the generative captioner "
                   "instead of ranking candidates")
    p.add_argument("--captioner", default=None, help="captioner folder for --generate (default: shipped)")
    p.add_argument("--beams", type=_positive, default=None, help="--generate: beam width (1 = greedy; default 3)")
    p.set_defaults(func=cmd_caption)

    # every argument goes to bench/bench_<name>.py (its own --help); prefix_chars="+" stops this
    # subparser from reading "--model" etc. as its own options
    p = sub.add_parser("bench", help="benchmarks from a source checkout: [diffusion] (the speed + quality ladder), "
                       "families, ar, tokenizer -- each bench/bench_<name>.py with its own -h",
                       add_help=False, prefix_chars="+")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)
