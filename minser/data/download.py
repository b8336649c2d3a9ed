"""Download Berlin Emo-DB (CC0-1.0) from its official address, verified and extracted atomically.

The archive is fetched with urllib into a temporary folder next to the destination, its
``wav/*.wav`` members are extracted there and checked against the SHA-256 sums shipped with
minser (``minser/assets/emodb.sha256``), and only then is the folder renamed to
``<dest>/emodb``. A failure or an interruption leaves the destination as it was: the staging
folder is removed, and so are ``<dest>`` and its parents when the download created them (on SIGTERM too,
which is turned into a KeyboardInterrupt while downloading; SIGKILL cannot be caught).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.resources
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from minser.audio import file_problem
from minser.data.corpora import _expanded, _wav_files, data_dir
from minser.errors import DataError

DEFAULT_URL = "http://emodb.bilderbar.info/download/download.zip"
# A wav member at any depth of the archive whose folder is named wav: ".../wav/03a01Fa.wav".
_WAV_MEMBER = re.compile(r"(?:^|/)wav/(?P<name>[A-Za-z0-9_.-]+\.wav)$")
_CHUNK = 1 << 16


def emodb_sums() -> dict[str, str]:
    """The shipped SHA-256 sums of EmoDB's 535 wav files: ``{file name: hex digest}``."""
    text = importlib.resources.files("minser").joinpath("assets/emodb.sha256").read_text(encoding="utf-8")
    return parse_sums(text)


def parse_sums(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <name>`` per line) into ``{name: hex}``."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def _manual_hint(url: str, target: Path) -> str:
    return (
        f"download {url} yourself (EmoDB is CC0-1.0; any copy of the original 535 wav files works), "
        f"unzip it so that the files are at {target}/wav/03a01Fa.wav ..., "
        "or set MINSER_DATA to a folder that holds emodb/wav/"
    )


