"""EmoDB download against a local HTTP server (never the internet): verification, atomicity, errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import minser.data.download as download
from minser.data import load_emodb
from minser.data.__main__ import main
from minser.data.download import download_emodb, emodb_sums, parse_sums, verify_wavs
from minser.errors import DataError

WAVS = {"03a01Fa.wav": b"RIFF-happy-03", "03a01Nc.wav": b"RIFF-neutral-03", "16b10Wb.wav": b"RIFF-anger-16"}
SUMS = {name: hashlib.sha256(data).hexdigest() for name, data in WAVS.items()}


def make_zip(wavs: dict[str, bytes]) -> bytes:
    """An archive laid out like EmoDB's download.zip: wav/, label folders and text files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("erklaerung.txt", "Beschreibung")
        archive.writestr("lablaut/03a01Fa.lab", "labels")
        archive.writestr("wav/", "")
        for name, data in wavs.items():
            archive.writestr(f"wav/{name}", data)
    return buffer.getvalue()


class Server:
    """A local HTTP server on 127.0.0.1 answering ``files[path]`` (404 otherwise) and counting requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.announced: dict[str, int] = {}  # a Content-Length other than the body's (a transfer cut short)
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests += 1
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(owner.announced.get(self.path, len(body))))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join()


def test_good_archive_lands_verified(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server.files["/download.zip"] = make_zip(WAVS)
    target = download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS)
    assert target == tmp_path / "emodb"
    assert {p.name: p.read_bytes() for p in (target / "wav").iterdir()} == WAVS
    assert [p.name for p in tmp_path.iterdir()] == ["emodb"]  # no staging folder left
    assert "verified (3 files)" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="holds 3 of the corpus' 535 files"):  # a test archive, not all of EmoDB
        corpus = load_emodb(target, classes=7)
    got = [(u.label, u.speaker) for u in corpus.utterances]
    assert got == [("happiness", "03"), ("neutral", "03"), ("anger", "16")]
    # Present already: nothing is fetched again.
    assert download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS) == target
    assert server.requests == 1


@pytest.mark.parametrize(
    ("wavs", "message"),
    [
        ({**WAVS, "03a01Nc.wav": b"tampered"}, r"checksum mismatch in 1 \(03a01Nc\.wav\)"),
        ({k: v for k, v in WAVS.items() if k != "16b10Wb.wav"}, r"missing 1 \(16b10Wb\.wav\)"),
        ({**WAVS, "99x99Xx.wav": b"stray"}, r"unexpected 1 \(99x99Xx\.wav\)"),
    ],
)
def test_bad_archive_leaves_destination_untouched(
    server: Server, tmp_path: Path, wavs: dict[str, bytes], message: str
) -> None:
    server.files["/download.zip"] = make_zip(wavs)
    (tmp_path / "other").mkdir()
    url = f"{server.url}/download.zip"
    # Named by the URL, not by the staging folder, which is gone by the time the message is read.
    with pytest.raises(DataError, match=f"^the EmoDB files of the archive from {url} fail verification: {message}; "
                                        f"download {url} yourself"):
        download_emodb(tmp_path, url, sums=SUMS, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["other"]


@pytest.mark.parametrize("present", [[], ["03a01Fa.wav"]])
def test_a_partial_wav_folder_is_not_called_present(tmp_path: Path, present: list[str]) -> None:
    """"Already present" for an empty wav/ sent the user back to the download command that said it."""
    (tmp_path / "emodb" / "wav").mkdir(parents=True)
    for name in present:
        (tmp_path / "emodb" / "wav" / name).write_bytes(WAVS[name])
    with pytest.raises(DataError, match=rf"emodb/wav holds {len(present)} of EmoDB's 3 files \({3 - len(present)} "
                                        rf"missing: .*\); remove .*emodb and download again"):
        download_emodb(tmp_path, "http://127.0.0.1:9/never-contacted", sums=SUMS)


def test_a_complete_folder_of_upper_case_wav_names_is_present(
    emodb_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder of 03a01Fa.WAV ... (which load_emodb reads) was called 0 of 535, with advice to delete it, and
    failed verify_wavs as 535 missing files."""
    wav_dir = tmp_path / "emodb" / "wav"
    wav_dir.mkdir(parents=True)
    for name in emodb_sums():
        (wav_dir / f"{Path(name).stem}.WAV").symlink_to(emodb_root / "wav" / name)
    assert main(["download", "emodb", "--dest", str(tmp_path), "--url", "http://127.0.0.1:9/never-contacted"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "emodb")
    assert f"EmoDB already present at {tmp_path / 'emodb'}" in captured.err
    assert len(load_emodb(tmp_path / "emodb", classes=7)) == 535
    verify_wavs(wav_dir, emodb_sums())


def test_macos_resource_forks_in_the_archive_are_skipped(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in WAVS.items():
            archive.writestr(f"emodb/wav/{name}", data)
            archive.writestr(f"__MACOSX/emodb/wav/._{name}", b"resource fork")
    server.files["/download.zip"] = buffer.getvalue()
    target = download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert sorted(p.name for p in (target / "wav").iterdir()) == sorted(WAVS)


def test_a_transfer_cut_short_says_so(server: Server, tmp_path: Path) -> None:
    body = make_zip(WAVS)
    server.files["/download.zip"], server.announced["/download.zip"] = body[:100], len(body)
    with pytest.raises(DataError, match=rf"stopped after 100 of the {len(body)} bytes announced \(the connection "
                                        r"was cut\); run the command again"):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_link_at_the_target_is_refused_before_downloading(server: Server, tmp_path: Path) -> None:
    server.files["/download.zip"] = make_zip(WAVS)
    (tmp_path / "emodb").symlink_to(tmp_path / "moved")
    with pytest.raises(DataError, match=r"emodb is a symbolic link to .*moved, which does not exist; remove it"):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert server.requests == 0


def test_a_target_made_meanwhile_is_a_data_error(server: Server, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/download.zip"] = make_zip(WAVS)

    def taken(source: object, target: object) -> None:
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(download.os, "replace", taken)
    with pytest.raises(DataError, match=r"cannot move the verified files to .*emodb \(Directory not empty\); if "
                                        "another download made it meanwhile use that one"):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/download.zip"
    with pytest.raises(DataError) as caught:
        download_emodb(tmp_path / "data", url, sums=SUMS, progress=False)
    message = str(caught.value)
    assert f"cannot download EmoDB from {url}" in message
    assert f"download {url} yourself" in message
    assert f"{tmp_path / 'data' / 'emodb'}/wav/03a01Fa.wav" in message
    assert "MINSER_DATA" in message
    assert list(tmp_path.iterdir()) == []  # the --dest the command created is gone again


def test_http_error_and_non_zip(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"answered HTTP 404 Not Found; download .* yourself"):
        download_emodb(tmp_path, f"{server.url}/missing.zip", sums=SUMS, progress=False)
    server.files["/page.html"] = b"<html>moved</html>"
    with pytest.raises(DataError, match="not a readable zip archive"):
        download_emodb(tmp_path, f"{server.url}/page.html", sums=SUMS, progress=False)
    server.files["/other.zip"] = make_zip({})
    with pytest.raises(DataError, match=r"holds no wav/\*\.wav files"):
        download_emodb(tmp_path, f"{server.url}/other.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def _failing(server: Server, failure: str) -> str:
    """The address of a download that fails as ``failure`` says: an HTTP 404, or an archive whose sums mismatch."""
    if failure == "http 404":
        return f"{server.url}/missing.zip"
    server.files["/download.zip"] = make_zip({**WAVS, "03a01Nc.wav": b"tampered"})
    return f"{server.url}/download.zip"


@pytest.mark.parametrize("failure", ["http 404", "checksum mismatch"])
def test_a_failure_removes_the_folders_it_created(server: Server, tmp_path: Path, failure: str) -> None:
    with pytest.raises(DataError):
        download_emodb(tmp_path / "new" / "data", _failing(server, failure), sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", ["http 404", "checksum mismatch"])
def test_a_failure_keeps_the_folders_that_were_there(server: Server, tmp_path: Path, failure: str) -> None:
    (tmp_path / "mine").mkdir()  # an empty --dest the user made: theirs to keep
    with pytest.raises(DataError):
        download_emodb(tmp_path / "mine", _failing(server, failure), sums=SUMS, progress=False)
    (tmp_path / "parent").mkdir()
    with pytest.raises(DataError):
        download_emodb(tmp_path / "parent" / "data", _failing(server, failure), sums=SUMS, progress=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["mine", "parent"]


def test_cli_failure_leaves_no_dest(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "new" / "data"
    assert main(["download", "emodb", "--dest", str(dest), "--url", f"{server.url}/missing.zip"]) == 2
    assert "error: cannot download EmoDB" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_interruption_leaves_nothing(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/download.zip"] = make_zip(WAVS)
    handlers = []

    def interrupted(*args: object) -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_verification_problems", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        download_emodb(tmp_path / "new" / "data", f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []
    # SIGTERM is caught while downloading only (see test_sigterm_while_downloading_leaves_nothing).
    assert signal.SIG_DFL not in handlers and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_existing_folder_without_wav(tmp_path: Path) -> None:
    (tmp_path / "emodb").mkdir()
    with pytest.raises(DataError, match="holds no wav/ folder; remove it"):
        download_emodb(tmp_path, "http://127.0.0.1:9/never-contacted", sums=SUMS)


def test_cli(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    server.files["/download.zip"] = make_zip(WAVS)
    url = f"{server.url}/download.zip"
    # With the shipped sums the toy archive must fail verification: exit 2 and a clear message.
    assert main(["download", "emodb", "--dest", str(tmp_path), "--url", url]) == 2
    assert "fail verification: missing 532" in capsys.readouterr().err
    monkeypatch.setattr(download, "emodb_sums", lambda: SUMS)
    assert main(["download", "emodb", "--dest", str(tmp_path), "--url", url]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "emodb")
    with pytest.raises(SystemExit) as exited:
        main(["download", "--help"])
    assert exited.value.code == 0
    assert "--dest" in capsys.readouterr().out


def test_cli_dest_with_a_tilde_lands_in_the_home_folder(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """bash leaves ~ as it is in --dest=~/data; it made a folder named ~ in the current one."""
    server.files["/download.zip"] = make_zip(WAVS)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setattr(download, "emodb_sums", lambda: SUMS)
    assert main(["download", "emodb", "--dest=~/data", "--url", f"{server.url}/download.zip"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "data" / "emodb")
    assert sorted(p.name for p in (home / "data" / "emodb" / "wav").iterdir()) == sorted(WAVS)
    assert list(work.iterdir()) == []
    assert main(["download", "emodb", "--dest", "~nosuchuser-minser/data", "--url", "http://127.0.0.1:9/never"]) == 2
    assert ("error: --dest='~nosuchuser-minser/data': cannot find the home folder it names"
            in capsys.readouterr().err)
    assert list(work.iterdir()) == []


def test_shipped_sums_match_real_emodb(emodb_root: Path) -> None:
    sums = emodb_sums()
    assert len(sums) == 535
    assert sums == parse_sums((emodb_root / "SHA256SUMS").read_text())
    verify_wavs(emodb_root / "wav", sums)


def _damaged(kind: str) -> bytes:
    """A one-member archive that zipfile opens but cannot read: a broken deflate stream, or a member marked
    encrypted (its general-purpose flag bit 0, in the local and the central header)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("wav/03a01Fa.wav", b"RIFF" + bytes(range(256)) * 40)
    raw = bytearray(buffer.getvalue())
    if kind == "deflate":
        start = raw.index(b"wav/03a01Fa.wav") + len("wav/03a01Fa.wav")  # the data follows the local header's name
        raw[start:start + 2] = b"\xff\xff"  # block type 3: invalid
    else:
        raw[6] |= 1
        raw[raw.index(b"PK\x01\x02") + 8] |= 1
    return bytes(raw)


@pytest.mark.parametrize(("kind", "detail"), [("deflate", "Error -3 while decompressing"), ("encrypted", "encrypted")])
def test_an_unreadable_member_is_a_data_error(server: Server, tmp_path: Path, kind: str, detail: str) -> None:
    server.files["/download.zip"] = _damaged(kind)
    url = f"{server.url}/download.zip"
    with pytest.raises(DataError, match=f"the file from {url} is not a readable zip archive \\(.*{detail}"):
        download_emodb(tmp_path, url, sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_extraction_is_a_data_error_and_leaves_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/download.zip"] = make_zip(WAVS)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download.shutil, "copyfileobj", disk_full)
    # It named the staging folder inside tmp_path, deleted by the time the message was read.
    with pytest.raises(DataError, match=rf"cannot extract the archive from .* into {re.escape(str(tmp_path))} "
                                        r"\(No space left on device\); free space"):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_downloading_is_not_called_a_failed_download(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said 'cannot download EmoDB from URL (No space left on device)' and advised fetching it by hand."""
    server.files["/download.zip"] = make_zip(WAVS)

    class FullDisk(io.BytesIO):
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: FullDisk() if "w" in mode else open(self, mode))
    with pytest.raises(DataError, match=rf"^cannot save the download in {re.escape(str(tmp_path))} \(No space left "
                                        r"on device\); free space there or choose another destination"):
        download_emodb(tmp_path, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_members_outside_wav_land_flat_inside_it(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../wav/03a01Fa.wav", WAVS["03a01Fa.wav"])
        archive.writestr("/abs/wav/03a01Nc.wav", WAVS["03a01Nc.wav"])
        archive.writestr("x/../../wav/16b10Wb.wav", WAVS["16b10Wb.wav"])
        archive.writestr("wav/../../evil.wav", b"escape")  # not a wav/NAME.wav member: ignored
    server.files["/download.zip"] = buffer.getvalue()
    dest = tmp_path / "data"
    target = download_emodb(dest, f"{server.url}/download.zip", sums=SUMS, progress=False)
    assert {p.name: p.read_bytes() for p in (target / "wav").iterdir()} == WAVS
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "data", "data/emodb", "data/emodb/wav", *(f"data/emodb/wav/{name}" for name in sorted(WAVS))]


def test_cli_bad_url_and_a_file_as_dest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "emodb", "--dest", str(tmp_path / "data"), "--url", "emodb.zip"]) == 2
    assert ("error: --url 'emodb.zip' is not an address urllib can fetch (unknown url type: 'emodb.zip'); give an "
            "http:// or https:// address" in capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert main(["download", "emodb", "--dest", str(tmp_path / "file"), "--url", "http://127.0.0.1:9/never"]) == 2
    assert f"error: {tmp_path / 'file'} is a file, not a folder; the destination" in capsys.readouterr().err


def test_one_wav_name_in_two_folders_is_refused(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in WAVS.items():
            archive.writestr(f"wav/{name}", data)
        archive.writestr("other/wav/03a01Fa.wav", b"RIFF-another-take")
    server.files["/download.zip"] = buffer.getvalue()
    url = f"{server.url}/download.zip"
    with pytest.raises(DataError, match=r"holds 03a01Fa\.wav twice \(wav/03a01Fa\.wav and other/wav/03a01Fa\.wav\)"):
        download_emodb(tmp_path / "data", url, sums=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_one_line_and_exit_130(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback: the command caught minser's errors alone."""
    import minser.data.__main__ as command

    server.files["/download.zip"] = make_zip(WAVS)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_verification_problems", interrupted)
    monkeypatch.setattr(command, "load_corpus", interrupted)
    try:
        downloading = main(["download", "emodb", "--dest", str(tmp_path / "new" / "data"),
                            "--url", f"{server.url}/download.zip"])
        err = capsys.readouterr().err
        informing = main(["info", "emodb"])
    except KeyboardInterrupt:  # uncaught, it would end the pytest session rather than fail
        pytest.fail("Ctrl-C escaped python -m minser.data")
    assert downloading == informing == 130
    assert err.endswith("\ninterrupted; nothing of the download was kept: run the command again to download EmoDB\n")
    assert list(tmp_path.iterdir()) == []  # as the line says
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_info_to_a_reader_that_stopped_early_ends_quietly(tmp_path: Path, unbuffered: str) -> None:
    """`python -m minser.data info ... | head -1`: the closed pipe gave a BrokenPipeError traceback (stdout
    unbuffered), or "Exception ignored ... BrokenPipeError" and exit status 120 from the flush at exit."""
    for label in ("anger", "neutral"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.wav").write_bytes(b"RIFF")  # the command counts files, it reads none
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "minser.data", "info", str(tmp_path)], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_sigterm_while_downloading_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill, timeout and docker stop send SIGTERM, whose default action skipped the clean-up: the staging folder
    with its half-downloaded archive and the folders the download created were left behind."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    stop = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            try:
                while not stop.wait(0.05):  # a chunk now and then: the download stays under way
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
            except OSError:  # the client is gone
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    dest = tmp_path / "new" / "data"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "minser.data", "download", "emodb", "--dest", str(dest),
                                 "--url", f"http://127.0.0.1:{httpd.server_address[1]}/download.zip"],
                                stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        try:
            for _ in range(600):  # until the archive is being written (a few seconds at most)
                if any(dest.glob(".emodb-download-*/download.zip")) or proc.poll() is not None:
                    break
                time.sleep(0.01)
            assert any(dest.glob(".emodb-download-*/download.zip")), "the download did not start"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()  # a no-op once it has ended
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert list(tmp_path.iterdir()) == []
    assert proc.returncode == 130  # as Ctrl-C: the command's message is the one of an interruption
    assert err.endswith("\ninterrupted; nothing of the download was kept: run the command again to download EmoDB\n")
