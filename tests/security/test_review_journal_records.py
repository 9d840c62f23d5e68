"""The crash journal's records are read back from disk at start and every few seconds: input the
reader does not control (a file in the spool directory). A record that cannot become an event
must be skipped -- whatever makes it bad -- and never stop the recovery of the records and the
journals after it. It used to raise out of ``decode_event`` (``RecursionError`` for a record
nested deeper than the decoder recurses, ``OverflowError`` / ``OSError`` for a time no calendar
holds): the pipeline logged a traceback every scan and never recovered that journal, nor the
dead processes' journals whose names sort after it -- their events were never delivered.

And the request side: an event whose captured values nest too deep for msgpack is journaled in
its built form, not dropped (``encode_event`` raised ``RecursionError`` into the signal
receiver, which lost the event).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import msgspec

from flask_ccsso.audit.events import AuditEvent, build_event, capture
from flask_ccsso.audit.journal import Journal, decode_event, encode_event, frame

PREFIX = "ccsso-audit-journal-"
ID = "0" * 32


def _captured(now: float) -> list[object]:
    return ["auth.login", now, ID, None, None, None, "s", None, "okta", None, {}, None, None]


POISON = {
    "nested deeper than the decoder recurses": b"\x91" * 100_000 + b"\xc0",
    "a time past the calendar": msgspec.msgpack.encode(_captured(1e300)),
    "a time long before it": msgspec.msgpack.encode(_captured(-1e18)),
}


def _dead_journal(directory: Path, token: str, payloads: list[bytes]) -> None:
    """What a SIGKILLed process leaves: a lock file no one holds, and a segment."""
    (directory / f"{PREFIX}{token}.lock").write_bytes(b"")
    (directory / f"{PREFIX}{token}.00000001.log").write_bytes(b"".join(frame(p) for p in payloads))


def test_a_bad_record_is_skipped_whatever_makes_it_bad() -> None:
    for why, payload in POISON.items():
        assert decode_event(payload) is None, why


def test_bad_records_stop_neither_their_segment_nor_the_journals_after_it(tmp_path: Path) -> None:
    good = [build_event("auth.login", {"subject": f"s{i}", "provider": "okta"}) for i in range(4)]
    _dead_journal(tmp_path, "100-a", [*POISON.values(), encode_event(good[0]), encode_event(good[1])])
    _dead_journal(tmp_path, "200-b", [encode_event(good[2]), encode_event(good[3])])
    kept: list[AuditEvent] = []
    journal = Journal(str(tmp_path))
    assert journal.recover(kept.extend) == 4
    assert sorted(e.id for e in kept) == sorted(e.id for e in good)
    assert os.listdir(tmp_path) == []  # both journals recovered and removed
    journal.close(keep_files=False)


def test_an_event_nested_too_deep_for_msgpack_is_journaled_built() -> None:
    deep: object = "bottom"
    for _ in range(5000):
        deep = [deep]
    identity = SimpleNamespace(subject="s", email=None, provider="okta", via="session",
                               claims={"department": "sales", "profile": deep})
    event = AuditEvent.from_capture(capture("auth.login", {"identity": identity}, None, 1_700_000_000.0,
                                            include_claims=True))
    record = encode_event(event)  # used to raise RecursionError (the event was lost)
    back = decode_event(record)
    assert back is not None and back.id == event.id
    assert back.to_json() == event.to_json()  # the event every sink gets (nested values dropped)
    assert back.claims == {"department": "sales", "profile": []}


def test_a_token_nested_in_a_kept_claim_never_reaches_the_journal_file(tmp_path: Path) -> None:
    """Sinks never get a nested claim value (events hold scalars and lists of scalars), but the
    journal is written from the captured tuple *before* cleaning: a kept claim that nests an
    object -- OIDC distributed claims carry an ``access_token`` inside ``_claim_sources`` --
    was copied to disk whole."""
    secret = "eyJhbGciOiJSUzI1NiJ9.distributed-claims-access-token"
    identity = SimpleNamespace(
        subject="s", email="s@example.com", provider="okta", via="session",
        claims={"department": "sales",
                "_claim_sources": {"src1": {"endpoint": "https://claims.example/", "access_token": secret}},
                "roles": ["admin", {"access_token": secret}], "shift": frozenset({"late", "early"})})
    event = AuditEvent.from_capture(capture("auth.login", {"identity": identity}, None, 1_700_000_000.0,
                                            include_claims=True))
    journal = Journal(str(tmp_path / "journal"))
    with journal.lock:
        journal.append(encode_event(event))
    (segment,) = (tmp_path / "journal").glob("*.log")
    assert secret.encode() not in segment.read_bytes()
    assert b"claims.example" not in segment.read_bytes()
    # what the sinks get is unchanged: scalars, and the scalars of lists (sets sorted)
    assert event.claims == {"department": "sales", "roles": ["admin"], "shift": ["early", "late"]}
    journal.close(keep_files=False)


def test_what_is_planted_under_a_segment_name_is_not_read(tmp_path: Path) -> None:
    """A spool directory others can write: a FIFO under a segment's name blocked the recovering
    thread for good (the pipeline's writer: no event delivered any more), a link to
    ``/dev/zero`` filled its memory. They hold no records, and the journals after them are
    recovered; the names are removed, the link's target is not touched."""
    good = build_event("auth.login", {"subject": "s", "provider": "okta"})
    (tmp_path / f"{PREFIX}100-a.lock").write_bytes(b"")
    os.mkfifo(tmp_path / f"{PREFIX}100-a.00000001.log")
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.write_bytes(frame(encode_event(build_event("auth.login", {"subject": "forged", "provider": "x"}))))
    (tmp_path / f"{PREFIX}100-a.00000002.log").symlink_to(target)
    (tmp_path / f"{PREFIX}100-a.00000003.log").symlink_to("/dev/zero")
    _dead_journal(tmp_path, "200-b", [encode_event(good)])
    kept: list[AuditEvent] = []
    journal = Journal(str(tmp_path))
    worker = threading.Thread(target=lambda: journal.recover(kept.extend), daemon=True)
    worker.start()
    worker.join(60)  # a bound on a hang, not a timing assertion
    assert not worker.is_alive(), "the recovery blocked on what was planted"
    assert [e.id for e in kept] == [good.id]  # nothing read through the link
    assert os.listdir(tmp_path) == []
    assert target.exists()
    journal.close(keep_files=False)
