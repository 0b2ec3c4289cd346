"""The page: its Gradio layout, the handlers it wires (uploads, Run, Stop, a recipe), and serve(),
which runs the server until a stop and then ends the running searches."""
import sys
import tempfile
import time
from pathlib import Path

from bicubic import divides_by_power_of_two
from runkit import exits
from webpage import face_searches
from webpage.search_line import SearchLine
from webpage.search_thread import on_a_passing_thread
from webpage.setting_boxes import BOXES, IN_VIEW, RECIPE_BOXES, Settings, on_recipe, setting_box
from webpage.uploads import (DEFAULT_FACE_SIZE, FACE_SIZES, MAX_ALIGNED_SIDE, MAX_PIXELS, MAX_UPLOAD_MB,
                             faces_from_uploads)
from webpage.views import face_picture, final_view, live_view, stacked, status_only

ABOUT = """
# PULSE: a face that fits the pixels
Drop photos (JPEG, PNG or WebP): every face found is aligned the way FFHQ was built and shrunk
to a small input, as `align_face.py` does. Already aligned small faces (square, up to
{max_side}x{max_side}) are taken as they are. Pick the faces, set the search and run it.

PULSE **invents** a plausible face whose downscale matches the small input; it does **not**
recover the real person. Many different faces downscale to the same pixels (try duplicates), and
what PULSE finds reflects the generator's training data and its biases. Do not use it to
identify anyone.

One search runs at a time on this machine: while someone else's runs, yours waits in the queue
and the status line shows your place. A setting the search cannot take is named under the Run
button, and nothing runs. Uploads up to {max_mb} MB and {max_mp} megapixels; they and the results
are kept in a temporary folder that is removed when the server stops (a search running then ends
with its best image so far, shown here: download what you want to keep).
""".format(max_side=MAX_ALIGNED_SIDE, max_mb=MAX_UPLOAD_MB, max_mp=MAX_PIXELS // 1_000_000)

QUEUE_LOOK_SECONDS = 0.02, 0.5   # how often Gradio's queue looks for new events, and for progress (see quieten)


class Page:
    """The Gradio page: its handlers, and the layout that wires them; its searches wait in one line."""

    def __init__(self, model, aligner, aligner_problem, workdir):
        self.model, self.aligner, self.aligner_problem = model, aligner, aligner_problem
        self.workdir = Path(workdir)
        self.line = SearchLine()

    def face_sizes(self):
        return [size for size in FACE_SIZES if divides_by_power_of_two(self.model.resolution, size)
                and size < self.model.resolution]

    def notices(self):
        lines = [f"**Note:** {self.model.note}."] if self.model.note else []
        if self.aligner_problem:
            lines.append(f"**Note:** {self.aligner_problem}.")
        return "\n\n".join(lines)

    def on_upload(self, paths, face_size):
        """Uploads -> (faces, their picture, face choices, message)."""
        import gradio as gr
        faces, problems = on_a_passing_thread(faces_from_uploads, paths or [], self.aligner, int(face_size),
                                              self.model.resolution)
        choices = [(face.label, i) for i, face in enumerate(faces)]
        message = "\n".join(f"- **{p}**" for p in problems)
        if paths and not faces:
            message += "\n\nNo face to search yet."
        return (faces, stacked([face_picture(face) for face in faces]),
                gr.update(choices=choices, value=[i for _, i in choices]), message)

    def on_search(self, faces, chosen, *values, request=None):
        """Run the chosen faces; yields (live image, status, L2 plot, strips, summary, files) as it goes.
        A user's mistake is said in the status line alone, in place of the last message."""
        picked = [faces[i] for i in sorted(chosen or [])]
        if not picked:
            yield status_only("Drop a photo or an aligned face first, and tick at least one face.")
            return
        try:
            settings = Settings.of(**dict(zip(BOXES, values)))
        except ValueError as e:
            yield status_only(str(e))
            return
        folder = Path(tempfile.mkdtemp(prefix="search_", dir=self.workdir))
        running = self.line.join(session_of(request))
        if running is None:
            yield status_only("The server is stopping; no new search starts.")
            return
        try:
            if not (yield from self.line.wait_for_turn(running)):
                yield status_only("The server is stopping; no new search starts." if self.line.closing
                                  else "Stopped before it started.")
                return
            try:
                searched = yield from running.run(lambda report: face_searches.searches(
                    self.model, picked, settings, folder, running.stop, report), live_view)
            except ValueError as e:  # a setting this model cannot take (noise layers): raised before any search
                yield status_only(str(e))
                return
            yield final_view(searched, folder, server_stopping=self.line.closing)
        finally:  # after the last view was handed to the page: end_searches waits for it
            running.stop.set()  # ends the search if the page went away
            self.line.finish(session_of(request))

    def on_stop(self, request=None):
        self.line.stop(session_of(request))

    def blocks(self):
        import gradio as gr
        defaults = Settings().boxes()
        with gr.Blocks(title="PULSE", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(ABOUT)
            gr.Markdown(self.notices(), elem_id="notices")
            faces = gr.State([])
            with gr.Row():
                with gr.Column():
                    uploads = gr.File(label="photos or aligned faces (JPEG, PNG, WebP)", file_count="multiple",
                                      file_types=[".jpg", ".jpeg", ".png", ".webp"], elem_id="uploads")
                    face_size = gr.Dropdown(
                        self.face_sizes(), value=DEFAULT_FACE_SIZE,
                        label="side of the small faces cut from photos (align_face.py -output_size)")
                    upload_message = gr.Markdown(elem_id="upload_message")
                    pictures = gr.Image(label="faces found", format="png", interactive=False, elem_id="faces")
                    chosen = gr.CheckboxGroup(label="faces to search", elem_id="chosen")
                with gr.Column():
                    boxes = {name: setting_box(name, defaults[name]) for name in IN_VIEW}
                    with gr.Accordion("more settings (run.py's names and defaults)", open=False):
                        boxes.update({name: setting_box(name, defaults[name]) for name in BOXES if name not in boxes})
                    with gr.Row():
                        run = gr.Button("Run PULSE", variant="primary", elem_id="run")
                        stop = gr.Button("Stop (keeps the best so far)", variant="stop", elem_id="stop")
                    status = gr.Markdown(elem_id="status")
                    with gr.Row():
                        live = gr.Image(label="best image so far", format="png", height=300, elem_id="live")
                        plot = gr.Plot(label="L2 against eps")
            strips = gr.Image(label="input | bicubic | result | its downscale", format="png", interactive=False,
                              elem_id="strips")
            summary = gr.Markdown(elem_id="summary")
            downloads = gr.File(label="results, run log (JSON lines) and search GIFs", file_count="multiple",
                                elem_id="downloads")

            boxes["recipe"].input(on_recipe, boxes["recipe"], [boxes[name] for name in RECIPE_BOXES])
            for changed in (uploads, face_size):  # a new face size cuts the photos' faces again
                changed.change(self.on_upload, [uploads, face_size], [faces, pictures, chosen, upload_message])

            # Gradio hands its request (whose session says which page asks) only to a positional
            # parameter annotated gr.Request, an annotation that needs Gradio imported
            def on_search(request: gr.Request, faces, chosen, *values):
                yield from self.on_search(faces, chosen, *values, request=request)

            def on_stop(request: gr.Request):
                self.on_stop(request)

            run.click(on_search, [faces, chosen, *(boxes[name] for name in BOXES)],
                      [live, status, plot, strips, summary, downloads],
                      concurrency_limit=None)  # the page's own line runs one search at a time, and says so
            stop.click(on_stop, None, None, queue=False)
        return demo


def quieten(demo):
    """Gradio's queue looks for new events every millisecond, and for progress to send every 10 ms: an
    idle server took 7% of a core and woke about 870 times a second, each wake-up taking a core from
    whatever searched on the machine. Every 20 ms (a Run may start up to 20 ms later) and 0.5 s (the
    page sends no Gradio progress): 1% and about 70 wake-ups a second. These are Gradio 6's private
    attributes: a Gradio without them keeps its own pace (a slow test counts the wake-ups)."""
    queue = getattr(demo, "_queue", None)
    if hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free"):
        queue.sleep_when_free, queue.progress_update_sleep_when_free = QUEUE_LOOK_SECONDS


def session_of(request):
    """Which page asks: the session of Gradio's request (None without one)."""
    return getattr(request, "session_hash", None)


def serve(page, args):
    """Serve the page until Ctrl-C, SIGTERM or SIGHUP (quiet_stop.StopSignals's KeyboardInterrupt), then
    end the running searches and close the server; whether a search was running. SetupError when the
    port cannot be had. Gradio's own wait for Ctrl-C would leave a search on its thread while Python
    exits, and the C++ runtime aborts the process when that thread is inside torch."""
    demo = None
    try:
        demo = page.blocks()
        try:
            demo.queue(default_concurrency_limit=1)
            quieten(demo)
            demo.launch(
                server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                allowed_paths=[str(page.workdir)], prevent_thread_lock=True, quiet=True)
        except OSError:  # Gradio's message speaks of its launch() arguments
            raise exits.SetupError(f"cannot serve on {args.host}, port {args.port} (taken?); "
                                 f"choose another with -port or -host") from None
        print(f"the page is at {demo.local_url} (Ctrl-C stops the server)", file=sys.stderr, flush=True)
        while demo.is_running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        searching = page.line.end_searches()
        if demo is not None:
            demo.close(verbose=False)
    return searching
