"""OpenAI's error shape: every refusal is a status code and {"error": {"message", "type", "param", "code"}}.

Clients (the official openai package, LangChain, llama.cpp's tools) read `message` and `code`; a
raw traceback or a plain-text body breaks them, so every failure of a request ends here.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

INVALID = "invalid_request_error"


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = INVALID, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.param, self.code), self.status, headers=self.headers)


def error_body(message: str, type: str = INVALID, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)
