"""``unmask serve``: the web page (FastAPI + uvicorn) for one model, or two side by side."""
from __future__ import annotations

import argparse
import socket
import sys

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import emit_json
from unmask.errors import UnmaskError


@builder("serve")
def build(p: argparse.ArgumentParser) -> None:
    from unmask.server.limits import Limits

    d = Limits()
    p.add_argument("--model", default="minilm", help="model directory")
    p.add_argument("--compare", default=None, help="a second model directory shown side by side "
                                                   "(e.g. the Facade-merged model)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--task", choices=["sst2", "rte"], default=None,
                   help="one sentence (sst2) or premise + hypothesis (rte), and the audit's sample "
                        "(default: rte for entailment labels, else sst2)")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help=f"characters per text field "
                                                                      f"(default {d.max_chars})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"word pieces per input "
                                                                        f"(default {d.max_tokens})")
    p.add_argument("--max-methods", type=int, default=d.max_methods, help=f"methods per request "
                                                                          f"(default {d.max_methods})")
    p.add_argument("--timeout", type=float, default=d.timeout, help=f"seconds per request (default "
                                                                    f"{d.timeout:g})")
    p.add_argument("--audit-examples", type=int, default=d.audit_examples,
                   help=f"inputs of the built-in audit sample (default {d.audit_examples})")
    p.add_argument("--quiet", action="store_true", help="no request log and no progress bars")
    p.add_argument("--json", default=None, metavar="-",
                   help="'-': once listening, print {url, host, port, models, task} as one JSON line on stdout")


def _limits(args: argparse.Namespace):
    from unmask.server.limits import Limits

    for name in ("max_chars", "max_tokens", "max_methods", "audit_examples"):
        if getattr(args, name) < 1:
            raise UnmaskError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.timeout <= 0:
        raise UnmaskError(f"--timeout must be positive, got {args.timeout}")
    return Limits(max_chars=args.max_chars, max_tokens=args.max_tokens, max_methods=args.max_methods,
                  timeout=args.timeout, audit_examples=args.audit_examples)


def _names(paths: list[str]) -> list[str]:
    from pathlib import Path

    names = [Path(p).name or p for p in paths]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]} (1)", f"{names[1]} (2)"]
    return names


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UnmaskError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


@command("serve", "Serve the web page: type a sentence, pick methods, compare heatmaps of one or two models.",
         "examples:\n  unmask serve --model runs/sst2\n"
         "  unmask serve --model runs/sst2 --compare runs/facade/sst2/merged_stop --port 8000\n"
         "  unmask serve --model runs/rte --port 0 --quiet --json -    # any free port; prints the URL as JSON")
def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UnmaskError("unmask serve needs the web extra: pip install 'unmask[web]'") from None

    from unmask.models import load_model
    from unmask.server.app import create_app

    if args.json not in (None, "-"):
        raise UnmaskError(f"--json takes '-' (stdout) for this command, got {args.json!r}")
    if not 0 <= args.port <= 65535:
        raise UnmaskError(f"--port must be in 0..65535, got {args.port}")
    limits = _limits(args)
    sock = _bind(args.host, args.port)  # a busy port fails before the models load
    try:
        paths = [args.model] + ([args.compare] if args.compare else [])
        models = dict(zip(_names(paths), (load_model(p) for p in paths)))
        app = create_app(models, limits, task=args.task, progress=not args.quiet)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready = {"url": f"http://{shown}:{port}/", "host": host, "port": port, "models": list(models),
             "task": app.state.service.task}

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if args.json == "-":
                emit_json("-", ready, indent=None)  # one line on stdout (other output goes to stderr)
            else:
                print(f"serving {', '.join(models)} at {ready['url']} (Ctrl-C stops)", file=sys.stderr, flush=True)

    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    Server(config).run(sockets=[sock])
    return 0
