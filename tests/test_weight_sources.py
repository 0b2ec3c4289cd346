"""Where a run's weights come from: the default source chain, -network, and the cache lock.

NVIDIA's servers are stood in for by a local test server, put into releases.SOURCES by
monkeypatch (use_sources); the network is a tiny NVIDIA-format StyleGAN-1 pickle.
"""
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import asdict

import pytest
import torch

from runkit import runlog
from runkit import exits
from weightfiles import families, releases, weight_sources, weights
import convert_weights
import run
from conftest import QUICK_FIT_DRAWS, ROOT, TINY_INPUT, TINY_MODEL, Payload, convert_quickly, wait_for
from runkit.files import file_md5, folder_lock, preparing
from stylegan1_pickles import Network, dumps, tiny_pickle_bytes


def use_sources(monkeypatch, sources=None):
    """The releases' sources as `sources` ({name: [Source, ...]}) gives them, the others as they are;
    gaussian fits of few draws."""
    for name, listed in (sources or {}).items():
        monkeypatch.setitem(releases.SOURCES, name, listed)
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)


def source(label, url, file, md5=None, size=None):
    return releases.Source(label, url, file, md5, size)


def search(cache_dir, out_dir, *flags):
    """The float64 loss trajectory of a short run.py search on the tiny input."""
    code = run.main(["-input_dir", str(TINY_INPUT.parent), "-output_dir", str(out_dir), "-cache_dir", str(cache_dir),
                     "-seed", "0", "-steps", "3", "-precision", "fp64", *flags])
    assert code == 0
    return [record.trajectory for record in runlog.read(out_dir / runlog.LOG_NAME)]


