"""Downloads that hold up: the one way this project fetches a file from the web.

The bytes go to `<name>.partial` beside the destination, which is kept when the connection
breaks or the user presses Ctrl-C, so the next attempt resumes with an HTTP Range request
(a server that ignores Range answers 200, and the download starts over). Free disk space is
checked before any byte is written. A web page (Google Drive's quota or sign-in page, a dead
link) is never saved; Drive's "cannot scan this file for viruses" page is answered the way
its own download button does. Only a file whose size and MD5 match what was expected is
renamed to its final name, so nothing half-done or wrong can be taken for the real file.
"""
import itertools
import os
import shutil
import socket
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests
from tqdm import tqdm

from errors import PulseError
from runkit.files import file_md5

TIMEOUT = (15, 60)  # seconds to connect, and to wait for the next bytes: a dead host cannot hang a run
CHUNK = 1 << 20
CONFIRMATION_HOPS = 3  # Drive sends at most one confirmation page; more means something else is wrong


class DownloadError(OSError, PulseError):
    """A download failed; the message says why and what was left on disk, `reason` why in a few words."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def short_reason(error):
    """Why a download (or what came after it) failed, in a few words for a list of sources: not the
    page of text urllib3 wraps around a failed connection."""
    if isinstance(error, DownloadError):
        return error.reason
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.SSLError):
        return "no secure connection (TLS failed)"
    if isinstance(error, requests.ConnectionError):
        causes = list(causes_of(error))
        if any(isinstance(cause, socket.gaierror) for cause in causes):
            return "no network: cannot resolve the host"
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return "connection refused"
        return "cannot connect"
    if isinstance(error, requests.RequestException):
        return f"request failed ({type(error).__name__})"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def causes_of(error):
    """`error` and what it wraps: its cause and context, and urllib3's `reason` and first argument."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args[:1]]
        pending += [e for e in wrapped if isinstance(e, BaseException)]


def partial_path(destination):
    destination = Path(destination)
    return destination.with_name(destination.name + ".partial")


def megabytes(count):
    return f"{count / 1e6:,.1f} MB"


def fetch(url, destination, md5=None, size=None, timeout=TIMEOUT):
    """Download `url` to `destination`, resuming an earlier partial download, verified when told how."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(destination)
    with requests.Session() as session:
        response = open_file_response(session, url, partial, timeout)
        with response:
            offset = resume_offset(response, partial)
            total = offered_size(response, offset)
            if size is not None and total is not None and total != size:
                partial.unlink(missing_ok=True)
                raise DownloadError(f"the server offers {total:,} bytes, not the expected {size:,}: not downloaded",
                                    "not the expected size")
            check_disk_space(partial.parent, None if total is None else total - offset)
            stream(response, partial, offset, total, destination.name)
    verify(partial, md5, size)
    os.replace(partial, destination)
    return destination


def open_file_response(session, url, partial, timeout):
    """The streamed response that carries the file itself (past a Drive confirmation page)."""
    for _ in range(CONFIRMATION_HOPS):
        offset = partial.stat().st_size if partial.is_file() else 0
        headers = {"Accept-Encoding": "identity"}  # sizes and offsets must count the file's own bytes
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
        if response.status_code == 416:  # the partial file does not fit the file on offer: start over
            response.close()
            partial.unlink()
            continue
        if response.status_code >= 400:
            response.close()
            raise DownloadError(f"the server answered HTTP {response.status_code} {response.reason}",
                                f"HTTP {response.status_code}")
        if "text/html" not in response.headers.get("Content-Type", ""):
            return response
        page = response.text
        response.close()
        url = confirmation_url(page, url, session)
        if url is None:
            raise DownloadError("the server sent a web page instead of the file (a Google Drive quota or "
                                "sign-in page, or a dead link); nothing was saved",
                                "a web page instead of the file (a Drive quota or sign-in page, or a dead link)")
    raise DownloadError("the server kept answering with web pages instead of the file; nothing was saved")


def resume_offset(response, partial):
    """Bytes of `partial` the response continues: its size after a 206, else 0 (start over)."""
    if response.status_code != 206:
        return 0
    have = partial.stat().st_size if partial.is_file() else 0
    start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
    if start != str(have):
        partial.unlink(missing_ok=True)
        raise DownloadError(f"the server resumed at byte {start or '?'} instead of {have}; "
                            f"the partial file was deleted, the next attempt starts over",
                            "the server resumed at the wrong byte")
    return have


def offered_size(response, offset):
    """The whole file's size as the server states it, or None."""
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
    else:
        total = response.headers.get("Content-Length", "")
    return int(total) if total.isdigit() else None


