"""Only regular files are opened as inputs; FIFOs, devices, sockets and symlinks to them are refused
with a one-line reason, without blocking and without reading from them."""
from __future__ import annotations

import os
import socket
import threading

import pytest

import report_gen.safe_open as safe_open
from report_gen.safe_open import (FileTooLarge, NotRegularFile, open_regular, read_regular,
                                          regular_file_problem)


def _open_in_thread(path, **kwargs):
    """open_regular in a thread joined with a timeout: a blocking open fails the test, not the run."""
    result: list = []

    def target():
        try:
            with open_regular(path, **kwargs) as f:
                result.append(f.read(16))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive() and os.path.exists(path):
        try:  # release a blocked FIFO open before failing
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert not thread.is_alive(), f"open_regular({path}) blocked"
    return result[0]


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"content")
    (tmp_path / "link.ckpt").symlink_to(path)
    assert _open_in_thread(path) == b"content"
    assert _open_in_thread(tmp_path / "link.ckpt") == b"content"
    assert regular_file_problem(tmp_path / "link.ckpt") is None


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "model.pt"
    os.mkfifo(path)
    error = _open_in_thread(path)
    assert isinstance(error, NotRegularFile) and error.strerror == "a FIFO (named pipe), not a regular file"
    assert regular_file_problem(path) == error.strerror


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_symlink_to_a_device_is_refused(tmp_path, device):
    path = tmp_path / "config.json"
    path.symlink_to(device)
    error = _open_in_thread(path)
    assert isinstance(error, NotRegularFile)
    assert error.strerror == f"a symbolic link to a character device ({device}), not a regular file"
    assert "\n" not in error.strerror


def test_a_socket_and_a_directory_are_refused(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        assert _open_in_thread(path).strerror == "a socket, not a regular file"
    finally:
        server.close()
    assert _open_in_thread(tmp_path).strerror == "a directory, not a regular file"


def test_no_symlink_at_all_when_asked(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    error = _open_in_thread(tmp_path / "link", follow_symlinks=False)
    assert isinstance(error, NotRegularFile) and "symbolic link" in error.strerror


def test_a_file_swapped_for_a_fifo_between_stat_and_open_is_refused(tmp_path, monkeypatch):
    """The race: stat sees a regular file, then the path becomes a FIFO; O_NONBLOCK keeps the open
    from blocking and the fstat re-check refuses it."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    real_open = os.open

    def swapping_open(p, flags, *args):
        os.remove(p)
        os.mkfifo(p)
        return real_open(p, flags, *args)

    monkeypatch.setattr(safe_open.os, "open", swapping_open)
    error = _open_in_thread(path)
    assert isinstance(error, NotRegularFile) and "changed while opened" in error.strerror


def test_a_file_replaced_between_stat_and_open_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    real_open = os.open

    def replacing_open(p, flags, *args):
        os.replace(tmp_path / "other", p)
        return real_open(p, flags, *args)

    (tmp_path / "other").write_bytes(b"y")
    monkeypatch.setattr(safe_open.os, "open", replacing_open)
    error = _open_in_thread(path)
    assert isinstance(error, NotRegularFile) and "replaced" in error.strerror


def test_read_regular_is_bounded(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b"{}" * 100)
    assert read_regular(path, 200) == b"{}" * 100
    with pytest.raises(FileTooLarge, match="200 bytes, more than the 199"):
        read_regular(path, 199)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(NotRegularFile):
        read_regular(tmp_path / "fifo.json", 200)


def test_missing_paths_keep_their_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "nope")
    assert regular_file_problem(tmp_path / "nope") == "No such file or directory"


def _in_thread(fn):
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "blocked"
    return result[0]


def test_sniffing_a_fifo_named_like_a_checkpoint_does_not_block(tmp_path):
    from report_gen.readers.paths import is_checkpoint_path, sniff_torch_file

    for name in ("model.bin", "weights.tar"):
        os.mkfifo(tmp_path / name)
        assert _in_thread(lambda: sniff_torch_file(str(tmp_path / name))) is False
        assert _in_thread(lambda: is_checkpoint_path(str(tmp_path / name))) is False
    (tmp_path / "pytorch_model.bin").symlink_to("/dev/zero")
    assert _in_thread(lambda: sniff_torch_file(str(tmp_path / "pytorch_model.bin"))) is False


def test_a_config_that_is_not_a_regular_file_is_one_clean_error(tmp_path):
    from report_gen.config import load_config
    from report_gen.core import InputError

    (tmp_path / "cfg.toml").symlink_to("/dev/zero")
    with pytest.raises(InputError, match="config file not found"):
        load_config(str(tmp_path / "cfg.toml"))
    os.mkfifo(tmp_path / "fifo.toml")
    with pytest.raises(InputError, match="config file not found"):
        load_config(str(tmp_path / "fifo.toml"))
    (tmp_path / "pyproject.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="not UTF-8"):
        load_config(str(tmp_path / "pyproject.toml"))