def test_a_network_url_is_converted_once_and_searches_like_the_converted_files(tmp_path, http_server, tiny_pickle,
                                                                              monkeypatch):
    use_sources(monkeypatch)
    url = http_server.add("/networks/tiny-net.pkl", tiny_pickle)
    from_url = search(tmp_path / "cache", tmp_path / "a", "-network", url)
    converted = tmp_path / "cache" / "tiny-net"
    written = {p.name for p in converted.iterdir()}
    assert {"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD} <= written
    assert weights.read_record(converted)["source"] == url
    assert not (converted / "tiny-net.pkl").exists()  # the pickle is dropped without -keep_pickle

    (tmp_path / "tiny-net.pkl").write_bytes(tiny_pickle)
    convert_quickly(tmp_path / "tiny-net.pkl", tmp_path / "direct")
    assert from_url == search(tmp_path / "direct", tmp_path / "b")

    http_server.stop()  # a second run must not need the network at all
    assert search(tmp_path / "cache", tmp_path / "c", "-network", url) == from_url
    assert len(http_server.requests) == 1


def test_a_local_pickle_is_converted_again_only_when_it_changes(tmp_path, tiny_pickle, monkeypatch, caplog):
    use_sources(monkeypatch)
    pkl = tmp_path / "mine.pkl"
    pkl.write_bytes(tiny_pickle)
    folder = weight_sources.network_folder(pkl, tmp_path / "cache")
    assert folder == tmp_path / "cache" / "mine"
    assert "not one of NVIDIA's released" in caplog.records[0].message  # accepted, with a warning
    assert caplog.records[0].levelname == "WARNING"
    written = (folder / "synthesis.pt").stat().st_mtime_ns

    assert weight_sources.network_folder(pkl, tmp_path / "cache") == folder
    assert (folder / "synthesis.pt").stat().st_mtime_ns == written

    pkl.write_bytes(tiny_pickle_bytes(seed=11))
    weight_sources.network_folder(pkl, tmp_path / "cache")
    reconverted = weights.load_tensors(folder / "synthesis.pt")
    other = tmp_path / "other"
    convert_quickly(pkl, other)
    assert all(torch.equal(v, weights.load_tensors(other / "synthesis.pt")[k]) for k, v in reconverted.items())
    assert weights.read_record(folder)["md5"] == file_md5(pkl)


def test_a_folder_of_pt_files_is_used_as_it_is(tmp_path):
    assert weight_sources.network_folder(TINY_MODEL, tmp_path / "cache") == TINY_MODEL
    assert not (tmp_path / "cache").exists()
    with pytest.raises(weights.WeightsError, match="holds no generator"):
        weight_sources.network_folder(tmp_path, tmp_path / "cache")


def test_a_pt_file_stands_for_its_folder(tmp_path):
    assert weight_sources.network_folder(TINY_MODEL / "synthesis.pt", tmp_path / "cache") == TINY_MODEL
    assert not (tmp_path / "cache").exists()
    (tmp_path / "stray.pt").write_bytes(b"")
    with pytest.raises(weights.WeightsError, match="holds no generator"):
        weight_sources.network_folder(tmp_path / "stray.pt", tmp_path / "cache")


def test_a_missing_network_is_a_one_line_error(tmp_path, capsys):
    code = run.main(["-input_dir", str(TINY_INPUT.parent), "-output_dir", str(tmp_path / "out"),
                     "-network", str(tmp_path / "nothing.pkl")])
    assert code == exits.EXIT_SETUP_FAILED
    assert capsys.readouterr().err == f"error: -network {tmp_path / 'nothing.pkl'}: no such file or folder\n"


def test_a_typo_of_a_packaged_generators_name_is_answered_with_the_packaged_names(tmp_path, capsys):
    packaged = "no such file or folder, nor a packaged generator (dcgan-digiface)"
    code = run.main(["-input_dir", str(TINY_INPUT.parent), "-output_dir", str(tmp_path / "out"),
                     "-network", "dcgan_digiface", "-cache_dir", str(tmp_path / "cache")])
    assert code == exits.EXIT_SETUP_FAILED
    assert capsys.readouterr().err == f"error: -network dcgan_digiface: {packaged}: did you mean dcgan-digiface?\n"
    with pytest.raises(weights.WeightsError) as far:
        weight_sources.network_folder("vgg19", tmp_path / "cache")
    assert str(far.value) == f"network='vgg19': {packaged}"  # nothing close to suggest


def test_the_api_names_the_argument_where_a_script_names_the_flag(tmp_path):
    import PULSE
    with pytest.raises(weights.WeightsError) as missing:
        PULSE.load(network=tmp_path / "nothing.pkl", cache_dir=tmp_path / "cache")
    assert str(missing.value) == f"network={str(tmp_path / 'nothing.pkl')!r}: no such file or folder"
    assert missing.value.script_words == f"-network {tmp_path / 'nothing.pkl'}: no such file or folder"


def test_2020_files_without_any_gaussian_fit_get_the_2020_mapping(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(families, "BUNDLED_FIT", tmp_path / "no_bundled_fit.pt")
    folder = tmp_path / "files_2020"
    folder.mkdir()
    shutil.copy(TINY_MODEL / "synthesis.pt", folder)
    mapping = http_server.add("/mapping.pt", b"the 2020 mapping.pt")  # what is tested is where it lands
    use_sources(monkeypatch, {"2020 mapping": [
        source("the 2020 link", http_server.url("/gone.pt"), "mapping.pt"), source("a mirror", mapping, "mapping.pt")]})
    assert weight_sources.weights_folder(folder, tmp_path / "cache") == folder
    assert (folder / "mapping.pt").is_file() and not weights.lacks_gaussian_fit(folder)

    (folder / "mapping.pt").unlink()
    use_sources(monkeypatch, {"2020 mapping": [
        source("the 2020 link", http_server.url("/gone.pt"), "mapping.pt")]})
    with pytest.raises(weights.WeightsError, match="(?s)has no gaussian_fit.pt.*the 2020 link: HTTP 404.*mapping.pt"):
        weight_sources.weights_folder(folder, tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "synthesis.pt"]  # the lock of the first fetch


def test_url_folder_names():
    assert weight_sources.url_folder_name("https://example.com/a/karras2019.pkl") == "karras2019"
    drive = weight_sources.url_folder_name("https://drive.google.com/uc?id=1MEG")
    assert drive.startswith("uc-") and drive != weight_sources.url_folder_name("https://drive.google.com/uc?id=1MGq")


@pytest.mark.parametrize("keep_pickle", [False, True])
def test_the_default_chain_fetches_verifies_and_converts(tmp_path, http_server, tiny_pickle, monkeypatch, keep_pickle):
    md5 = hashlib.md5(tiny_pickle).hexdigest()
    use_sources(monkeypatch, {
        "2020": [source("the 2020 link", http_server.url("/gone/synthesis.pt"), "synthesis.pt")],  # 404
        "ffhq": [source("test CDN", http_server.add("/ffhq.pkl", tiny_pickle), "ffhq.pkl", md5, len(tiny_pickle))],
    })
    cache = tmp_path / "cache"
    weight_sources.fill_default_cache(cache, keep_pickle)
    expected = ({"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD, ".lock"}
                | ({"ffhq.pkl"} if keep_pickle else set()))
    assert {p.name for p in cache.iterdir()} == expected
    synthesis, _ = weights.load_generator(cache)
    assert synthesis.resolution == 32
    weight_sources.fill_default_cache(cache, keep_pickle)  # a filled cache is left alone
    assert len(http_server.requested("/ffhq.pkl")) == 1


def test_when_every_source_fails_one_message_names_each(tmp_path, http_server, tiny_pickle, monkeypatch, capsys):
    marker = tmp_path / "MARKER"
    malicious = dumps((Network("Gs", [("lod", Payload(os.system, f"touch {marker}"))]),) * 3)
    md5 = hashlib.md5(tiny_pickle).hexdigest()
    use_sources(monkeypatch, {
        "2020": [source("the 2020 link", http_server.add("/synthesis.pt", b"not a torch file" * 100), "synthesis.pt")],
        "ffhq": [source("test page", http_server.add("/uc", b"<html>Quota exceeded</html>", "text/html"), "f.pkl", md5),
                 source("test short", http_server.add("/short.pkl", tiny_pickle[:-5]), "f.pkl", md5, len(tiny_pickle)),
                 source("test evil", http_server.add("/evil.pkl", malicious), "f.pkl", md5)],
    })
    cache = tmp_path / "cache"
    code = run.main(["-input_dir", str(TINY_INPUT.parent), "-output_dir", str(tmp_path / "out"),
                     "-cache_dir", str(cache)])
    assert code == exits.EXIT_SETUP_FAILED
    err = capsys.readouterr().err
    error = err[err.index("error: "):]  # after the progress bars
    assert error.startswith(f"error: no generator weights in {cache}/, and every source failed:")
    for reason in ("the 2020 link", "not a readable PyTorch weights file", "test page", "web page instead of the file",
                   "test short", "not the expected size", "test evil", "MD5 mismatch", "convert_weights.py",
                   "synthesis.pt"):
        assert reason in error
    assert not marker.exists()  # the wrong file was never unpickled
    assert not cache.exists()  # the run found no cache folder and leaves none


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_network_the_message_is_short_and_names_each_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a cache folder named as users name it
    use_sources(monkeypatch, {
        "2020": [source("the 2020 link", "http://nonexistent.invalid/synthesis.pt", "synthesis.pt")],
        "ffhq": [source("test CDN", f"http://127.0.0.1:{closed_port()}/ffhq.pkl", "ffhq.pkl")]})
    with pytest.raises(weights.WeightsError) as error:
        weight_sources.weights_folder(None, "cache")
    lines = str(error.value).splitlines()
    assert all(len(line) < 120 for line in lines), lines
    assert "  - the 2020 link: no network: cannot resolve the host" in lines
    assert "  - test CDN: connection refused" in lines
    assert any("convert_weights.py" in line for line in lines) and any("-network" in line for line in lines)
    assert not (tmp_path / "cache").exists()


def test_a_failed_network_url_leaves_the_cache_as_it_was(tmp_path, http_server, monkeypatch):
    use_sources(monkeypatch)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(weights.WeightsError, match="HTTP 404"):
        weight_sources.weights_folder(http_server.url("/gone.pkl"), cache)
    assert not (tmp_path / "deep").exists()
    cache.mkdir(parents=True)
    with pytest.raises(weights.WeightsError, match="HTTP 404"):
        weight_sources.weights_folder(http_server.url("/gone.pkl"), cache)
    assert list(cache.iterdir()) == []  # the folder the user made stays, without a lock file


def test_convert_weights_downloads_a_release(tmp_path, http_server, tiny_pickle, monkeypatch):
    md5 = hashlib.md5(tiny_pickle).hexdigest()
    use_sources(monkeypatch, {
        "celebahq": [source("test mirror", http_server.add("/c.pkl", tiny_pickle), "celebahq.pkl", md5)]})
    assert convert_weights.main(["--download", "celebahq", "--keep_pickle", "-cache_dir", str(tmp_path / "cache")]) == 0
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {
        "synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD, "celebahq.pkl", ".lock"}
    assert file_md5(tmp_path / "cache" / "celebahq.pkl") == md5


def test_every_source_of_an_nvidia_release_is_checked_by_its_md5():
    for name in releases.DOWNLOADABLE:
        assert {s.md5 for s in releases.SOURCES[name]} == {releases.NVIDIA_PICKLES[name].md5}


def test_the_folder_lock_makes_a_second_holder_wait_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pulse")
    order = []

    def second():
        with folder_lock(tmp_path, poll_seconds=0.05):
            order.append("second")

    with folder_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: caplog.messages, timeout=10)
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
    assert caplog.messages == [f"waiting for another process that is preparing {tmp_path}/ (it holds {tmp_path}/.lock)"]


def test_a_process_waiting_on_a_failed_preparation_locks_afresh(tmp_path, caplog):
    """The failing holder deletes the lock file and the folder it made; the waiter makes and locks new ones."""
    caplog.set_level(logging.INFO, logger="pulse")
    folder, held = tmp_path / "cache", []

    def second():
        with folder_lock(folder, poll_seconds=0.05):
            held.append((folder / ".lock").is_file())

    with pytest.raises(RuntimeError, match="no weights"):
        with preparing(folder):
            thread = threading.Thread(target=second)
            thread.start()
            wait_for(lambda: caplog.messages, timeout=10)
            raise RuntimeError("no weights")
    thread.join(timeout=10)
    assert held == [True] and len(caplog.messages) == 1


@pytest.mark.slow
def test_two_runs_on_one_empty_cache_download_once_and_both_finish(tmp_path, http_server, tiny_pickle):
    md5 = hashlib.md5(tiny_pickle).hexdigest()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PULSE_DEVICE": "cpu"}
    patch = json.dumps({"fit_draws": QUICK_FIT_DRAWS, "sources": {
        "2020": [], "ffhq": [asdict(source("test CDN", http_server.add("/ffhq.pkl", tiny_pickle), "ffhq.pkl", md5))]}})
    cache, logs, processes = tmp_path / "cache", [tmp_path / "run0.txt", tmp_path / "run1.txt"], []
    with folder_lock(cache):  # both runs start while the cache is busy, as two shells would
        for i, log in enumerate(logs):
            with open(log, "w") as output:
                processes.append(subprocess.Popen(
                    [sys.executable, "tests/patched_script.py", patch, "run.py", "-input_dir", str(TINY_INPUT.parent),
                     "-output_dir", str(tmp_path / f"out{i}"), "-cache_dir", str(cache), "-seed", "0", "-steps", "1"],
                    cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT))
        wait_for(lambda: all("waiting for another process" in log.read_text() for log in logs), timeout=240)
    for process, log in zip(processes, logs):
        assert process.wait(timeout=300) == 0, log.read_text()
    assert len(http_server.requested("/ffhq.pkl")) == 1
    assert all((tmp_path / f"out{i}" / f"{TINY_INPUT.stem}.png").is_file() for i in range(2))
