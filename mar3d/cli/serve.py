"""`mar3d serve`: the web app (mar3d.web) for a pipeline model folder."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from mar3d.cli.errors import CLIError
from mar3d.cli.common import HelpFormatter, add_model_options, load_pipeline_arg


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="web app: image -> mesh in the browser",
        description=(
            "Serve a web page (gradio) where one uploads an image, sees it cut out and framed as the model "
            "gets it, sets the seed, steps, guidance and resolution, and gets the mesh in an interactive 3D "
            "view with normal-map previews and as GLB, OBJ and STL downloads. Generations are queued and run "
            "one at a time. Every file the server writes is in one temporary folder, removed at exit; each "
            "request's files are removed once they are older than --keep-minutes (or not among the 16 newest). "
            "Stop it with Ctrl-C."),
        formatter_class=HelpFormatter)
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file accepted")
    p.add_argument("--keep-minutes", type=float, default=30.0, help="how long a request's files stay downloadable")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting at most; more are refused")


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does, so its temporary folder is removed


def run(args) -> int:
    if args.max_upload_mb <= 0 or args.keep_minutes <= 0 or args.queue_size < 1:
        raise CLIError("--max-upload-mb and --keep-minutes must be > 0 and --queue-size >= 1")
    pipeline = load_pipeline_arg(args)
    root = Path(tempfile.mkdtemp(prefix="mar3d-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # gradio reads it when imported: its uploads and cache go here too
    print(f"mar3d serve: temporary files under {root} (removed at exit)", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        from mar3d.web.app import serve

        serve(pipeline, root, host=args.host, port=args.port, share=args.share, max_upload_mb=args.max_upload_mb,
              keep_seconds=args.keep_minutes * 60, queue_size=args.queue_size)
    except OSError as e:  # e.g. the port is taken
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
