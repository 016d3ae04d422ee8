"""Staff password hashing with argon2id."""

from __future__ import annotations

import asyncio
import functools
import gzip
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so both answers take the same time.
_DUMMY = _hasher.hash("not a real password, only for timing")

MIN_LENGTH = 12
MAX_LENGTH = 128


@functools.cache
def common_passwords() -> frozenset[str]:
    """About 20,000 of the most common passwords (the list Django ships, BSD licence)."""
    data = (resources.files("chatserver") / "bundled" / "common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def check_policy(password: str, name: str | None = None) -> str | None:
    """A reason the password is refused, or None when it is acceptable.

    Length and commonness only: no composition rules (NIST SP 800-63B)."""
    if len(password) < MIN_LENGTH:
        return f"Passwords need at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Passwords may have at most {MAX_LENGTH} characters."
    lowered = password.lower()
    if lowered in common_passwords() or len(set(lowered)) < 4:
        return "That password is too common; choose another."
    if name and name.lower() in lowered:
        return "The password must not contain the account name."
    return None


# argon2 takes 64 MiB per hash: at most two at a time, so a burst of sign-ins costs bounded
# memory, and each runs in a thread, so the event loop (every chat) never waits on one.
_SLOTS = asyncio.Semaphore(2)
# One more, only for browsers that signed in to the account before: however many strangers'
# attempts wait for the two above, the owner's own browser does not queue behind them.
_KNOWN_SLOT = asyncio.Semaphore(1)


async def hash_password_async(password: str) -> str:
    async with _SLOTS:
        return await asyncio.to_thread(hash_password, password)


async def verify_async(password_hash: str | None, password: str, *,
                       known_device: bool = False) -> bool:
    async with _KNOWN_SLOT if known_device else _SLOTS:
        return await asyncio.to_thread(verify, password_hash, password)


def login_delay(failed: int) -> float:
    """Seconds to wait after the last failure before the next attempt counts: none for the
    first five, then doubling from one second up to fifteen minutes."""
    if failed < 5:
        return 0.0
    return float(min(2 ** (failed - 5), 900))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
