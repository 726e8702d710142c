"""The one error the request path raises; the app renders it in OpenAI's error shape."""

from __future__ import annotations

__all__ = ["InvalidRequest"]


class InvalidRequest(ValueError):
    """A request the server refuses, with the HTTP status and the offending field (``param``)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 422,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.type = type

    def body(self) -> dict[str, dict[str, str | None]]:
        """The JSON body OpenAI clients expect: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
