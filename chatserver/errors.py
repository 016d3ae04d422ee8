"""One error hierarchy: each error carries its HTTP status, WebSocket close code and code.

The `code` is the stable machine-readable name clients branch on; `message` is for people and never
holds PII.
"""

from __future__ import annotations

# Close codes that more than one module sends: defined once, here.
CLOSE_SESSION_ENDED = 4401  # not signed in, or the session ended (logout, erasure)
CLOSE_NO_CONSENT = 4403  # no consent to the current policy
CLOSE_BLOCKED = 4423  # an agent blocked this visitor (or their address) for a while


class ChatError(Exception):
    status: int = 400
    close_code: int | None = None  # None: reported with an error frame, the socket stays open
    code: str = "bad_request"
    message: str = "The request was not understood."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class BadRequest(ChatError):
    pass


class HostNotAllowed(BadRequest):
    code = "host_not_allowed"
    message = ("This server does not answer for that host name. Its operator can add the name to "
               "CHATSERVER_ALLOWED_HOSTS.")


class ValidationFailed(ChatError):
    status = 422
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code or (f"invalid_{field}" if field else None))
        self.field = field

    def to_dict(self) -> dict[str, str]:
        data = super().to_dict()
        if self.field:
            data["field"] = self.field
        return data


class NotSignedIn(ChatError):
    status = 401
    close_code = CLOSE_SESSION_ENDED
    code = "not_signed_in"
    message = "Sign in first."


class ConsentRequired(ChatError):
    status = 403
    close_code = CLOSE_NO_CONSENT
    code = "consent_required"
    message = "Please read and accept the privacy policy first."


class Blocked(ChatError):
    """A visitor an agent blocked: told plainly and neutrally, with no reason or agent named."""

    status = 403
    close_code = CLOSE_BLOCKED
    code = "blocked"
    message = "This chat is not available to you at the moment."


class Forbidden(ChatError):
    status = 403
    code = "forbidden"
    message = "You may not do that."


class ForeignOrigin(ChatError):
    status = 403
    close_code = 1008
    code = "origin_not_allowed"
    message = "Requests from this origin are not allowed."


class NotFound(ChatError):
    status = 404
    code = "not_found"
    message = "Nothing is here."


class Conflict(ChatError):
    status = 409
    code = "conflict"


class PolicyOutdated(Conflict):
    code = "policy_outdated"
    message = "A newer privacy policy has been published; please read and accept it."


class LegalHold(Conflict):
    code = "legal_hold"
    message = (
        "This account is under a legal hold, so its data cannot be deleted now. "
        "Contact us to learn more."
    )


class AlreadyClaimed(Conflict):
    code = "already_claimed"
    message = "Another agent has already taken this conversation."


class ConversationClosed(Conflict):
    code = "conversation_closed"
    message = "This conversation is closed."


class ConsentWithdrawn(Conflict):
    code = "consent_withdrawn"
    message = ("The customer withdrew their consent: the conversation is paused, and nothing can "
               "be sent to it until they consent again.")


class UnsupportedMediaType(ChatError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the body as application/json."


class TooLarge(ChatError):
    status = 413
    close_code = 1009
    code = "too_large"
    message = "That is too large."


class RateLimited(ChatError):
    status = 429
    close_code = 4429
    code = "rate_limited"
    message = "Too many messages; slow down."


class Unavailable(ChatError):
    status = 503
    code = "unavailable"
    message = "The service is not available right now."


class DatabaseError(Unavailable):
    """The configured database cannot be used: unreachable, wrong credentials, unknown scheme,
    or a schema newer than this version of the code."""

    code = "database_unavailable"
    message = "The database cannot be used."
