"""The spool directory's files are opened without following a symlink (``O_NOFOLLOW``): a link
planted where the spool, its replay lock or the dead-letter file will be created cannot redirect
audit events (personal data) or the lock into a file the link names. The open fails, as any other
unwritable spool file does (:class:`SpoolError`), and the link's target is left untouched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flask_ccsso.audit.events import AuditEvent, build_event
from flask_ccsso.audit.journal import Journal
from flask_ccsso.audit.spool import BadRow, DeadLetter, Spool, SpoolError, ensure_dir
from flask_ccsso.exceptions import ConfigError

pytestmark = pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="O_NOFOLLOW is POSIX")


def _event() -> AuditEvent:
    return build_event("auth.login", {"provider": "op"})


@pytest.mark.parametrize("target_exists", [True, False], ids=["existing-target", "dangling-link"])
def test_a_planted_dead_letter_link_is_not_written_through(tmp_path: Path, target_exists: bool) -> None:
    spool_dir, target = tmp_path / "spool", tmp_path / "elsewhere.txt"
    spool_dir.mkdir()
    if target_exists:
        target.write_text("precious\n")
    dead = DeadLetter(str(spool_dir), "http")
    os.symlink(target, dead.path)
    with pytest.raises(SpoolError):
        dead.write_rows([BadRow(seq=1, event_id=None, raw=b"junk", problem="not an event")])
    with pytest.raises(SpoolError):
        dead.write([_event()], "refused")
    if target_exists:
        assert target.read_text() == "precious\n"
    else:
        assert not target.exists()


def test_a_planted_spool_link_is_not_written_through(tmp_path: Path) -> None:
    spool_dir, target = tmp_path / "spool", tmp_path / "elsewhere.sqlite3"
    spool_dir.mkdir()
    path = spool_dir / "ccsso-audit-http.spool.sqlite3"
    os.symlink(target, path)  # dangling: the spool counts as empty until its first append
    spool = Spool(str(spool_dir), "http")
    with pytest.raises(SpoolError):
        spool.append([_event()])
    spool.close()
    assert not target.exists()

    target.write_bytes(b"")  # a link to an existing file stops start-up, as an unreadable spool does
    with pytest.raises(ConfigError):
        Spool(str(spool_dir), "http")
    assert target.read_bytes() == b""


def test_a_planted_lock_link_is_not_followed(tmp_path: Path) -> None:
    spool_dir, target = tmp_path / "spool", tmp_path / "elsewhere.lock"
    spool_dir.mkdir()
    spool = Spool(str(spool_dir), "http")
    os.symlink(target, spool.path + ".lock")
    with pytest.raises(SpoolError):
        spool.try_acquire_replay()
    spool.close()
    assert not target.exists()


def test_the_spool_files_are_private_and_not_inherited(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), "http")
    assert spool.append([_event()]) >= 1
    assert spool.try_acquire_replay()
    assert spool._lock_fd is not None and not os.get_inheritable(spool._lock_fd)
    dead = DeadLetter(str(tmp_path), "http")
    dead.write([_event()], "refused")
    for path in (spool.path, spool.path + ".lock", dead.path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    spool.close()


# The directory itself must be private: SQLite opens the spool by name, so another user who can
# write to the directory could swap a link in between the no-follow check and SQLite's open.

def test_a_spool_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    spool_dir = tmp_path / "shared"
    spool_dir.mkdir()
    spool_dir.chmod(0o777)
    spool = Spool(str(spool_dir), "http")
    with pytest.raises(SpoolError) as err:
        spool.append([_event()])
    assert "writable by other users" in err.value.reason and str(tmp_path) not in err.value.reason
    spool.close()
    assert list(spool_dir.iterdir()) == []  # nothing written there
    spool_dir.chmod(0o700)
    spool = Spool(str(spool_dir), "http")
    assert spool.append([_event()]) == 1  # fixed: it works again
    spool.close()


def test_a_spool_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "spool"
    os.symlink(real, link)
    spool = Spool(str(link), "http")
    with pytest.raises(SpoolError) as err:
        spool.append([_event()])
    assert "symlink" in err.value.reason
    spool.close()
    assert list(real.iterdir()) == []


def test_a_new_spool_directory_is_made_private(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "new" / "spool"), "http")
    assert spool.append([_event()]) == 1
    spool.close()
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "spool").st_mode) == 0o700


def test_the_crash_journal_refuses_a_symlinked_spool_directory(tmp_path: Path) -> None:
    """P1: the crash journal shares spoolDir but calls ensure_dir only when the directory does
    not exist yet (os.path.isdir follows links): it writes every event (personal data) into a
    spool directory that is a symlink, or group/other-writable, which the spool refuses."""
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    link = tmp_path / "spool"
    os.symlink(real, link)
    journal = Journal(str(link))
    with journal.lock:
        journal.append(b"event with personal data")
    journal.close(keep_files=True)
    assert list(real.iterdir()) == [], "the journal wrote through the symlinked spool directory"


def test_the_crash_journal_refuses_a_world_writable_spool_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    journal = Journal(str(shared))
    with journal.lock:
        journal.append(b"event")
    journal.close(keep_files=True)
    assert list(shared.iterdir()) == [], "the journal wrote into a world-writable spool directory"


def test_a_spool_directory_under_a_symlinked_or_foreign_parent_is_refused(tmp_path: Path) -> None:
    """P2: only the last component is lstat'ed. A parent that is a symlink into a directory
    others can write (so they can rename 'spool' away and put a link in its place after the
    check) passes."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # another user may rename entries here
    os.symlink(shared, tmp_path / "app")
    with pytest.raises(OSError) as err:
        ensure_dir(str(tmp_path / "app" / "spool"))
    assert "writable by everyone" in str(err.value)
    # with the sticky bit (as /tmp has), another user can rename only their own entries: accepted
    shared.chmod(0o1777)
    assert ensure_dir(str(tmp_path / "app" / "spool"))
