"""Atomic writes: the old file or the whole new one, nothing left behind, a plain open's permissions."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from minser import files
from minser.errors import ConfigError


def test_writing_onto_a_folder_or_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="folder is a folder; name a file"):
        files.write_json(tmp_path / "folder", {})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write .*afile/r\.json"):
        files.write_json(tmp_path / "afile" / "r.json", {})


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = files.write_json(tmp_path / "r.json", {"wa": 1.0})

    def explode(file) -> None:
        file.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(path, explode, mode="w")
    assert path.read_text() == '{\n  "wa": 1.0\n}\n'
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    """mkstemp's temporaries are 0o600: a result written through one must still be as readable as open() makes it."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = files.write_json(tmp_path / "results.json", {"ua": 1.0})
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == files.FILE_MODE


def test_an_existing_file_keeps_its_permissions_and_a_symlink_is_written_through(tmp_path: Path) -> None:
    """As with a plain open: the rename made a private (0o600) file world-readable and replaced a symlink by
    a regular file, leaving the file it pointed to old."""
    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    files.write_json(private, {"ua": 1.0})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    shared, link = tmp_path / "shared" / "results.json", tmp_path / "results.json"
    shared.parent.mkdir()
    shared.write_text("old")
    link.symlink_to(shared)
    assert files.write_json(link, {"ua": 2.0}) == link
    assert link.is_symlink() and shared.read_text() == '{\n  "ua": 2.0\n}\n'
    assert sorted(p.name for p in shared.parent.iterdir()) == ["results.json"]  # no temporary left


def test_the_data_command_does_not_import_torch() -> None:
    """python -m minser.data (download, info) and the feature cache write through minser.files; reached
    through minser.checkpoint, that cost a torch import (2 s of a 3 s start-up) they never use."""
    code = "import sys, minser.files, minser.data; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_a_write_that_fails_midway_names_the_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    """A full disk or a file size limit: before, a bare OSError (or torch.save's RuntimeError, naming neither file
    nor cause) reached every command as a traceback."""
    path = files.write_json(tmp_path / "r.json", {"wa": 1.0})
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "from minser import checkpoint, files; from minser.errors import ConfigError\n"
            "for write in (lambda: files.atomic_write(sys.argv[1], lambda f: f.write(b'x' * 100000)),\n"
            "              lambda: checkpoint.save(sys.argv[1], spec={}, labels=[], frontend={},\n"
            "                                      state_dict={'w': __import__('torch').zeros(100000)})):\n"
            "    try: write()\n"
            "    except ConfigError as exc: print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"cannot write {path}: File too large; the old file") for line in lines), \
        done.stdout + done.stderr
    assert path.read_text() == '{\n  "wa": 1.0\n}\n' and os.listdir(tmp_path) == ["r.json"]


def test_only_writer_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    with files.only_writer(tmp_path / "run", "give another --out"):
        (tmp_path / "run" / "config.json").write_text("{}")
        with pytest.raises(ConfigError, match=rf"run is in use by process {os.getpid()}; give another --out$"):
            with files.only_writer(tmp_path / "run", "give another --out"):
                pass
    with files.only_writer(tmp_path / "run", "x"):  # released with the block
        pass
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".minser.lock", "config.json"]


def test_only_writer_removes_a_folder_it_created_if_left_empty(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with files.only_writer(tmp_path / "a" / "run", "x"):
            raise RuntimeError("failed before writing anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and not any((tmp_path / "a").iterdir())
    (tmp_path / "kept").mkdir()
    with files.only_writer(tmp_path / "kept", "x"):
        pass
    assert (tmp_path / "kept").is_dir()  # it existed before


def test_a_killed_holder_leaves_the_folder_free(tmp_path: Path) -> None:
    code = ("import sys, time; from minser import files\n"
            "with files.only_writer(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid};"):
            with files.only_writer(tmp_path, "x"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with files.only_writer(tmp_path, "x"):
        pass


def test_check_output_refuses_a_file_the_command_reads(tmp_path: Path) -> None:
    """svm_baseline --data m.csv --out m.csv replaced the manifest with the results; any spelling of the input
    counts (a path through .., a link to it)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n")
    (tmp_path / "link.json").symlink_to(manifest)
    for path in (manifest, tmp_path / "sub" / ".." / "m.csv", tmp_path / "link.json"):
        with pytest.raises(ConfigError, match=f"^--out {re.escape(str(path))} is {re.escape(str(manifest))}, which "
                                              "--data reads: writing it would destroy it; name another file$"):
            files.check_output(path, "--out", [("--model", tmp_path / "other.pt"), ("--data", str(manifest))])
    files.check_output(tmp_path / "out.json", "--out", [("--data", manifest)])
    with pytest.raises(ConfigError, match=f"^--out {re.escape(str(tmp_path))}: is a folder; name a file to write$"):
        files.check_output(tmp_path, "--out")
    assert manifest.read_text() == "path,label\n"
