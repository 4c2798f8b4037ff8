"""The local web page: upload (or paint) a composite's mask, harmonize it, compare, download.

One page (``page.html``, every style and script inline: the page asks nothing
of any other machine) and four routes:

* ``GET /``: the page;
* ``GET /api/checkpoints``: the registered models and the weights found under
  the checkpoint folder (model read from the model card beside a file, else
  from the file name's prefix);
* ``POST /api/harmonize``: multipart ``image``, ``mask``, ``model``,
  ``checkpoint`` (one listed, or a path); answers JSON with the result's URL
  and the harmony score before and after, or ``{"error": ...}`` with status
  400 / 413;
* ``GET /api/result/<id>/<name>.png``: a result, as the :class:`~iharm.api.Harmonizer`
  returned it (lossless PNG, full size).

Everything the server writes (uploads, results) lies in its work folder; the
results of the last :data:`KEEP_RESULTS` requests are kept.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from iharm.api import Harmonizer, as_mask, threshold_mask
from iharm.data.io import read_image, write_image
from iharm.model.registry import MODELS

PAGE = Path(__file__).with_name("page.html")
#: Largest request accepted (image and mask together), bytes.
MAX_UPLOAD_BYTES = 40 * 1024 * 1024
#: Largest composite accepted, pixels (an 8K UHD frame is 33.2 million).
MAX_PIXELS = 40_000_000
KEEP_RESULTS = 20


class BadRequest(ValueError):
    """An upload the page reports to the user (status 400, or 413 for size)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServerState:
    """What the routes share: where weights are looked up, where files go, the loaded models."""

    checkpoints_dir: Path
    work_dir: Path
    device: str = "cpu"
    score_checkpoint: Path | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    harmonizers: dict[tuple[str, Path], Harmonizer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def model_of(weights: Path) -> str | None:
    """The registered model a weights file holds: its model card's ``model`` (``<stem>.json``), else the
    registered name its file name starts with (case-insensitive); None when neither tells."""
    card = weights.with_suffix(".json")
    if card.is_file():
        try:
            model = json.loads(card.read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            model = None
        if model in MODELS:
            return model
    names = sorted(MODELS, key=len, reverse=True)
    return next((name for name in names if weights.name.lower().startswith(name.lower())), None)


def list_checkpoints(folder: Path) -> list[dict[str, str]]:
    """``{label, path, model}`` of every ``*.pth`` under ``folder`` whose model is known (:func:`model_of`)."""
    found = []
    for path in sorted(folder.rglob("*.pth")) if folder.is_dir() else []:
        model = model_of(path)
        if model is not None:
            found.append({"label": f"{model}: {path.relative_to(folder)}", "path": str(path), "model": model})
    return found


def _save_upload(upload: object, field_name: str, folder: Path) -> Path:
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise BadRequest(f"{field_name}: no file was uploaded")
    suffix = Path(upload.filename).suffix.lower()
    target = folder / f"{field_name}{suffix if suffix.isascii() and len(suffix) <= 6 else ''}"
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
    try:
        with Image.open(target) as probe:
            width, height = probe.size
    except Exception:
        raise BadRequest(f"{field_name} ({upload.filename}): not an image this server can read") from None
    if width * height > MAX_PIXELS:
        raise BadRequest(f"{field_name} ({upload.filename}): {width} x {height} is more than "
                         f"{MAX_PIXELS / 1e6:.0f} million pixels")
    return target


def _resolve_weights(state: ServerState, model: str, checkpoint: str) -> tuple[str, Path]:
    if model not in MODELS:
        raise BadRequest(f"model {model!r}: not a registered model ({', '.join(MODELS)})")
    if not checkpoint:
        raise BadRequest("checkpoint: choose one of the list or give the path of a weights file")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BadRequest(f"checkpoint {checkpoint}: no such file")
    return model, path.resolve()


def _harmonizer(state: ServerState, model: str, weights: Path) -> Harmonizer:
    key = (model, weights)
    if key not in state.harmonizers:
        try:
            state.harmonizers[key] = Harmonizer(model, weights, device=state.device,
                                                score_checkpoint=state.score_checkpoint)
        except (ValueError, RuntimeError, KeyError) as error:
            raise BadRequest(f"checkpoint {weights.name}: cannot be loaded as {model}: "
                             f"{str(error).splitlines()[0]}") from None
    return state.harmonizers[key]


def _harmonize(state: ServerState, folder: Path, image_path: Path, mask_path: Path, model: str,
               weights: Path, image_name: str) -> dict[str, object]:
    """Check the pair, harmonize it, write the result PNG into ``folder``; the answer's JSON."""
    try:
        image = read_image(image_path)
        mask = as_mask(mask_path, image.shape[:2])
    except ValueError as error:  # DataError included: it names the uploaded file's server path
        raise BadRequest(str(error).replace(str(folder) + "/", "")) from None
    with state.lock:  # one network at a time: the CPU threads are all in use already
        harmonizer = _harmonizer(state, model, weights)
        started = time.perf_counter()
        try:
            result = harmonizer(image, mask)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        seconds = time.perf_counter() - started
        scores: dict[str, object] = {"score_before": None, "score_after": None, "score_note": ""}
        if state.score_checkpoint is None and model != "BargainNet":
            scores["score_note"] = "not scored: no BargainNet weights (serve.py --score-checkpoint PATH)"
        else:
            scoring_mask = threshold_mask(mask, harmonizer.mask_threshold)
            try:
                scores["score_before"] = round(harmonizer.harmony_score(image, scoring_mask).harmony_score, 4)
                scores["score_after"] = round(harmonizer.harmony_score(result, scoring_mask).harmony_score, 4)
            except ValueError as error:  # a mask the score cannot use
                scores["score_note"] = f"not scored: {error}"
    name = f"{Path(image_name).stem or 'composite'}_harmonized.png"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    write_image(folder / safe, result)
    return {"result": f"api/result/{folder.name}/{safe}", "filename": safe, "model": model,
            "checkpoint": weights.name, "width": image.shape[1], "height": image.shape[0],
            "seconds": seconds, **scores}


def _prune(work_dir: Path) -> None:
    folders = sorted((p for p in work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[:-KEEP_RESULTS]:
        shutil.rmtree(old, ignore_errors=True)


def create_app(state: ServerState) -> Starlette:
    """The page's Starlette application, serving the models of ``state``."""

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text())

    async def checkpoints(request: Request) -> Response:
        return JSONResponse({"models": list(MODELS), "max_upload_bytes": state.max_upload_bytes,
                             "checkpoints": list_checkpoints(state.checkpoints_dir)})

    async def harmonize(request: Request) -> Response:
        folder = state.work_dir / uuid.uuid4().hex
        try:
            length = request.headers.get("content-length")
            if length is None:
                raise BadRequest("the upload has no Content-Length", 411)
            if int(length) > state.max_upload_bytes:
                async for _ in request.stream():  # read and drop it, so that the client gets the answer
                    pass
                raise BadRequest(f"the upload is {int(length) / 2**20:.1f} MB; the limit is "
                                 f"{state.max_upload_bytes / 2**20:.0f} MB", 413)
            folder.mkdir(parents=True)
            async with request.form(max_files=2, max_fields=4) as form:
                image_upload = form.get("image")
                image_path = _save_upload(image_upload, "image", folder)
                mask_path = _save_upload(form.get("mask"), "mask", folder)
                model, weights = _resolve_weights(state, str(form.get("model") or ""),
                                                  str(form.get("checkpoint") or ""))
            answer = await run_in_threadpool(_harmonize, state, folder, image_path, mask_path, model, weights,
                                             image_upload.filename)
        except BadRequest as error:
            shutil.rmtree(folder, ignore_errors=True)
            return JSONResponse({"error": str(error)}, status_code=error.status)
        _prune(state.work_dir)
        return JSONResponse(answer)

    async def result(request: Request) -> Response:
        folder, name = request.path_params["folder"], request.path_params["name"]
        path = state.work_dir / folder / name
        if not (folder.isalnum() and name.endswith("_harmonized.png") and "/" not in name and path.is_file()):
            return JSONResponse({"error": "no such result"}, status_code=404)
        return FileResponse(path, media_type="image/png", filename=name)

    return Starlette(routes=[Route("/", page), Route("/api/checkpoints", checkpoints),
                             Route("/api/harmonize", harmonize, methods=["POST"]),
                             Route("/api/result/{folder}/{name}", result)])
