"""The unit's files: umask 077 for `carpool run` (supervisor and worker), directories created
0700 (an existing one open to group/other warned about), every temp+rename write opened with
O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: a symlink planted at the temp path is never followed."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from carpool import cli, files
from carpool.config.store import Store, atomic_write
from carpool.node.driver import StateFile
from carpool.node.pacify import StartRecord
from carpool.tlscert import ensure_self_signed


@pytest.fixture(autouse=True)
def umask_022():
    """The usual umask of an admin's shell: the modes below must not depend on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def temp_of(path: Path) -> Path:
    """The temp file a write of `path` by this process goes through first."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def plant(link: Path, where: Path) -> Path:
    """A symlink at `link` to a victim file in `where`; returns the victim."""
    where.mkdir(parents=True, exist_ok=True)
    victim = where / "victim"
    victim.write_text("untouched\n")
    os.chmod(victim, 0o644)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == "untouched\n" and mode(victim) == 0o644


# -- temp+rename writes ------------------------------------------------------------------------
def test_store_write_never_follows_a_symlink_at_its_temp_path(tmp_path):
    path = tmp_path / "store" / "current.toml"
    victim = plant(temp_of(path), tmp_path)
    atomic_write(path, b"new\n")
    assert path.read_bytes() == b"new\n" and not path.is_symlink() and mode(path) == 0o600
    assert_untouched(victim)
    assert not temp_of(path).exists() and not temp_of(path).is_symlink()


def test_state_file_is_0600_and_never_follows_a_symlink_at_its_temp_path(tmp_path):
    path = tmp_path / "state"
    victim = plant(temp_of(path), tmp_path)
    states = StateFile(path)
    states.write("master")
    states.close()
    assert path.read_text() == "master\n" and mode(path) == 0o600
    assert_untouched(victim)


def test_start_record_files_are_0600_in_a_0700_directory(tmp_path):
    record = StartRecord(tmp_path / "lib" / "carpool", limit=0)
    assert record.on_start(now=1000.0) == ""
    assert mode(record.dir) == 0o700 and mode(record.starts_path) == 0o600
    victim = plant(temp_of(record.starts_path), tmp_path)
    record.clear()
    assert json.loads(record.starts_path.read_text()) and mode(record.starts_path) == 0o600
    assert_untouched(victim)


def test_self_signed_pair_key_0600_in_a_0700_directory_no_symlink_followed(tmp_path):
    web = tmp_path / "state" / "web"
    cert, key = web / "cert.pem", web / "key.pem"
    assert ensure_self_signed(cert, key, "unit", ("198.18.0.11",))
    assert mode(web) == 0o700 and mode(key) == 0o600
    cert.unlink()  # one of the pair missing: both are made again
    victims = [plant(temp_of(p), tmp_path / p.name) for p in (cert, key)]
    assert ensure_self_signed(cert, key, "unit", ("198.18.0.11",))
    assert mode(key) == 0o600 and not key.is_symlink() and not cert.is_symlink()
    assert b"PRIVATE KEY" in key.read_bytes() and b"CERTIFICATE" in cert.read_bytes()
    for victim in victims:
        assert_untouched(victim)


# -- directories -------------------------------------------------------------------------------
def test_store_directories_are_created_0700(tmp_path):
    store = Store(tmp_path / "lib" / "config")
    for d in (store.dir, store.versions, store.conflicts):
        assert mode(d) == 0o700, d


def test_an_existing_directory_open_to_others_is_warned_about_and_left_as_it_is(tmp_path, caplog):
    d = tmp_path / "config"
    d.mkdir()
    os.chmod(d, 0o755)
    with caplog.at_level(logging.WARNING):
        Store(d)
    assert mode(d) == 0o755
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(d) in m and "0755" in m for m in warned), warned


def test_with_a_control_group_created_directories_are_0710_of_that_group(tmp_path):
    d = files.private_dir(tmp_path / "run" / "carpool", group=4242)
    for created in (d, d.parent):
        assert (mode(created), created.stat().st_gid) == (0o710, 4242)


def test_an_existing_directory_the_control_group_cannot_pass_is_warned_about(tmp_path, caplog):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="carpool.files"):
        files.private_dir(d, group=4242)
    assert mode(d) == 0o700
    [warning] = [r.getMessage() for r in caplog.records]
    assert "group 4242 cannot pass through" in warning and str(d) in warning


def test_a_stale_temp_file_is_replaced_not_appended_to(tmp_path):
    path = tmp_path / "state"
    temp_of(path).write_text("a killed writer's half\n" * 10)
    files.write_private(path, "backup\n")
    assert path.read_text() == "backup\n" and not temp_of(path).exists()


# -- umask -------------------------------------------------------------------------------------
def _good_config(tmp_path: Path) -> Path:
    path = tmp_path / "carpool.toml"
    path.write_text(
        '[unit]\nrole = "first"\nsecret = "unit-test-secret"\n'
        f'state_dir = "{tmp_path / "state"}"\n\n'
        '[[interface]]\nname = "eth0"\nshared = ["198.18.0.10/24"]\n'
        'first = "198.18.0.11"\nsecond = "198.18.0.12"\n'
    )
    return path


class _Stop(Exception):
    pass


def _record_umask(seen: list[int]):
    def fake(*_args, **_kwargs):
        now = os.umask(0o022)
        os.umask(now)
        seen.append(now)
        raise _Stop

    return fake


def test_carpool_run_supervisor_and_worker_run_with_umask_077(tmp_path, monkeypatch):
    from carpool.node import configd, supervisor

    seen: list[int] = []
    monkeypatch.setattr(supervisor, "supervise", _record_umask(seen))
    monkeypatch.setattr(configd, "open_store", _record_umask(seen))
    monkeypatch.setattr(cli, "_logging", lambda *_a: None)
    path = _good_config(tmp_path)
    for argv in (["run", "--config", str(path)], ["run", "--worker", "--config", str(path)]):
        os.umask(0o022)
        with pytest.raises(_Stop):
            cli.main(argv)
    assert seen == [0o077, 0o077]
