"""Staff password hashing with argon2id."""

from __future__ import annotations

import asyncio
import functools
import gzip
import unicodedata
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both answers take the same time.
    Made on first use, not at import: every process and CLI command would pay for it."""
    return _hasher.hash("not a real password, only for timing")

MIN_LENGTH = 12
MAX_LENGTH = 128
# zxcvbn's score (0-4) estimates the guesses an attacker needs, from dictionaries of words,
# names and common passwords, keyboard rows, repeats, sequences, dates and l33t. 3 means about
# 10^8 guesses or more: "safely unguessable" against an online attack and, with argon2 at
# ~0.1 s a guess, years offline.
MIN_SCORE = 3
# Its running time grows steeply with length (a second and more at 72 characters of ASCII in a
# row): the estimate reads the first 40, which a strong long password passes on its own.
ESTIMATE_CHARS = 40
# Words an attacker who knows this server would try first.
_SITE_WORDS = ["chatserver", "chat", "support", "admin", "agent", "password"]


@functools.cache
def common_passwords() -> frozenset[str]:
    """About 20,000 of the most common passwords (the list Django ships, BSD licence)."""
    data = (resources.files("chatserver") / "bundled" / "common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def check_policy(password: str, name: str | None = None) -> str | None:
    """A reason the password is refused, or None when it is acceptable.

    No composition rules (NIST SP 800-63B): a length range, no control characters, not a common
    password nor the account name, and a strength estimate (zxcvbn) of at least MIN_SCORE."""
    if len(password) < MIN_LENGTH:
        return f"Passwords need at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Passwords may have at most {MAX_LENGTH} characters."
    # A NUL or another control character cannot be typed on a sign-in form, and some tools cut
    # the text at a NUL: the password would not be the one the person thinks.
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        return "Passwords may not contain control characters (such as NUL, tab or line breaks)."
    lowered = password.lower()
    if lowered in common_passwords() or len(set(lowered)) < 4:
        return "That password is too common; choose another."
    if name and name.lower() in lowered:
        return "The password must not contain the account name."
    from zxcvbn import zxcvbn  # its dictionaries take a third of a second to load: on first use

    estimate = zxcvbn(password[:ESTIMATE_CHARS],
                      user_inputs=[*_SITE_WORDS, *([name] if name else [])])
    if estimate["score"] < MIN_SCORE:
        warning = str(estimate["feedback"].get("warning") or "").rstrip(".")
        return ("That password is too easy to guess" + (f" ({warning.lower()})" if warning else "")
                + ". A few unrelated words make a strong one.")
    return None


# argon2 takes 64 MiB per hash: at most two at a time, so a burst of sign-ins costs bounded
# memory, and each runs in a thread, so the event loop (every chat) never waits on one. The
# strength estimate (up to a quarter of a second) shares the slots for the same reasons.
_SLOTS = asyncio.Semaphore(2)
# One more, only for browsers that signed in to the account before: however many strangers'
# attempts wait for the two above, the owner's own browser does not queue behind them.
_KNOWN_SLOT = asyncio.Semaphore(1)


async def check_policy_async(password: str, name: str | None = None) -> str | None:
    async with _SLOTS:
        return await asyncio.to_thread(check_policy, password, name)


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
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
