"""The opened-record cache of :class:`SessionKeys` (sealed text, store id) -> plaintext answers
only what decrypting would: per set of keys (per app), so a record another app sealed, one
sealed under a key that was since retired, or one moved to another session's key is refused
although the same text was opened -- and kept -- before."""

from __future__ import annotations

from flask_ccsso.sessions.keys import SessionKeys


def test_the_cache_never_opens_what_decryption_would_refuse() -> None:
    old, new = "o" * 32, "n" * 32
    record = SessionKeys([old]).seal(b'{"who":"alice"}', "ccsso:sess:alice")
    rotating = SessionKeys([new, old])  # SECRET_KEY_FALLBACKS = [old]
    assert rotating.open(record, "ccsso:sess:alice") == b'{"who":"alice"}'  # now cached
    assert rotating.open(record, "ccsso:sess:alice") == b'{"who":"alice"}'
    assert rotating.open(record, "ccsso:sess:mallory") is None  # moved to another session
    assert SessionKeys([new]).open(record, "ccsso:sess:alice") is None  # fallback removed
    assert SessionKeys(["x" * 32]).open(record, "ccsso:sess:alice") is None  # another app
    tampered = record[:-4] + ("AAAA" if not record.endswith("AAAA") else "BBBB")
    assert rotating.open(tampered, "ccsso:sess:alice") is None
