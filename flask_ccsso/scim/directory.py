"""The SCIM directory: users and groups in the shared store, and deprovisioning.

Keys (JSON values, in the session store beside the session index, so every
worker and host sees one directory)::

    scim:user:<id>             the User resource (never a password)
    scim:username:<userName>   -> id (lower case: userName is unique, case-insensitively)
    scim:group:<id>            the Group resource (its members)
    scim:groupname:<name>      -> id (lower case)
    scim:markers:<id>          the deprovisioned markers written for user <id> (a JSON list)
    scim:deprovisioned:...     the markers themselves (:mod:`flask_ccsso.gate.bearer`)

A person is the SCIM user's ``userName`` and ``emails`` (their sign-in email
addresses, as the session index keeps them) and the ``provider:subject`` ids
the index knows for those emails, plus ``<provider>:<externalId>`` and
``<provider>:<userName>`` for every configured provider (Okta access tokens
carry the login as ``sub``; an API caller may never have signed in here, so the
index may not know them).

Deprovisioning (``active: false``, ``DELETE``), in this order, all before the
response: the markers are written (a sign-in or bearer request from then on
is refused), every session of the person is ended through the session index
(:meth:`~flask_ccsso.sessions.index.SessionIndex.revoke_user`, the path of
``flask ccsso sessions revoke``), and ``user.deprovisioned`` is sent.

Group changes end the sessions of the people whose membership changed, so
their next request signs in again and carries the IdP's groups: a session's
groups are the IdP's assertion, sealed in the session record, and rewriting
them from SCIM would mix two sources of truth (Entra sends group object ids
in tokens, display names over SCIM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import has_app_context
from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    InvalidValueException,
    Meta,
    NotFoundException,
    PatchOp,
    Resource,
    UniquenessException,
    User,
)

from .. import signals
from .._context import current_flask_app
from ..gate.bearer import deprovisioned_email_key, deprovisioned_id_key, store_key_part
from ..sessions.index import user_key
from ..state import CCSSOState
from ..stores import Batch

log = logging.getLogger("flask_ccsso")

#: how long directory entries and markers live in the store (they must outlive
#: any session; a store needs a time to live): ten years
KEEP = 10 * 365 * 86400.0

USER_PREFIX = "scim:user:"
USERNAME_PREFIX = "scim:username:"
GROUP_PREFIX = "scim:group:"
GROUPNAME_PREFIX = "scim:groupname:"
MARKERS_PREFIX = "scim:markers:"

#: ``session.revoked`` reasons of the sessions this module ends
REVOKED_DEPROVISIONED = "scim_deprovisioned"
REVOKED_GROUPS_CHANGED = "scim_groups_changed"

R = TypeVar("R", bound=Resource[Any])

#: the User resource served: the core schema with Entra's and Okta's enterprise extension
UserModel = User[EnterpriseUser]
#: the schema URNs a stored resource may list (another one, such as Entra's own
#: group schema, is tolerated on input and not kept)
KNOWN_SCHEMAS = frozenset({str(User.__schema__), str(EnterpriseUser.__schema__), str(Group.__schema__)})


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _dump(resource: Resource[Any]) -> str:
    resource.schemas = [urn for urn in resource.schemas if urn in KNOWN_SCHEMAS]
    return json.dumps(resource.model_dump(mode="json", scim_ctx=Context.DEFAULT))


class Directory:
    """The SCIM users and groups of one app (over its session store)."""

    def __init__(self, state: CCSSOState) -> None:
        self.state = state
        self.store = state.store

    # -- reading ---------------------------------------------------------------------
    def _load(self, model: type[R], key: str) -> R | None:
        raw = self.store.get(key)
        return model.model_validate(json.loads(raw)) if raw is not None else None

    def user(self, user_id: str) -> User[Any]:
        found = self._load(UserModel, USER_PREFIX + user_id)
        if found is None:
            raise NotFoundException(detail=f"no user {user_id!r}")
        return found

    def group(self, group_id: str) -> Group:
        found = self._load(Group, GROUP_PREFIX + group_id)
        if found is None:
            raise NotFoundException(detail=f"no group {group_id!r}")
        return found

    def user_id_by_name(self, user_name: str) -> str | None:
        return self.store.get(USERNAME_PREFIX + store_key_part(user_name.lower()))

    def group_id_by_name(self, name: str) -> str | None:
        return self.store.get(GROUPNAME_PREFIX + store_key_part(name.lower()))

    def users(self) -> Iterator[User[Any]]:
        """Every user, by id (the directory is small: people of one portal)."""
        for key in sorted(self.store.keys(USER_PREFIX)):
            found = self._load(UserModel, key)
            if found is not None:
                yield found

    def groups(self) -> Iterator[Group]:
        for key in sorted(self.store.keys(GROUP_PREFIX)):
            found = self._load(Group, key)
            if found is not None:
                yield found

    # -- users -----------------------------------------------------------------------
    def create_user(self, user: User[Any], location: Callable[[str], str]) -> User[Any]:
        """Store a new user (409 ``uniqueness`` when the userName is taken);
        an inactive one is deprovisioned at once, an active one clears markers
        its email addresses carry from before (re-hired, re-created)."""
        user.id = uuid.uuid4().hex
        user.password = None  # never stored: this portal signs people in through the IdP
        now = _now()
        user.meta = Meta(resource_type="User", created=now, last_modified=now, location=location(user.id),
                         version='W/"1"')
        user.groups = None  # read-only: the Group resources hold memberships
        self._store_new(user, USER_PREFIX, USERNAME_PREFIX, str(user.user_name), "userName")
        if user.active is False:
            self.deprovision(user, "deactivated")
        else:
            self.reactivate(user)
        return user

    # -- the unique names (userName, a group's displayName) -----------------------------
    def _store_new(self, resource: Resource[Any], record_prefix: str, name_prefix: str, name: str,
                   attribute: str) -> None:
        """Store a new resource and claim its unique ``name``: the record first,
        so a name entry always names a stored resource (one that names none is a
        create that failed between its two writes, taken over by
        :meth:`_claim_name`); when the claim fails the record goes again (the
        client never learns this id to delete it)."""
        assert resource.id is not None
        self.store.set(record_prefix + resource.id, _dump(resource), KEEP)
        try:
            claimed = self._claim_name(record_prefix, name_prefix, name, resource.id)
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.delete(record_prefix + resource.id)
            raise
        if not claimed:
            self.store.delete(record_prefix + resource.id)
            raise UniquenessException(detail=f"{attribute} {name!r} is already taken")

    def _claim_name(self, record_prefix: str, name_prefix: str, name: str, resource_id: str) -> bool:
        """Make ``name`` (any case) name ``resource_id``; ``False`` when another
        stored resource has it. An entry naming no stored resource is left by a
        write that failed halfway; it is taken over with a compare-and-set on
        that entry, so two claimants never both win."""
        key = name_prefix + store_key_part(name.lower())
        if self.store.add(key, resource_id, KEEP):
            return True
        owner = self.store.get(key)
        if owner is None:  # freed meanwhile
            return self.store.add(key, resource_id, KEEP)
        if owner == resource_id or self.store.get(record_prefix + owner) is not None:
            return owner == resource_id
        return self.store.update(key, lambda current: (resource_id, KEEP) if current == owner else None)

    def replace_user(self, user_id: str, new: User[Any]) -> User[Any]:
        """PUT: ``new`` replaces the user (id, meta and created kept)."""
        old = self.user(user_id)
        return self._save_user(old, new)

    def patch_user(self, user_id: str, patch: PatchOp[User[Any]]) -> User[Any]:
        old = self.user(user_id)
        new = old.model_copy(deep=True)
        patch.patch(new)
        new = UserModel.model_validate(new.model_dump(mode="json", scim_ctx=Context.DEFAULT))  # patched values checked
        return self._save_user(old, new)

    def _save_user(self, old: User[Any], new: User[Any]) -> User[Any]:
        assert old.id is not None and old.meta is not None
        _required(new.user_name, "userName")
        new.id, new.password, new.groups = old.id, None, None
        version = _version(old.meta.version)
        new.meta = Meta(resource_type="User", created=old.meta.created, last_modified=_now(),
                        location=old.meta.location, version=f'W/"{version + 1}"')
        renamed = str(new.user_name).lower() != str(old.user_name).lower()
        if renamed and not self._claim_name(USER_PREFIX, USERNAME_PREFIX, str(new.user_name), old.id):
            raise UniquenessException(detail=f"userName {new.user_name!r} is already taken")
        self.store.set(USER_PREFIX + old.id, _dump(new), KEEP)
        if renamed:
            self.store.delete(USERNAME_PREFIX + store_key_part(str(old.user_name).lower()))
        was_active, active = old.active is not False, new.active is not False
        if not active:
            # every time (an IdP re-sends it): catches a sign-in that raced the last one;
            # the signal only on the change, and only then
            self.deprovision(new, "deactivated", announce=was_active)
        elif not was_active:
            self.reactivate(new)
        return new

    def delete_user(self, user_id: str) -> None:
        """DELETE: the person is deprovisioned (markers kept: a deleted person
        stays refused until SCIM creates them again) and forgotten."""
        user = self.user(user_id)
        self.deprovision(user, "deleted")
        for group in self.groups():  # RFC 7644 3.6: a deleted user leaves their groups
            if group.id and any(m.value == user_id for m in group.members or ()):
                group.members = [m for m in group.members or () if m.value != user_id] or None
                self.store.set(GROUP_PREFIX + group.id, _dump(group), KEEP)
        self.store.delete(USER_PREFIX + user_id, USERNAME_PREFIX + store_key_part(str(user.user_name).lower()))

    # -- deprovisioning -----------------------------------------------------------------
    @staticmethod
    def emails(user: User[Any]) -> list[str]:
        """The person's sign-in email addresses: userName and ``emails``, lower case."""
        found = [str(user.user_name or "")] + [str(e.value or "") for e in user.emails or ()]
        return sorted({e.lower() for e in found if "@" in e})

    def identity_ids(self, user: User[Any], emails: list[str]) -> list[str]:
        """``provider:subject`` ids of the person: those the session index knows
        for their email addresses, and the ones their ``externalId`` and
        ``userName`` would be at each provider."""
        ids: set[str] = set()
        for email in emails:
            ids.update(self.state.sessions.identity_ids(email))
        for name in self.state.providers:
            for subject in (user.external_id, user.user_name):
                if subject:
                    ids.add(f"{name}:{subject}")
        return sorted(ids)

    def deprovision(self, user: User[Any], reason: str, *, announce: bool = True) -> int:
        """Mark the person deprovisioned, end every session of theirs on every
        worker and host, and (``announce``) send ``user.deprovisioned``.
        Returns how many sessions ended."""
        assert user.id is not None
        emails = self.emails(user)
        ids = self.identity_ids(user, emails)
        keys = [deprovisioned_email_key(e) for e in emails] + [deprovisioned_id_key(i) for i in ids]
        batch = Batch()
        for key in keys:
            batch.set(key, user.id, KEEP)
        known = self._markers(user.id)
        batch.set(MARKERS_PREFIX + user.id, json.dumps(sorted(set(known) | set(keys))), KEEP)
        self.store.write_many(batch)  # first: what signs in from now on is refused
        sessions = self.state.sessions
        count = sum(sessions.revoke_user(email, reason=REVOKED_DEPROVISIONED) for email in emails)
        by_email = {i for email in emails for i in sessions.identity_ids(email)}
        for identity_id in ids:  # a person who signed in without an email, or one the index did not tie to it
            if identity_id not in by_email and self.store.set_members(user_key(identity_id)):
                count += sessions.revoke_identity(identity_id, reason=REVOKED_DEPROVISIONED)
        log.info("flask-ccsso: SCIM deprovisioned user %s (%s); %d session(s) ended", user.id, reason, count)
        if announce:
            signals.user_deprovisioned.send(current_flask_app() if has_app_context() else None,
                                            subject=user.external_id, email=user.user_name, scim_id=user.id,
                                            count=count, reason=reason)
        return count

    def _markers(self, user_id: str) -> list[str]:
        raw = self.store.get(MARKERS_PREFIX + user_id)
        value = json.loads(raw) if raw else []
        return [k for k in value if isinstance(k, str)] if isinstance(value, list) else []

    def reactivate(self, user: User[Any]) -> None:
        """Clear every marker naming the person: theirs, and those an earlier
        (deleted) SCIM user with one of their email addresses left."""
        assert user.id is not None
        emails = self.emails(user)
        keys = [deprovisioned_email_key(e) for e in emails]
        keys += [deprovisioned_id_key(i) for i in self.identity_ids(user, emails)]
        # a deleted owner's markers go; a user who still exists (deactivated) keeps theirs
        owners = {user.id} | {owner for key in keys[:len(emails)] if (owner := self.store.get(key))
                              and self.store.get(USER_PREFIX + owner) is None}
        stale = [MARKERS_PREFIX + owner for owner in owners]
        for owner in owners:
            keys += self._markers(owner)
        self.store.delete(*sorted(set(keys)), *stale)

    # -- groups --------------------------------------------------------------------------
    def create_group(self, group: Group, location: Callable[[str], str]) -> Group:
        group.id = uuid.uuid4().hex
        now = _now()
        group.meta = Meta(resource_type="Group", created=now, last_modified=now, location=location(group.id),
                          version='W/"1"')
        self._store_new(group, GROUP_PREFIX, GROUPNAME_PREFIX, str(group.display_name), "displayName")
        self._members_changed(set(), _members(group))
        return group

    def replace_group(self, group_id: str, new: Group) -> Group:
        return self._save_group(self.group(group_id), new)

    def patch_group(self, group_id: str, patch: PatchOp[Group]) -> Group:
        old = self.group(group_id)
        new = old.model_copy(deep=True)
        patch.patch(new)
        new = Group.model_validate(new.model_dump(mode="json", scim_ctx=Context.DEFAULT))
        return self._save_group(old, new)

    def _save_group(self, old: Group, new: Group) -> Group:
        assert old.id is not None and old.meta is not None
        _required(new.display_name, "displayName")
        new.id = old.id
        new.meta = Meta(resource_type="Group", created=old.meta.created, last_modified=_now(),
                        location=old.meta.location, version=f'W/"{_version(old.meta.version) + 1}"')
        renamed = str(new.display_name).lower() != str(old.display_name).lower()
        if renamed and not self._claim_name(GROUP_PREFIX, GROUPNAME_PREFIX, str(new.display_name), old.id):
            raise UniquenessException(detail=f"displayName {new.display_name!r} is already taken")
        self.store.set(GROUP_PREFIX + old.id, _dump(new), KEEP)
        if renamed:
            self.store.delete(GROUPNAME_PREFIX + store_key_part(str(old.display_name).lower()))
            self._members_changed(set(), _members(new) | _members(old))  # a renamed group may grant other skills
        else:
            self._members_changed(_members(old), _members(new))
        return new

    def delete_group(self, group_id: str) -> None:
        group = self.group(group_id)
        self.store.delete(GROUP_PREFIX + group_id, GROUPNAME_PREFIX + store_key_part(str(group.display_name).lower()))
        self._members_changed(_members(group), set())

    def _members_changed(self, before: set[str], after: set[str]) -> None:
        """End the sessions of the people who joined or left: their next
        request signs in again, with the groups the IdP now asserts."""
        for user_id in sorted(before ^ after):
            user = self._load(UserModel, USER_PREFIX + user_id)
            if user is None:
                continue  # not (or no longer) a user of this directory
            for email in self.emails(user):
                self.state.sessions.revoke_user(email, reason=REVOKED_GROUPS_CHANGED)


def _required(value: Any, name: str) -> None:
    """A PATCH may not leave a required (and indexed) attribute empty."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueException(detail=f"{name} is required")


def _members(group: Group) -> set[str]:
    return {str(m.value) for m in group.members or () if m.value}


def _version(tag: str | None) -> int:
    digits = "".join(c for c in tag or "" if c.isdigit())
    return int(digits) if digits else 1


__all__ = ["KNOWN_SCHEMAS", "Directory", "UserModel"]
