"""How much the page slows searches down: six 60-step searches of the DigiFace DCGAN asked by three
pages at once (two each, one after the other, through gradio_client), against the same six searches
in run.py. Not a test (its figures depend on the machine); docs/app.md gives what it printed.

    python tests/app_load.py            # from the repository root; about a minute on 2 idle cores

run.py runs the six as `-duplicates 6 -seed 0` (seeds 0 to 5), once before the page and once after
it, and its searches' own seconds (its log's) are summed: run.py's start and model load are left
out, as the page's server has them behind it. The page's six use the same seeds, on a server
started with `python app.py -network dcgan-digiface` (default threads); its clock runs from the
first Run to the last result on a page. The results must match run.py's.
"""
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from runkit import runlog  # noqa: E402
from test_app import Server, values  # noqa: E402

FACE = ROOT / "tests" / "fixtures" / "digiface" / "input" / "face_2.png"
PAGES, SEARCHES_EACH, STEPS = 3, 2, 60


def run_py_searches(folder):
    """(the six searches' seconds summed, run.py's wall clock, each result's L2 by seed)."""
    inputs = folder / "input"
    inputs.mkdir(parents=True)
    shutil.copy(FACE, inputs)
    start = time.monotonic()
    subprocess.run([sys.executable, "run.py", "-network", "dcgan-digiface", "-input_dir", str(inputs),
                    "-output_dir", str(folder / "out"), "-steps", str(STEPS), "-seed", "0",
                    "-duplicates", str(PAGES * SEARCHES_EACH)], cwd=ROOT, check=True, capture_output=True)
    wall = time.monotonic() - start
    records = runlog.read(folder / "out" / runlog.LOG_NAME)
    return sum(r.seconds for r in records), wall, {r.seed: r.losses["L2"] for r in records}


def page_searches(folder):
    """(seconds from the first Run to the last result, each result's summary line by seed, the run-log
    records the server wrote)."""
    from gradio_client import Client, handle_file
    server = Server(folder, "-network", "dcgan-digiface")
    try:
        clients = [Client(server.url, download_files=False, verbose=False) for _ in range(PAGES)]
        for client in clients:
            client.predict([handle_file(str(FACE))], 32, api_name="/on_upload")
        time.sleep(1)  # as a person looks at the faces before Run: the clients' start is not a busy core
        summaries = {}

        def page(number):
            for k in range(SEARCHES_EACH):
                seed = number * SEARCHES_EACH + k
                summaries[seed] = clients[number].predict([0], *values(seed=seed, steps=STEPS),
                                                          api_name="/on_search")[4]

        start = time.monotonic()
        pages = [threading.Thread(target=page, args=(number,)) for number in range(PAGES)]
        for thread in pages:
            thread.start()
        for thread in pages:
            thread.join()
        clock = time.monotonic() - start
        logs = server.temp.glob(f"pulse_app_*/search_*/{runlog.LOG_NAME}")  # the page's own folders
        return clock, summaries, [record for log in logs for record in runlog.read(log)]
    finally:
        server.kill()


def main():
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        before, before_wall, l2 = run_py_searches(temp / "before")
        page, summaries, page_records = page_searches(temp / "page")
        after, after_wall, _ = run_py_searches(temp / "after")
    for seed, summary in sorted(summaries.items()):
        assert f"seed {seed}," in summary and f"L2 {l2[seed]:.4g}" in summary, (seed, summary, l2[seed])
    baseline = (before + after) / 2
    print(f"run.py, six searches: {before:.1f} s before the page, {after:.1f} s after it "
          f"(its wall clock {before_wall:.1f} s and {after_wall:.1f} s, start and model load included)")
    print(f"the page, six searches from {PAGES} pages at once: {page:.1f} s, "
          f"{page / baseline:.2f}x run.py's mean {baseline:.1f} s; the same results")
    searching = sum(r.seconds for r in page_records)
    print(f"  of which the searches themselves {searching:.1f} s ({searching / baseline:.2f}x run.py's; "
          f"threads {[r.threads for r in sorted(page_records, key=lambda r: r.seed)]} by seed), "
          f"the rest {page - searching:.1f} s")


if __name__ == "__main__":
    main()
