"""The line of the pages' searches: one runs at a time, in the order Run was pressed; a waiting page
is told its place, Stop takes a search out of the line, and a stopping server ends them all."""
import threading
import time

from webpage import face_searches
from webpage.search_thread import Running
from webpage.views import waiting_status, waiting_view

PAGE_GRACE_SECONDS = 5           # how long a stopping server waits for a stopped search's page to get its results
DELIVERY_SECONDS = 2             # then how long it keeps serving, for those pages to load the pictures


class SearchLine:
    """The Running searches of the pages, by session, in the order they came."""

    def __init__(self):
        # session -> its Running search, from Run until its page has had the last view, in the order they
        # came: the first runs, the others wait for their turn (one search at a time)
        self.running = {}
        self.threads = []  # every Running whose thread may not have ended (its page may be gone)
        self.lock = threading.Lock()  # guards these and `closing`
        self.turn = threading.Condition(self.lock)  # notified when the line moves, or the server stops
        self.closing = False  # the server is stopping: no new search starts

    def join(self, session):
        """A new Running search of the session, last in line; None when the server is stopping."""
        with self.lock:
            if self.closing:
                return None
            running = self.running[session] = Running()
            return running

    def wait_for_turn(self, running):
        """Wait while other pages' searches are ahead in line, yielding the status line (its place, how far
        the running search is) when it changes. Whether its turn came: False when Stop was pressed or
        the server began stopping first."""
        shown = None
        while True:
            with self.lock:
                self.turn.wait_for(lambda: self.closing or running.stop.is_set() or self.in_order()[0] is running,
                                   face_searches.REFRESH_SECONDS)
                if self.closing or running.stop.is_set():
                    return False
                line = self.in_order()
                if line[0] is running:
                    self.threads = [other for other in self.threads if not other.ended.is_set()] + [running]
                    return True
                status = waiting_status(line.index(running), line[0].latest.peek())
            if status != shown:
                shown = status
                yield waiting_view(status)

    def in_order(self):
        """The Running searches in the order they came: the first runs, the others wait."""
        return list(self.running.values())

    def finish(self, session):
        """The session's search leaves the line, its page having had the last view."""
        with self.lock:
            self.running.pop(session)
            self.turn.notify_all()

    def stop(self, session):
        """Stop the session's search: it ends with its best so far, or leaves the line before its turn."""
        with self.lock:
            running = self.running.get(session)
            if running is not None:
                running.stop.set()
                self.turn.notify_all()

    def end_searches(self, grace=PAGE_GRACE_SECONDS, delivery=DELIVERY_SECONDS):
        """Stop every running search and wait until it has ended (a search keeps its best image so far,
        written where the page keeps results, as on Stop); its page gets that last view if it comes
        within `grace` seconds, and `delivery` seconds more to load its pictures (closing Gradio's
        queue drops the messages it has not sent). The searches waiting in line leave it; no search
        starts after this. Whether any search was running."""
        with self.lock:
            self.closing = True
            self.turn.notify_all()  # the searches waiting in line leave it
            running = [search for search in self.threads if not search.ended.is_set()]
        for search in running:
            search.stop.set()
        for search in running:  # a search ends at its next step; none may be inside torch when Python exits
            search.ended.wait()
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if running:
            time.sleep(delivery)
        return bool(running)
