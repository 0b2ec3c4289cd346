"""A search on its own thread (Running), the one-place mailbox (Latest) through which the page
takes its newest snapshot, so that a page slower than the search never falls behind, and the
rule that keeps the server's torch work off its long-lived threads (on_a_passing_thread)."""
import threading
from dataclasses import dataclass, field


class PassingThread:
    """function(*args, **keywords) started on a thread of its own that ends with it; `result()` waits
    for it and gives its result, or raises its error.

    torch keeps an OpenMP team of threads for every OS thread that has done parallel work, as long
    as that thread lives. Once the teams add up to more threads than the CPUs, libgomp's idle threads
    stop spinning and sleep at every wait, and the searches slow down: on 2 cores a 60-step DCGAN
    search took 1.0 s instead of 0.5 s. So the server's long-lived threads (its main thread, Gradio's
    workers) do no torch work: the model is loaded and uploads are aligned on passing threads, and
    every search runs on its own (Running)."""

    def __init__(self, function, *args, **keywords):
        self.outcome = {}
        self.thread = threading.Thread(target=self.work, args=(function, args, keywords), daemon=True)
        self.thread.start()

    def work(self, function, args, keywords):
        try:
            self.outcome["value"] = function(*args, **keywords)
        except BaseException as e:  # handed to the caller's thread
            self.outcome["error"] = e

    def result(self):
        self.thread.join()
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["value"]


def on_a_passing_thread(function, *args, **keywords):
    """function(*args, **keywords) on a PassingThread: its result, or its error."""
    return PassingThread(function, *args, **keywords).result()


class Latest:
    """A one-place mailbox: put() replaces what is there, read or not; take() waits for something new.
    The live view takes the search's snapshots from it, so it shows the newest and never falls behind."""
    CLOSED = object()  # what take() gives once the mailbox is closed and its last item taken

    def __init__(self):
        self.changed = threading.Condition()
        self.item, self.unread, self.closed = None, False, False

    def put(self, item):
        with self.changed:
            self.item, self.unread = item, True
            self.changed.notify_all()

    def close(self):
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def take(self):
        with self.changed:
            self.changed.wait_for(lambda: self.unread or self.closed)
            if not self.unread:
                return Latest.CLOSED
            self.unread = False
            return self.item

    def peek(self):
        """The newest item, taken or not (None before the first)."""
        return self.item


@dataclass
class Running:
    """A session's search, from Run: `stop` ends it with its best so far (or before it starts), `latest`
    holds its newest Snapshot, `ended` is set once its thread is done."""
    stop: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    latest: Latest = field(default_factory=Latest)

    def run(self, task, show):
        """Run `task(report)` on a PassingThread, `report` putting a Snapshot in `latest`; yield show(the
        newest snapshot) as they come, skipping those the page had no time for, and return the task's
        result (or raise its error)."""
        def work():
            try:
                return task(self.latest.put)
            finally:
                self.latest.close()
                self.ended.set()
        search = PassingThread(work)
        while (snapshot := self.latest.take()) is not Latest.CLOSED:
            yield show(snapshot)
        return search.result()
