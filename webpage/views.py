"""What the page shows: the faces found, the live search (image, status, L2 curve), and the results
(strips, a line per result, downloads). Each *_view is the page's six outputs of a search:
(live image, status, L2 plot, strips, summary, downloads).

The views that come again and again (a waiting page's status, the live search) give every output a
value, None where it is empty: a Run's first view clears the last Run's results. Gradio's "leave it
as it is" (gr.update()) rebuilds the component and its API schema on the server, about 1 ms each
(a view of five took 7 ms, 1.9 ms with values), time the search loses on a small machine; only
the views shown once a Run use it."""
import json
import math
from pathlib import Path

from PIL import Image

from runkit import visuals
from runkit.files import save_image

PLOT_POINTS = 500                # the L2 curve sent to the page has at most about this many points
STRIPS_NAME = "strips.png"       # the strips of a Run's faces, one under the other, among its downloads
NO_RESULTS = None, "", None      # strips, summary and downloads, empty: what a Run's views show until its end


def face_picture(face):
    """What the page shows of a face: the aligned crop (if any) beside the small input."""
    side = f"{face.low.width}x{face.low.height}"
    panels = [visuals.Panel(face.low, [face.label, f"{side} input"], resample=Image.Resampling.NEAREST)]
    if face.crop is not None:
        panels.insert(0, visuals.Panel(face.crop, [face.label, "1024x1024 aligned crop"]))
    return visuals.draw_strip(panels)


def stacked(pictures):
    """The pictures one under the other on white, as one picture (None when there are none)."""
    if not pictures:
        return None
    stack = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), "white")
    top = 0
    for picture in pictures:
        stack.paste(picture, (0, top))
        top += picture.height
    return stack


def l2_chart(snapshot):
    """L2 at every step against eps, on a log scale: a Vega-Lite chart that the browser draws (Gradio's
    altair plot type takes the chart's JSON; altair itself is not needed). The server only writes
    the JSON, so drawing costs the search nothing; a long search's curve is thinned to about
    PLOT_POINTS points."""
    import gradio as gr
    stride = math.ceil(len(snapshot.l2) / PLOT_POINTS)
    shown = sorted({*range(0, len(snapshot.l2), stride), len(snapshot.l2) - 1})
    layers = {"L2": {"mark": {"type": "line", "clip": True},
                     "data": {"values": [{"step": i + 1, "L2": snapshot.l2[i]} for i in shown]},
                     "encoding": {"x": {"field": "step", "type": "quantitative", "title": "step",
                                        "scale": {"domain": [1, max(snapshot.steps, 2)]}},
                                  "y": {"field": "L2", "type": "quantitative", "title": "L2",
                                        "scale": {"type": "log"}}}}}
    if snapshot.eps > 0:  # 0 has no place on a log scale
        layers[f"eps = {snapshot.eps:g}"] = {"mark": {"type": "rule", "strokeDash": [6, 4]},
                                             "encoding": {"y": {"datum": snapshot.eps}}}
    colours = {"domain": list(layers), "range": ["#1f77b4", "#d62728"][:len(layers)]}
    for name, layer in layers.items():  # one legend: each layer's colour by its name
        layer["encoding"]["color"] = {"datum": name, "scale": colours, "legend": {"title": None, "orient": "top-right"}}
    chart = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "layer": list(layers.values()),
             "width": 280, "height": 250, "autosize": {"type": "fit", "contains": "padding"},  # axes included
             "padding": {"top": 36, "left": 5, "right": 10, "bottom": 5}}  # the top clear of Gradio's label
    return gr.components.plot.PlotData(type="altair", plot=json.dumps(chart))


def results_summary(face_results):
    """One line per result, NOT CONVERGED as plainly as run.py says it."""
    lines = []
    for record in face_results.records:
        status = record.status if record.converged else (
            f"**{record.status}** (try the converge recipe, more steps, more tries, another seed, or a larger eps)")
        lines.append(f"- {Path(record.output).name}: {status}; seed {record.seed}, best step {record.best_step}, "
                     f"L2 {record.losses['L2']:.4g}{record.note}")
    return "\n".join(lines)


def status_only(message):
    """The page's outputs for a mistake: the message in the status line, the rest as they are."""
    import gradio as gr
    return gr.update(), f"**{message}**", gr.update(), gr.update(), gr.update(), gr.update()


def waiting_status(place, ahead):
    """The status line of a search waiting in line at `place` (1: next), while the search `ahead`
    runs (its newest Snapshot, None before its first)."""
    progress = "starting" if ahead is None else (
        f"search {ahead.search} of {ahead.searches}, step {ahead.step} of {ahead.steps}")
    return f"waiting in the queue, place {place}: another page's search runs now ({progress})"


def waiting_view(status):
    """The page's outputs while its search waits in line: the status line, the rest empty."""
    return None, status, None, *NO_RESULTS


def final_view(searched, folder, server_stopping):
    """The page's outputs when the searches are done: status, strips, summary and downloads."""
    import gradio as gr
    if server_stopping:
        status = "stopped: the server is shutting down; the best image so far is below"
    else:
        status = "done (stopped: the best image so far is kept)" if any(r.interrupted for r in searched) else "done"
    strips = folder / STRIPS_NAME  # a file, also a download: Gradio would encode the picture at PNG's
    save_image(stacked([r.strip for r in searched]), strips, compress_level=1)  # level 6, 36 ms; here 14
    return (gr.update(), status, gr.update(), str(strips),
            "\n".join(results_summary(r) for r in searched), sorted(str(p) for p in folder.iterdir()))


def live_view(snap):
    """The page's outputs during a search: the live image, status and curve; the rest empty."""
    status = f"search {snap.search} of {snap.searches} ({snap.label}): step {snap.step} of {snap.steps}"
    return snap.best, status, l2_chart(snap), *NO_RESULTS

