"""app.py's page, a module per concept; app.py is its command line (the flags, the model, the server's
start and stop).

    page.py           the page: Gradio layout, handlers, serve()
    search_line.py    the pages' searches, one at a time in the order Run was pressed; the server's stop
    uploads.py        uploads -> faces: checked, taken as aligned faces or aligned from photos
    setting_boxes.py  the setting boxes: which, what they hold (Settings), each made from its declaration
    face_searches.py  the searches a Run starts, through the API (model.upsample), with live Snapshots
    search_thread.py  a search on its own thread, and the mailbox of its newest snapshot
    views.py          what the page shows: faces found, the live search, the results

The page is built with Gradio on the Python API (PULSE.load, model.upsample); photos are aligned by
ffhq_alignment.py, as align_face.py aligns them, and the pictures are runkit/visuals.py's. Gradio is
imported where it is used, after app.py's main has pointed GRADIO_TEMP_DIR at the server's
temporary folder: Gradio reads it when it is imported.
"""
