"""A search on its own thread (Running), and the one-place mailbox (Latest) through which the page
takes its newest snapshot, so that a page slower than the search never falls behind."""
import threading
from dataclasses import dataclass, field


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
        """Run `task(report)` on a thread, `report` putting a Snapshot in `latest`; yield show(the newest
        snapshot) as they come, skipping those the page had no time for, and return the task's result
        (or raise its error)."""
        outcome = {}

        def work():
            try:
                outcome["value"] = task(self.latest.put)
            except BaseException as e:  # handed to the caller's thread
                outcome["error"] = e
            finally:
                self.latest.close()
                self.ended.set()

        threading.Thread(target=work, daemon=True).start()
        while (snapshot := self.latest.take()) is not Latest.CLOSED:
            yield show(snapshot)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