def _fetch(url: str, out: Path, progress: bool, target: Path) -> None:
    """Stream ``url`` into the file ``out``, printing progress to stderr every ~10%."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, out.open("wb") as handle:
            total = int(response.headers.get("Content-Length") or 0)
            done, reported = 0, 0
            while chunk := response.read(_CHUNK):
                _save(handle, chunk, target.parent)
                done += len(chunk)
                if progress and (done - reported >= max(total // 10, 4 << 20)):
                    reported = done
                    of_total = f" of {total / 1e6:.1f}" if total else ""
                    print(f"minser: downloaded {done / 1e6:.1f}{of_total} MB", file=sys.stderr)
        if done < total:  # the server closed the connection early; the zip would read as corrupt
            raise DataError(f"the download from {url} stopped after {done} of the {total} bytes announced (the "
                            "connection was cut); run the command again")
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"cannot download EmoDB: {url} answered HTTP {exc.code} {exc.reason}; "
            f"{_manual_hint(url, target)}"
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download EmoDB from {url} ({reason}); {_manual_hint(url, target)}") from exc
    except ValueError as exc:  # urllib's word for an address it cannot parse ("unknown url type", bad IPv6)
        raise DataError(f"--url {url!r} is not an address urllib can fetch ({exc}); give an http:// or https:// "
                        "address of the archive") from exc


def _save(handle: BinaryIO, chunk: bytes, dest: Path) -> None:
    """Write a downloaded chunk; a failure is this machine's (a full disk), named as such and not as a
    failed download, whose advice (fetch the archive by hand) would hit the same disk."""
    try:
        handle.write(chunk)
    except OSError as exc:
        raise DataError(f"cannot save the download in {dest} ({exc.strerror or exc}); free space there or "
                        "choose another destination (--dest or MINSER_DATA)") from exc


def _extract_wavs(archive: Path, wav_dir: Path, url: str, dest: Path) -> None:
    """Extract the archive's ``wav/*.wav`` members flat into ``wav_dir`` (names only: no path escapes), a
    staging folder inside ``dest``, which errors name (the staging folder is gone when they are read)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [(m, _WAV_MEMBER.search(m.filename)) for m in zipped.infolist() if not m.is_dir()]
            # Archives re-zipped on macOS add __MACOSX/.../._x.wav resource forks: not audio.
            wavs = [(m, match["name"]) for m, match in members
                    if match and not match["name"].startswith(".") and "__MACOSX/" not in m.filename]
            if not wavs:
                raise DataError(f"the archive from {url} holds no wav/*.wav files; is the URL the EmoDB download.zip?")
            _refuse_duplicates(wavs, url)
            wav_dir.mkdir(parents=True)
            for member, name in wavs:
                with zipped.open(member) as source, (wav_dir / name).open("wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
    # zlib.error: a damaged deflate stream; NotImplementedError: a compression method zipfile lacks;
    # RuntimeError: an encrypted member (EmoDB's archive has none).
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise DataError(
            f"the file from {url} is not a readable zip archive ({exc}); "
            "the download is corrupt or the URL is wrong"
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot extract the archive from {url} into {dest} ({exc.strerror or exc}); free space "
                        "there or choose another destination (--dest or MINSER_DATA)") from exc


def _refuse_duplicates(wavs: list[tuple[zipfile.ZipInfo, str]], url: str) -> None:
    """Raise DataError when two members would land on one file name: extracting flat would keep one silently."""
    seen: dict[str, str] = {}
    for member, name in wavs:
        if name in seen:
            raise DataError(
                f"the archive from {url} holds {name} twice ({seen[name]} and {member.filename}), so which "
                "recording is EmoDB's is unclear; check that the URL is the EmoDB download.zip, or unzip the "
                "archive yourself keeping one copy of each file in emodb/wav/"
            )
        seen[name] = member.filename


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_wavs(wav_dir: str | Path, sums: Mapping[str, str]) -> None:
    """Check that ``wav_dir`` holds exactly the files of ``sums`` with those SHA-256 digests.

    Raises DataError listing the missing, unexpected and mismatching files.
    """
    problems = _verification_problems(Path(wav_dir), sums)
    if problems:
        raise DataError(f"EmoDB files in {wav_dir} fail verification: {problems}")


def _emodb_files(wav_dir: Path) -> dict[str, Path]:
    """The wav files of ``wav_dir`` by the names :func:`~minser.data.load_emodb` reads them as (``03a01Fa.WAV``
    is ``03a01Fa.wav``, the name in the sums)."""
    return {f"{p.stem}.wav": p for p in _wav_files(wav_dir)}


def _verification_problems(wav_dir: Path, sums: Mapping[str, str]) -> str:
    """The missing, unexpected and mismatching files of ``wav_dir`` against ``sums``, as a phrase ('' if none)."""
    present = _emodb_files(wav_dir)
    missing = sorted(set(sums) - set(present))
    extra = sorted(set(present) - set(sums))
    wrong = sorted(name for name in set(sums) & set(present) if _sha256(present[name]) != sums[name].lower())
    problems = [
        f"{label} {len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        for label, names in (("missing", missing), ("unexpected", extra), ("checksum mismatch in", wrong))
        if names
    ]
    return "; ".join(problems)


def download_emodb(
    dest: str | Path | None = None,
    url: str = DEFAULT_URL,
    sums: Mapping[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Download, verify and extract EmoDB to ``<dest>/emodb/wav/``; return ``<dest>/emodb``.

    ``dest`` (``~`` is expanded) defaults to :func:`~minser.data.corpora.data_dir`. ``sums`` maps wav file
    names to SHA-256 hex digests (default: the sums shipped with minser). If ``<dest>/emodb/wav`` already
    holds every file of ``sums`` (by name, ``.WAV`` too) nothing is downloaded; one that misses some is a
    DataError.
    Raises DataError (saying how to get the files by hand) when the
    download, the archive or the verification fails; the destination is then left untouched, and the
    folders the call created for it (``dest`` and its missing parents) are removed again. So they are on Ctrl-C
    and on SIGTERM, which raises KeyboardInterrupt meanwhile (from the main thread, where SIGTERM had its
    default action).
    """
    # "--dest ~/x" reaches here unexpanded when the shell does not expand it (--dest=~/x in bash).
    dest = _expanded(str(dest), "--dest") if dest is not None else data_dir()
    target = dest / "emodb"
    expected = emodb_sums() if sums is None else sums
    if (target / "wav").is_dir():
        _check_present(target / "wav", expected)
        if progress:
            print(f"minser: EmoDB already present at {target}", file=sys.stderr)
        return target
    if os.path.lexists(target):
        problem = "exists but holds no wav/ folder" if target.is_dir() else file_problem(target) or "is a file"
        raise DataError(f"{target} {problem}; remove it and download again")
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest} is a file, not a folder; the destination is the folder that will hold emodb/ "
                        "(--dest or MINSER_DATA)")
    created = _missing_folders(dest)
    with _terminate_as_interrupt():
        try:
            _download_into(dest, url, expected, progress)
        except BaseException:  # an interruption too: the destination must be left as it was
            _remove_empty(created)
            raise
    if progress:
        print(f"minser: EmoDB verified ({len(expected)} files) at {target}", file=sys.stderr)
    return target


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM (``kill``, ``timeout``, ``docker stop``) raises KeyboardInterrupt, as Ctrl-C does: by
    default it ends the process at once, skipping the clean-up that leaves the destination as it was, and
    leaving the staging folder and its archive behind. The previous handler is restored on leaving. Only the
    main thread can set a handler, and one the program set itself (or SIG_IGN) is left to do its work."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_present(wav_dir: Path, sums: Mapping[str, str]) -> None:
    """Raise DataError when ``wav_dir`` misses some of the files of ``sums`` (by name: the digests of a
    folder in use are not recomputed): "already present" would send the user round in a loop. Names are
    compared as :func:`~minser.data.load_emodb` reads them: ``03a01Fa.WAV`` is ``03a01Fa.wav``."""
    missing = sorted(set(sums) - set(_emodb_files(wav_dir)))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{wav_dir} holds {len(sums) - len(missing)} of EmoDB's {len(sums)} files ({len(missing)} "
                        f"missing: {shown}); remove {wav_dir.parent} and download again")


def _download_into(dest: Path, url: str, sums: Mapping[str, str], progress: bool) -> None:
    """Fetch, extract and verify the archive in a staging folder inside ``dest``, then rename it to
    ``dest/emodb``; the staging folder is removed whatever happens."""
    target = dest / "emodb"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".emodb-download-", dir=dest))
    except OSError as exc:
        raise DataError(
            f"cannot write to {dest} ({exc}); "
            "choose a writable destination (--dest or MINSER_DATA)"
        ) from exc
    try:
        if progress:
            print(f"minser: downloading EmoDB from {url}", file=sys.stderr)
        archive = staging / "download.zip"
        _fetch(url, archive, progress, target)
        _extract_wavs(archive, staging / "emodb" / "wav", url, dest)
        problems = _verification_problems(staging / "emodb" / "wav", sums)
        if problems:  # named by the URL: the staging folder is removed below
            raise DataError(f"the EmoDB files of the archive from {url} fail verification: {problems}; "
                            f"{_manual_hint(url, target)}")
        try:
            os.replace(staging / "emodb", target)
        except OSError as exc:  # another download, or the user, made the target meanwhile
            raise DataError(f"cannot move the verified files to {target} ({exc.strerror}); if another download "
                            f"made it meanwhile use that one, else remove {target} and run the command again") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first: the folders a download would create."""
    missing = []
    # lexists: a dangling symlink is something the user made, not a folder of ours to remove later.
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; one that holds a file now (written by someone
    else meanwhile) is kept, and with it every folder above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # never created: the failure came before its mkdir
        except OSError:
            return
