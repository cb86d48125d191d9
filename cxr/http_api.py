"""Plain HTTP/JSON door beside the Gradio UI: ``POST /v1/predict``, ``GET /v1/models``, ``GET /v1/health``.

One request, one JSON answer: the same record the Gradio API's third output carries (from
:class:`cxr.service.Screening`, the one answer every door gives). It shares the server's capacity:
the models (and their one-request-at-a-time lock) are the UI's, and one :class:`cxr.capacity.Capacity`
bounds it with the Gradio API's doors: past its waiting requests a new one is turned away with 503
and ``Retry-After``, as the Gradio queue turns them away when full. The upload limit is enforced while
the body is read, not after. Every error is ``{"error": "..."}`` with its status, never a traceback.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from cxr.capacity import Capacity, ServerBusyError
from cxr.errors import ImageReadError
from cxr.io import MAX_FILE_BYTES, formats_text
from cxr.service import Screening, UnknownModelError

log = logging.getLogger(__name__)

FORM_SLACK = 1024 * 1024  # multipart headers and the small form fields around the file


class BodyTooLargeError(Exception):
    """The body went past the limit while it was read."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": f"{formats_text()}"},
                        "model": {"type": "string", "description": "a name from GET /v1/models (default: the default)"},
                        "cam": {"type": "boolean", "default": False, "description": "add the Grad-CAM overlay"},
                    },
                },
                "example": {"file": "(chest X-ray bytes)", "model": "efficientnet_lite0_shift", "cam": False},
            }
        },
    },
    "responses": {
        "200": {
            "description": "The answer",
            "content": {
                "application/json": {
                    "example": {
                        "probability": 0.084,
                        "decision": "NORMAL",
                        "threshold": 0.679,
                        "unusual": False,
                        "reason": None,
                        "uncertain": False,
                        "ood_distance": 107.6,
                        "model": "efficientnet_lite0_shift",
                        "sha256": "e8273331...",
                    }
                }
            },
        },
        "413": {"description": "Over the size limit"},
        "415": {"description": "Not an image that can be read"},
        "404": {"description": "Unknown model"},
        "422": {"description": "No file"},
        "503": {"description": "Server full (see Retry-After)"},
    },
}


async def _read_form(request: Request, limit: int):
    """The multipart form, counting bytes as they arrive: past ``limit`` the read stops (BodyTooLargeError)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    received = 0
    receive = request.receive

    async def counted():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLargeError
        return message

    return await Request(request.scope, counted).form(max_files=1, max_fields=8)


def _flag(value: str | None) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ApiError(422, f"cam must be true or false, not {value!r}.")


def router(
    screening: Screening,
    capacity: Capacity | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    page_ready: threading.Event | None = None,
) -> APIRouter:
    """The /v1 routes over ``screening``, sharing its models (and ``capacity``, if given) with the other doors.

    ``page_ready``: set once the rest of the app (the page, gradio_client, MCP) is up; health reports it.
    """
    api = APIRouter(prefix="/v1", tags=["screening"])
    capacity = capacity or Capacity(workers=2, max_waiting=64)

    @api.post("/predict", openapi_extra=PREDICT_DOC, summary="Screen one chest X-ray")
    async def predict(request: Request) -> JSONResponse:
        """One chest X-ray → P(pneumonia), the decision (PNEUMONIA, NORMAL or NOT_ASSESSED) and flags."""
        try:
            try:
                form = await _read_form(request, max_bytes + FORM_SLACK)
            except BodyTooLargeError:
                raise ApiError(413, f"The file is over the limit of {max_bytes // 2**20} MB.") from None
            except (MultiPartException, HTTPException) as error:  # a body that is not a multipart form
                raise ApiError(422, f"Send the chest X-ray as a multipart form ({error}).") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "Send the chest X-ray as the multipart form field 'file'.")
            model, cam = form.get("model") or None, _flag(form.get("cam"))
            with tempfile.TemporaryDirectory(prefix="cxr-http-") as folder:  # deleted on the way out
                path = Path(folder) / "upload"
                path.write_bytes(await upload.read())
                if path.stat().st_size > max_bytes:
                    raise ApiError(413, f"The file is over the limit of {max_bytes // 2**20} MB.")
                _, overlay, record = await capacity.run(screening.screen, path, model, cam)
            if cam and overlay is not None:
                buffer = io.BytesIO()
                overlay.save(buffer, format="JPEG", quality=90)
                record["overlay_jpeg_base64"] = base64.b64encode(buffer.getvalue()).decode()
            return JSONResponse(record)
        except ServerBusyError as error:
            log.warning("refused (503): %s", error)
            return _error(503, str(error), {"Retry-After": "2"})
        except ApiError as error:
            log.warning("refused (%d): %s", error.status, error.message)
            return _error(error.status, error.message, error.headers)
        except ImageReadError as error:
            log.warning("refused (415): %s", error)
            return _error(415, str(error))
        except UnknownModelError as error:
            log.warning("refused (404): %s", error)
            return _error(404, str(error))

    @api.get("/models", summary="The models on offer")
    def models() -> list[dict]:
        return screening.describe_models()

    @api.get("/health", summary="200 once the default model is loaded and warm (/v1 answers), 503 before")
    def health() -> JSONResponse:
        """``page``: whether the page, gradio_client and MCP answer too (a start serves /v1 first)."""
        if screening.ready.is_set():
            page = page_ready is None or page_ready.is_set()
            return JSONResponse({"status": "ok", "model": screening.default, "page": page})
        return _error(503, "The model is still loading.", {"Retry-After": "2"})

    return api
