"""The node name of a standalone server's recordings: written into record.path once, read back by every later
start whatever the host is called then (a recreated container), so rows a killed server left are recovered."""

from __future__ import annotations

import socket

from mediaserver.record.owner import NODE_FILE, local_node


def test_the_first_start_names_the_directory_after_the_host_and_later_starts_keep_that_name(tmp_path, monkeypatch):
    path = tmp_path / "rec" / "not-yet-made"
    monkeypatch.setattr(socket, "gethostname", lambda: "container-a1")
    assert local_node(path) == "container-a1"
    assert (path / NODE_FILE).read_text() == "container-a1\n"
    monkeypatch.setattr(socket, "gethostname", lambda: "container-b2")  # the container was recreated
    assert local_node(path) == "container-a1"
    assert local_node(str(path)) == "container-a1"


def test_a_damaged_name_file_is_written_anew_and_an_unreadable_one_falls_back_to_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "host-1")
    for damaged in (b"", b"  \n", b"a\x00b", b"x" * 500):
        (tmp_path / NODE_FILE).write_bytes(damaged)
        assert local_node(tmp_path) == "host-1"
        assert (tmp_path / NODE_FILE).read_text() == "host-1\n"
    (tmp_path / NODE_FILE).write_bytes(b"\xff\xfe")  # not UTF-8
    assert local_node(tmp_path) == "host-1"
    (tmp_path / NODE_FILE).unlink()
    (tmp_path / NODE_FILE).mkdir()  # not a file: cannot be read or replaced
    assert local_node(tmp_path) == "host-1"
