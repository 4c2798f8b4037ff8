"""Serve the harmonization page on this machine: ``iharm-serve`` or ``python scripts/serve.py --port 7860``.

Open http://127.0.0.1:7860/ , upload a composite and its mask (or paint the
mask), pick a model and checkpoint (those under ``--checkpoints``, or a path),
compare the result with the input, download it at full size. The page loads
nothing from any other machine. Uploads and results live in a temporary folder
that is removed when the server stops; nothing else is written.
"""
from __future__ import annotations

import argparse
import ipaddress
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from iharm.api import SHIPPED_DIR
from iharm.tools.cli import add_device_arguments, device_from_args
from iharm.web.app import MAX_UPLOAD_BYTES, ServerState, create_app, list_checkpoints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--checkpoints", type=Path, default=SHIPPED_DIR.parent,
                        help="folder searched for *.pth weights the page lists")
    parser.add_argument("--score-checkpoint", type=Path, default=None,
                        help="BargainNet weights (latest_net_E.pth or a BargainNet .pth) for the harmony score "
                             "(default: the first BargainNet weights under --checkpoints, if any)")
    add_device_arguments(parser)
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                        help="largest upload accepted (image and mask together)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: expected 1..65535")
    if args.max_upload_mb <= 0:
        parser.error(f"--max-upload-mb {args.max_upload_mb}: expected a positive size")
    if args.score_checkpoint is not None and not args.score_checkpoint.is_file():
        parser.error(f"--score-checkpoint {args.score_checkpoint}: no such file")
    if not args.checkpoints.is_dir():
        parser.error(f"--checkpoints {args.checkpoints}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn  # the server itself, only when serving

    try:
        device = str(device_from_args(args))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    found = list_checkpoints(args.checkpoints)
    score = args.score_checkpoint
    if score is None:
        score = next((Path(c["path"]) for c in found if c["model"] == "BargainNet"), None)
    work = Path(tempfile.mkdtemp(prefix="iharm-serve-"))
    tempfile.tempdir = str(work)  # uploads spooled to disk go there too
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"warning: --host {args.host} makes the page reachable from other machines", file=sys.stderr)
    state = ServerState(checkpoints_dir=args.checkpoints.resolve(), work_dir=work, device=device,
                        score_checkpoint=score, max_upload_bytes=int(args.max_upload_mb * 2**20))
    print(f"serving on http://{args.host}:{args.port}/ (device {device}, {len(found)} "
          f"checkpoints under {args.checkpoints}, harmony score: {score or 'none'}); Ctrl-C stops", flush=True)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again: let that end in the clean-up below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