def check_disk_space(folder, needed):
    free = shutil.disk_usage(folder).free
    if needed is not None and needed > free:
        raise DownloadError(f"not enough disk space in {folder}: the download needs {megabytes(needed)}, "
                            f"{megabytes(free)} are free", f"not enough disk space ({megabytes(needed)} needed)")


def looks_like_html(chunk):
    head = chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def stream(response, partial, offset, total, label):
    """Write the body to `partial` (appending after `offset`); a broken connection keeps what arrived."""
    chunks = response.iter_content(CHUNK)
    try:
        first = next(chunks, b"")
        if not offset and looks_like_html(first):
            raise DownloadError("the server sent a web page instead of the file; nothing was saved")
        with open(partial, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=f"downloading {label}",
                     disable=None) as bar:  # None: no bar where stderr is not a terminal (a log file)
            for chunk in itertools.chain([first], chunks):
                f.write(chunk)
                bar.update(len(chunk))
    except requests.RequestException as e:
        have = partial.stat().st_size if partial.is_file() else 0
        raise DownloadError(f"the download broke off after {megabytes(have)} ({type(e).__name__}); "
                            f"{partial} is kept and the next attempt resumes from there",
                            f"the download broke off after {megabytes(have)} (kept, to resume)") from e
    have = partial.stat().st_size
    if total is not None and have < total:
        raise DownloadError(f"the connection closed after {megabytes(have)} of {megabytes(total)}; "
                            f"{partial} is kept and the next attempt resumes from there",
                            f"the connection closed after {megabytes(have)} (kept, to resume)")


def verify(partial, md5, size):
    """Delete the download and say so when its size or MD5 is not the expected one."""
    have = partial.stat().st_size
    if size is not None and have != size:
        partial.unlink()
        raise DownloadError(f"the downloaded file has {have:,} bytes instead of {size:,}; it was deleted",
                            "not the expected size")
    if md5 is not None:
        actual = file_md5(partial)
        if actual != md5:
            partial.unlink()
            raise DownloadError(f"the downloaded file has MD5 {actual}, not the expected {md5} (damaged or a "
                                f"different file); it was deleted", "MD5 mismatch (a damaged or different file)")


class FormsAndLinks(HTMLParser):
    """Each form's action with its named inputs, and every link's target, of a web page."""

    def __init__(self):
        super().__init__()
        self.forms, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("action") or "", {}))
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1][1][attrs["name"]] = attrs.get("value") or ""
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def confirmation_url(page, url, session):
    """Where Drive's "download anyway" confirmation leads, or None for any other page.

    Today's Drive puts a form with a `confirm` field on the page; older pages had a
    `confirm=` link, or only a `download_warning` cookie holding the token.
    """
    parsed = FormsAndLinks()
    parsed.feed(page)
    for action, inputs in parsed.forms:
        if "confirm" in inputs:
            return requests.Request("GET", urljoin(url, action), params=inputs).prepare().url
    for href in parsed.links:
        if "confirm=" in href:
            return urljoin(url, href)
    for name, token in session.cookies.items():
        if name.startswith("download_warning"):
            return requests.Request("GET", url, params={"confirm": token}).prepare().url
    return None
