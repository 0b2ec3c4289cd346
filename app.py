#!/usr/bin/env python3
"""A local web page over PULSE: photos in, the faces found, the search live, results to keep.

    pip install -r requirements-app.txt
    python app.py -cache_dir tests/fixtures/tiny_model -port 7861

The generator is chosen here, when the server starts, never from the page. This file is the
command line: the flags, then main, which loads the model and serves the page (webpage/) until a
stop, in a temporary folder of uploads and results that is removed when the server stops.
"""
if __name__ == "__main__":  # first: a stop while the rest loads is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import importlib.util
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from errors import PulseError
from runkit import exits, flags, messages, quiet_stop
from runkit.flags import positive_int
from settings import ModelOptions


EXIT_STATUSES = ("exit status: 0 the server closed on its own; 2 bad flags; 3 setup failed (the page's extra, "
                 "device, weights, port), nothing was served; 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, "
                 "129 SIGHUP): a running search ends with its best image so far, shown on its page, and the "
                 "temporary folder of uploads and results is removed")


def build_parser():
    p = flags.parser("A local web page over PULSE: drop photos, watch the search, download the results.",
                   epilog=EXIT_STATUSES)
    p.add_argument("-host", "--host", default="127.0.0.1",
                   help="address to listen on; the default serves this machine only")
    p.add_argument("-port", "--port", type=positive_int, default=7860, help="port of the page")
    flags.add_options(p.add_argument_group("the generator, chosen here and never from the page (as run.py)"),
                    ModelOptions)
    flags.add_threads_flag(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    messages.show_messages()
    if importlib.util.find_spec("gradio") is None:
        print("error: app.py needs its extra: pip install -r requirements-app.txt", file=sys.stderr)
        return exits.EXIT_SETUP_FAILED
    from runkit import cpu_threads  # torch, the model and the page: after the flags, so --help needs none of them
    from webpage.face_searches import load_model
    from webpage.page import Page, serve
    from webpage.uploads import load_aligner
    cpu_threads.set_threads(args.threads)
    try:
        model = load_model(**asdict(flags.options_from(ModelOptions, args)))
    except PulseError as e:
        return exits.report_failure(e, "app.py")
    aligner, problem = load_aligner(args.cache_dir)
    if problem:
        print(f"note: {problem}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pulse_app_") as workdir, quiet_stop.StopSignals() as stop:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(workdir) / "gradio")  # uploads and served files
        try:
            searching = serve(Page(model, aligner, problem, workdir), args)
        except PulseError as e:
            return exits.report_failure(e, "app.py")
    if stop.requested:
        print("interrupted" + (": the running search ended with its best image so far, shown on its page"
                               if searching else ""), file=sys.stderr)
    return stop.exit_status if stop.requested else exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
