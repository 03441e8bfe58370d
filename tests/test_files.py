"""nfzoo.files, the one way nfzoo writes: nothing of the user's is replaced or deleted
(overwrite touches only folders nfzoo wrote, refused before any work), nothing that appears
at the destination meanwhile is replaced, leftovers of killed writes are cleaned or named,
and outputs get the permissions the umask gives. No TensorFlow here: these run in
milliseconds."""

import json
import os
import stat
import warnings

import pytest

from nfzoo import files
from nfzoo.files import DestinationError, StaleFolderWarning


def pretrained_folder(path, extra=()):
    """A folder laid out as save_pretrained writes it (and ``extra`` files of the user's)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"format": "nfzoo.pretrained/1"}))
    (path / "model.weights.h5").write_bytes(b"weights")
    (path / "card.md").write_text("# card\n")
    for name in extra:
        (path / name).write_text("the user's")
    return path


def export_folder(path):
    path.mkdir()
    (path / "saved_model").mkdir()
    (path / "saved_model" / "saved_model.pb").write_bytes(b"pb")
    (path / "model.tflite").write_bytes(b"tflite")
    listed = ["saved_model/saved_model.pb", "model.tflite"]
    (path / "manifest.json").write_text(json.dumps({"files": dict.fromkeys(listed, "sha")}))
    return path


def write_into(destination, overwrite=False, content="new"):
    with files.atomic_directory(destination, overwrite=overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps({"format": "nfzoo.pretrained/1"}))
        (tmp / "model.weights.h5").write_text(content)
    return destination


def snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_overwrite_replaces_only_what_nfzoo_wrote(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(DestinationError, match="not a folder written by nfzoo"):
        write_into(mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"

    # an artifact the user added a file to is not nfzoo's alone any more
    saved = pretrained_folder(tmp_path / "saved", extra=["notes.txt"])
    before = snapshot(saved)
    with pytest.raises(DestinationError, match=r"holds files nfzoo did not write \(notes.txt\)"):
        write_into(saved, overwrite=True)
    assert snapshot(saved) == before

    # what nfzoo wrote is replaced, either kind of artifact
    write_into(pretrained_folder(tmp_path / "clean"), overwrite=True)
    assert (tmp_path / "clean" / "model.weights.h5").read_text() == "new"
    write_into(export_folder(tmp_path / "exported"), overwrite=True)
    assert sorted(os.listdir(tmp_path / "exported")) == ["config.json", "model.weights.h5"]

    # an export folder with a file its manifest does not list is the user's too
    extra = export_folder(tmp_path / "export2")
    (extra / "saved_model" / "mine.txt").write_text("x")
    with pytest.raises(DestinationError, match="saved_model/mine.txt"):
        write_into(extra, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_files_links_and_the_working_directory_are_refused(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DestinationError, match="is a file, not a folder"):
        write_into(tmp_path / "a-file", overwrite=True)
    target = pretrained_folder(tmp_path / "target")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(DestinationError, match="symbolic link"):
        write_into(tmp_path / "link", overwrite=True)
    monkeypatch.chdir(target)  # even an artifact cannot be replaced while it is the cwd
    for destination in (".", "..", str(tmp_path)):
        with pytest.raises(DestinationError, match="the working directory or holds it"):
            files.check_destination(destination, overwrite=True, hint="--overwrite")
    with pytest.raises(DestinationError, match="filesystem root"):
        files.check_destination("/", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a-file", "link", "target"]
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_folder_that_appears_while_writing_is_kept(tmp_path):
    destination = tmp_path / "out"
    appeared = pytest.raises(DestinationError, match="appeared while nfzoo was writing")
    with appeared, files.atomic_directory(destination) as tmp:
        (tmp / "config.json").write_text("{}")
        destination.mkdir()  # another process creates it meanwhile (even empty)
        (destination / "theirs.txt").write_text("theirs")
    assert snapshot(destination) == {"theirs.txt": b"theirs"}
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder left


def test_a_folder_swapped_in_before_the_rename_is_put_back(tmp_path):
    destination = pretrained_folder(tmp_path / "out")
    changed = pytest.raises(DestinationError, match="changed while nfzoo was writing")
    with changed, files.atomic_directory(destination, overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
        os.rename(destination, tmp_path / "moved")  # replaced by a folder of the user's
        destination.mkdir()
        (destination / "theirs.txt").write_text("theirs")
    assert snapshot(destination) == {"theirs.txt": b"theirs"}
    assert sorted(os.listdir(tmp_path)) == ["moved", "out"]


def test_leftovers_of_killed_writes_are_cleaned_restored_or_named(tmp_path):
    host = files._host()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    partial = tmp_path / f".out.partial.{dead}.{host}.abc123"
    partial.mkdir()
    (partial / "model.weights.h5").write_bytes(b"x" * 1000)
    # killed after moving the previous folder aside, before the new one took its place
    previous = tmp_path / f".out.old.{dead}.{host}.def456" / "previous"
    previous.mkdir(parents=True)
    (previous / "card.md").write_text("previous")
    elsewhere = tmp_path / f".out.partial.{dead}.another-host.ghi789"
    elsewhere.mkdir()
    legacy = tmp_path / ".out.partial-k2j3h4"  # from a version that did not record its writer
    legacy.mkdir()
    running = tmp_path / f".out.partial.{os.getpid()}.{host}.jkl012"
    running.mkdir()
    with pytest.warns(StaleFolderWarning) as caught:
        files.check_destination(tmp_path / "out")  # only checks: cleans nothing
        with pytest.raises(DestinationError, match="already exists; pass overwrite=True"):
            write_into(tmp_path / "out")
    named = " ".join(str(w.message) for w in caught)
    assert elsewhere.name in named and "another-host" in named and legacy.name in named
    assert (tmp_path / "out" / "card.md").read_text() == "previous"  # put back
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out", elsewhere.name, legacy.name, running.name])


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = files.write_file_atomically(tmp_path / "s.npy", lambda tmp: tmp.write_bytes(b"x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    folder = write_into(tmp_path / "saved")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o666 & ~mask


def test_write_file_without_overwrite_refuses_and_keeps_what_appears(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("mine")
    with pytest.raises(DestinationError, match="already exists"):
        files.write_file_atomically(path, lambda tmp: tmp.write_text("new"), overwrite=False)

    other = tmp_path / "t.csv"

    def racing(tmp):
        tmp.write_text("new")
        other.write_text("theirs")

    with pytest.raises(DestinationError, match="appeared while nfzoo was writing"):
        files.write_file_atomically(other, racing, overwrite=False)
    assert path.read_text() == "mine" and other.read_text() == "theirs"
    files.write_file_atomically(path, lambda tmp: tmp.write_text("new"))  # overwrite=True
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "t.csv"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DestinationError, match="is a folder"):
            files.write_file_atomically(tmp_path, lambda tmp: None)
