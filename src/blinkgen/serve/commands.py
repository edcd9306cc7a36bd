"""`blinkgen serve`: load models once, then run the API under uvicorn.

Thin on purpose: parse flags into a ServeConfig, load generators, hand both to `create_app`.
Shutdown (SIGINT/SIGTERM) first tells the batcher to stop admitting and to drain for
--shutdown-grace-s, so waiting requests and event streams end with a final state instead of being
cut; uvicorn then closes the connections and the app's lifespan joins the worker.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="serve an OpenAI-compatible images API and a web page",
                              description="Serve models over HTTP: /v1/images/generations, /v1/jobs, "
                                          "/v1/models, /health, /ready, /metrics and a web page at /.")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=None, metavar="M",
                   help="embedded model name or model folder; repeat to serve several (default: default)")
    p.add_argument("--lora", action="append", default=None, metavar="DIR",
                   help="a LoRA adapter (blinkgen finetune) of one of the served models; served as the model "
                        "'<model>+<adapter folder name>' beside it; repeat for several")
    p.add_argument("--lora-scale", type=float, default=None, help="strength of the --lora adapters (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--api-key-file", default=None, metavar="F",
                   help="file with one API key per line; keys in $BLINKGEN_API_KEYS are added")
    p.add_argument("--max-batch", type=_positive(int), default=16, help="most images per model call")
    p.add_argument("--batch-window-ms", type=_nonneg(float), default=0.0,
                   help="how long a request waits for batch-mates when the worker is idle (default 0: "
                        "a batch starts at once and requests arriving meanwhile form the next one)")
    p.add_argument("--max-queue", type=_positive(int), default=256,
                   help="most images waiting; more gets 429 with Retry-After")
    p.add_argument("--timeout-s", type=_positive(float), default=300.0, help="per request, queue time included")
    p.add_argument("--max-steps", type=_positive(int), default=None, help="cap on steps below the model's own")
    p.add_argument("--max-prompt-chars", type=_positive(int), default=1000)
    p.add_argument("--max-body-bytes", type=_positive(int), default=64 * 1024)
    p.add_argument("--max-upload-bytes", type=_positive(int), default=4 * 2**20,
                   help="largest image (or mask) file for edits and variations")
    p.add_argument("--max-upload-side", type=_positive(int), default=1024,
                   help="largest side in pixels of an uploaded image (it is resampled to the model's size)")
    p.add_argument("--url-ttl-s", type=_positive(float), default=3600.0,
                   help="lifetime of response_format=url links and of finished jobs")
    p.add_argument("--keep-jobs", type=_positive(int), default=2000,
                   help="most finished jobs kept for polling; the oldest are forgotten first")
    p.add_argument("--keep-images", type=_positive(int), default=4096,
                   help="most LINKED images kept (response_format=url answers and /v1/jobs images; b64_json "
                        "answers take no place): past it the oldest link goes before its --url-ttl-s; "
                        "separately, most images in kept finished jobs")
    p.add_argument("--keep-mb", type=_positive(float), default=512.0,
                   help="most PNG megabytes of linked images kept (and, separately, in kept finished jobs)")
    p.add_argument("--shutdown-grace-s", type=_nonneg(float), default=30.0,
                   help="on shutdown, time to finish queued work before failing it")
    p.add_argument("--no-warmup", action="store_true", help="report ready without a warm-up call")
    p.add_argument("--admin-key-file", default=None, metavar="F",
                   help="admin keys, one per line (and $BLINKGEN_ADMIN_KEYS): they may load and unload models "
                        "while serving (POST /v1/models/load, DELETE /v1/models/{id}); without any, both are off")
    p.add_argument("--webhook-secret-file", default=None, metavar="F",
                   help="HMAC-SHA256 key (first line, >= 16 characters) that signs job webhooks; without it "
                        "jobs cannot ask for a webhook_url")
    p.add_argument("--webhook-host", action="append", default=None, metavar="HOST",
                   help="a host webhooks may call besides loopback addresses (repeatable)")
    p.add_argument("--log-level", default="info")


def _positive(kind):
    def conv(s):
        v = kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    return conv


def _nonneg(kind):
    def conv(s):
        v = kind(s)
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
        return v
    return conv


def config_from_args(args):
    from .app import ServeConfig
    from .limits import load_api_keys
    from .schemas import Limits

    return ServeConfig(
        max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, max_queue=args.max_queue,
        timeout_s=args.timeout_s, url_ttl_s=args.url_ttl_s, max_body_bytes=args.max_body_bytes,
        max_upload_bytes=args.max_upload_bytes, max_upload_side=args.max_upload_side,
        keep_jobs=args.keep_jobs, keep_images=args.keep_images, keep_mb=args.keep_mb,
        shutdown_grace_s=args.shutdown_grace_s, api_keys=load_api_keys(args.api_key_file),
        limits=Limits(max_prompt_chars=args.max_prompt_chars, max_steps=args.max_steps),
        warmup=not args.no_warmup, **_everyday_config(args))


def _everyday_config(args) -> dict:
    """The admin, webhook and device fields of ServeConfig (issue 16)."""
    from .admin import load_admin_keys
    from .webhooks import load_secret

    return {"admin_keys": load_admin_keys(getattr(args, "admin_key_file", None)),
            "webhook_secret": load_secret(args.webhook_secret_file) if getattr(args, "webhook_secret_file", None) else None,
            "webhook_hosts": frozenset(h.lower() for h in (getattr(args, "webhook_host", None) or ())),
            "device": args.device, "dtype": args.dtype}


def load_generators(names: list[str], device: str = "cpu", dtype: str = "fp32", loras=(),
                    lora_scale: float | None = None) -> dict:
    """Load each model once; the served name is the model's own name, made unique if repeated.
    Each LoRA adapter in `loras` is served as "<model>+<adapter>" on the served model it was
    trained from (same weights hash), sharing that model's networks; UserInputError (one line) if
    no served model is its base. Requests reach adapters only by these names: nothing in a request
    can point at a file."""
    import blinkgen

    from ..errors import UserInputError
    from ..train.lora import read_adapter

    if lora_scale is not None and not loras:
        raise UserInputError("--lora-scale needs --lora")
    gens: dict = {}
    for m in names:
        gen = blinkgen.load(m, device=device, dtype=dtype)
        name, k = gen.name, 2
        while name in gens:
            name, k = f"{gen.name}-{k}", k + 1
        gens[name] = gen
    for path in loras or ():
        adapter = read_adapter(path)
        want = adapter.base.get("weights_sha256")
        base = next((n for n, g in gens.items() if "+" not in n and "lora" in g.supports
                     and g.family == adapter.base.get("family") and g.weights_sha256() == want), None)
        if base is None:
            raise UserInputError(f"LoRA adapter {adapter.folder} was trained on {adapter.base.get('name')!r} "
                                 f"(weights sha256 {str(want)[:12]}), which is not among the served models "
                                 f"({', '.join(gens)}); add it with --model")
        gen = gens[base].with_lora(adapter.folder, lora_scale)
        gens[gen.name] = gen
    return gens


def make_server(app, host: str, port: int, log_level: str = "info", grace_s: float = 30.0):
    """A uvicorn.Server whose signal handler starts the batcher's drain before uvicorn's own."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.service.batcher.begin_shutdown(grace_s)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=grace_s + 5, access_log=False)
    return Server(config)


