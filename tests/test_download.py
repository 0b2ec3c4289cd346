"""download.fetch against a local test server that misbehaves the ways real ones do."""
import hashlib
import os
import socket
import time
from collections import namedtuple

import pytest

from weightfiles import download

PAYLOAD = os.urandom(3 << 20)  # several chunks, so a drop half-way leaves a real partial file
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_verified_download_appears_under_its_name_only(tmp_path, http_server):
    url = http_server.add("/model.pkl", PAYLOAD)
    path = download.fetch(url, tmp_path / "model.pkl", md5=PAYLOAD_MD5, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and names(tmp_path) == ["model.pkl"]


def test_a_broken_connection_is_resumed_with_a_range_request(tmp_path, http_server):
    url = http_server.add("/model.pkl", PAYLOAD, drop_after=len(PAYLOAD) // 2)
    with pytest.raises(download.DownloadError, match="kept and the next attempt resumes"):
        download.fetch(url, tmp_path / "model.pkl", md5=PAYLOAD_MD5)
    assert names(tmp_path) == ["model.pkl.partial"]  # nothing under the final name
    have = (tmp_path / "model.pkl.partial").stat().st_size
    assert 0 < have <= len(PAYLOAD) // 2

    download.fetch(url, tmp_path / "model.pkl", md5=PAYLOAD_MD5)
    assert (tmp_path / "model.pkl").read_bytes() == PAYLOAD and names(tmp_path) == ["model.pkl"]
    assert [r["range"] for r in http_server.requested("/model.pkl")] == [None, f"bytes={have}-"]


def test_a_server_that_ignores_range_makes_the_download_start_over(tmp_path, http_server):
    url = http_server.add("/model.pkl", PAYLOAD, ranges=False)
    (tmp_path / "model.pkl.partial").write_bytes(b"x" * 1000)  # an earlier attempt's bytes
    download.fetch(url, tmp_path / "model.pkl", md5=PAYLOAD_MD5)
    assert (tmp_path / "model.pkl").read_bytes() == PAYLOAD
    assert http_server.requested("/model.pkl")[0]["range"] == "bytes=1000-"


def test_ctrl_c_keeps_the_partial_file_for_the_next_attempt(tmp_path, http_server, monkeypatch):
    url = http_server.add("/model.pkl", PAYLOAD)

    class InterruptedBar(download.tqdm):
        def update(self, n=1):
            super().update(n)
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        download.fetch(url, tmp_path / "model.pkl")
    assert names(tmp_path) == ["model.pkl.partial"]
    monkeypatch.undo()
    download.fetch(url, tmp_path / "model.pkl", md5=PAYLOAD_MD5)
    assert http_server.requested("/model.pkl")[1]["range"] == f"bytes={download.CHUNK}-"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_a_web_page_is_never_saved(tmp_path, http_server, content_type):
    page = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
    url = http_server.add("/uc", page, content_type=content_type)
    with pytest.raises(download.DownloadError, match="web page instead of the file"):
        download.fetch(url + "?id=abc", tmp_path / "model.pkl")
    assert names(tmp_path) == []


DRIVE_FORM = ('<!DOCTYPE html><html><body><form id="download-form" action="/download" method="get">'
              '<input type="hidden" name="id" value="abc"><input type="hidden" name="export" value="download">'
              '<input type="hidden" name="confirm" value="t"><input type="submit" value="Download anyway">'
              '</form></body></html>')
OLD_DRIVE_LINK = '<html><body><a href="/download?export=download&amp;confirm=Xy_9&amp;id=abc">Download anyway</a></html>'


@pytest.mark.parametrize("page, headers, followed", [
    (DRIVE_FORM, {}, "/download?id=abc&export=download&confirm=t"),  # Drive today
    (OLD_DRIVE_LINK, {}, "/download?export=download&confirm=Xy_9&id=abc"),  # Drive until 2023
    ("<html>virus scan warning</html>", {"Set-Cookie": "download_warning_7=Tok3n; Path=/"},
     "/uc?id=abc&confirm=Tok3n"),  # Drive before that: the token only in a cookie
])
def test_drives_confirmation_page_is_answered(tmp_path, http_server, page, headers, followed):
    url = http_server.add("/uc", page.encode(), content_type="text/html; charset=utf-8", headers=headers)
    http_server.add(followed, PAYLOAD)
    download.fetch(url + "?id=abc", tmp_path / "model.pkl", md5=PAYLOAD_MD5)
    assert (tmp_path / "model.pkl").read_bytes() == PAYLOAD
    assert [r["path"] for r in http_server.requests] == ["/uc?id=abc", followed]


@pytest.mark.parametrize("size, md5, message", [
    (len(PAYLOAD) + 1, None, "offers 3,145,728 bytes, not the expected 3,145,729"),
    (None, hashlib.md5(b"another file").hexdigest(), f"MD5 {PAYLOAD_MD5}, not the expected"),
])
def test_a_wrong_file_is_deleted_and_named_in_the_error(tmp_path, http_server, size, md5, message):
    url = http_server.add("/model.pkl", PAYLOAD)
    with pytest.raises(download.DownloadError, match=message):
        download.fetch(url, tmp_path / "model.pkl", md5=md5, size=size)
    assert names(tmp_path) == []


def test_a_finished_download_of_the_wrong_size_is_deleted(tmp_path):
    partial = tmp_path / "model.pkl.partial"  # e.g. from a server that announced no size
    partial.write_bytes(PAYLOAD[:10])
    with pytest.raises(download.DownloadError, match="has 10 bytes instead of 9; it was deleted"):
        download.verify(partial, None, 9)
    assert names(tmp_path) == []


def test_missing_disk_space_is_found_before_writing(tmp_path, http_server, monkeypatch):
    url = http_server.add("/model.pkl", PAYLOAD)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: Usage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(download.DownloadError, match="not enough disk space .* needs 3.1 MB, 0.0 MB are free"):
        download.fetch(url, tmp_path / "model.pkl")
    assert names(tmp_path) == []


def test_http_errors_are_reported(tmp_path, http_server):
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(http_server.url("/missing.pkl"), tmp_path / "model.pkl")
    assert names(tmp_path) == []


def test_a_host_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(OSError) as error:
            download.fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/x", tmp_path / "x", timeout=(1, 1))
    assert time.monotonic() - started < 10
    assert download.short_reason(error.value) == "timed out"


def failure(url, tmp_path, **expected):
    with pytest.raises(OSError) as error:
        download.fetch(url, tmp_path / "x", **expected)
    return download.short_reason(error.value)


def test_failures_are_said_in_a_few_words(tmp_path, http_server):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/x"
    assert failure("http://nonexistent.invalid/x.pkl", tmp_path) == "no network: cannot resolve the host"
    assert failure(refused, tmp_path) == "connection refused"
    assert failure(http_server.url("/missing.pkl"), tmp_path) == "HTTP 404"
    url = http_server.add("/model.pkl", PAYLOAD)
    assert failure(url, tmp_path, md5=hashlib.md5(b"other").hexdigest()) == "MD5 mismatch (a damaged or different file)"
    assert download.short_reason(OSError("disk on fire\nsecond line")) == "disk on fire"