def _stack_dumps_on_sigusr1() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: how a stalled server is told apart
    from a deadlocked one without a debugger."""
    if not hasattr(signal, "SIGUSR1"):  # Windows
        return
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    except (AttributeError, ValueError, OSError) as e:  # no real stderr file (embedded, captured)
        log.warning("no stack dumps on SIGUSR1: %s", e)


def run(args) -> int:
    """Load, build, serve until a signal. Model or key-file problems raise BlinkgenError, which
    the CLI turns into one line and exit code 2."""
    from ..errors import BlinkgenError
    from .app import create_app

    _stack_dumps_on_sigusr1()
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("blinkgen").setLevel(level)  # the main CLI may have configured WARNING
    try:
        config = config_from_args(args)
    except OSError as e:
        raise BlinkgenError(f"cannot read a key file: {e}") from None
    from ..cli_flags import LORA_FLAGS, flag_words

    with flag_words(LORA_FLAGS):  # the CLI's flags, not the API's names, in its errors
        gens = load_generators(args.model or ["default"], args.device, args.dtype, args.lora, args.lora_scale)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        log.warning("listening on %s without API keys: anyone who can reach it can use it", args.host)
    app = create_app(gens, config)
    log.info("serving %s on http://%s:%d", ", ".join(gens), args.host, args.port)
    make_server(app, args.host, args.port, args.log_level, config.shutdown_grace_s).run()
    return 0


def main(argv=None) -> int:
    """`python -m blinkgen.serve.commands ...`: the same command without the main CLI."""
    from ..errors import BlinkgenError

    parser = argparse.ArgumentParser(prog="blinkgen serve")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BlinkgenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
