"""The upload-and-analyse page: one local web server over any set of trained runs.

Rush et al. (§10) describe a local server where a person uploads a recording and reads the reviews
nearest to it; here every run that has a `predictor` (`musemb.systems.Predictor`) answers the same
upload: a review run lists its nearest reviews, a MUSLSE run its tags, likely artists and similar
songs, a tag-retrieval run its nearest tags, and runs that search text rank their songs (or albums)
for words typed in the page. `create_app(workdirs)` builds the Starlette app (tests build it too);
`launch/serve.py` runs it under uvicorn.

The JSON API (the page uses nothing else):

  GET  /api/runs                     the loaded runs: name, system, workdir, sample_rate (None: the
                                     run does not hear audio), searches_text
  POST /api/analyze                  multipart form: `file` (the audio), optional `runs` (names,
                                     comma-separated; default all) and `top` (1..50, default 5) ->
                                     {"file", "seconds", "analysed_seconds", "runs": {name: answer}}
  GET  /api/search?q=words[&runs=a,b][&top=5]
                                     -> {"query", "runs": {name: answer}} for the runs that search
                                     text

An answer is the predictor's own dict (`tags`, `artists`, `similar_songs`, `reviews`, `songs`,
`albums`, ...) plus `system`, or `{"system", "error": message}` when that run cannot answer this
input (a run that does not hear audio; a query with no word the run knows). Bad requests get a 4xx
with `{"error": message}` and the server goes on serving: no `file` field or an empty file (400),
an unknown run (404), a file over `max_upload_bytes` (413), longer than `max_file_seconds` (413),
not audio libsndfile decodes (415), shorter than `min_seconds` (422). A run failing in an
unexpected way gives a 500 with the same shape (and a traceback in the server's log).

Limits (each request's work is bounded; memory does not grow with requests served):
- The upload is streamed to a temporary file as it arrives (Starlette's multipart parser spools
  anything over 1 MB to disk), copied in 1 MB pieces to a named temporary file, decoded there and
  deleted. A request announcing more than `max_upload_bytes` (+64 KiB of form overhead) in its
  Content-Length is refused before its body is read; one without Content-Length gets 411.
- Decoding happens once per request, at the file's own rate (`musemb.audio.load_audio`: soundfile,
  mono), reading only the first `max_seconds` (30 s by default: the analysed excerpt); the excerpt
  is resampled once per distinct run rate (`musemb.audio.resample`, soxr HQ).
- The excerpt is cut to whole seconds (floor): every clip length a system sees is one of at most
  `max_seconds` values, so the jit caches of length-dependent feature code (the MFCC codebook,
  descriptor statistics) stay bounded however many uploads arrive; up to 1 s at the end is lost.
- One thread pool of `workers` threads (default 2) runs all decoding and every run's predictions,
  for all requests: concurrent uploads queue, they do not multiply the work in flight.
- Each run is loaded once at start (`musemb.train.load_predictor`, then the predictor's `load()`
  where it loads lazily), so the first upload does not pay for restoring checkpoints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import math
import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from musemb import audio

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.html")
MAX_UPLOAD_BYTES = 50 * 1024 * 1024     # 50 MiB: a 4-minute WAV at 44.1 kHz stereo is 42 MB
MAX_FILE_SECONDS = 20 * 60.0            # longer files are refused (their headers say how long)
MAX_SECONDS = 30.0                      # the analysed excerpt: the file's first 30 s
MIN_SECONDS = 1.0                       # shorter clips are refused (one whole second is needed)
WORKERS = 2
MAX_TOP = 50
_FORM_OVERHEAD = 64 * 1024              # multipart boundaries and the small fields
_CHUNK = 1024 * 1024


class RequestError(Exception):
  """A bad request: answered with `status` and `{"error": message}`."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may cost (module docstring)."""

  max_upload_bytes: int = MAX_UPLOAD_BYTES
  max_file_seconds: float = MAX_FILE_SECONDS
  max_seconds: float = MAX_SECONDS
  min_seconds: float = MIN_SECONDS

  def __post_init__(self):
    if self.max_upload_bytes <= 0:
      raise ValueError(f"max_upload_bytes={self.max_upload_bytes} must be positive.")
    if not 1.0 <= self.min_seconds <= self.max_seconds <= self.max_file_seconds:
      raise ValueError(f"need 1 <= min_seconds ({self.min_seconds}) <= max_seconds "
                       f"({self.max_seconds}) <= max_file_seconds ({self.max_file_seconds}).")


@dataclasses.dataclass
class Run:
  """One loaded run: its page name, system and predictor."""

  name: str
  workdir: str
  system: str
  predictor: Any

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "system": self.system, "workdir": self.workdir,
            "sample_rate": self.predictor.sample_rate,
            "searches_text": bool(self.predictor.searches_text)}


def run_names(workdirs: Sequence[str]) -> list[str]:
  """Short unique names: each workdir relative to their common folder (one run: its basename).

  workdirs/demo, workdirs/won/acoustic_authors, workdirs/reviews/main -> demo,
  won/acoustic_authors, reviews/main.
  """
  paths = [os.path.abspath(w.rstrip(os.sep) or os.sep) for w in workdirs]
  if len(set(paths)) != len(paths):
    raise ValueError(f"a workdir is named twice in {list(workdirs)}; name each run once.")
  if len(paths) == 1:
    return [os.path.basename(paths[0]) or paths[0]]
  common = os.path.commonpath(paths)
  names = [os.path.relpath(p, common) for p in paths]
  if "." in names:          # one workdir holds another: fall back to the paths as given
    names = [os.path.normpath(w) for w in workdirs]
  return names


def load_runs(workdirs: Sequence[str], **options) -> list[Run]:
  """Each workdir's predictor, loaded now (`musemb.train.load_predictor`, then `load()`)."""
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  if not workdirs:
    raise ValueError("no workdirs given: name one or more trained runs.")
  runs = []
  for name, workdir in zip(run_names(workdirs), workdirs):
    system, _ = systems.for_workdir(workdir)
    start = time.time()
    predictor = train.load_predictor(workdir, **options)
    if callable(getattr(predictor, "load", None)):
      predictor.load()       # restore the checkpoint now, not on the first request
    logging.info("serve: loaded %s (%s) from %s in %.1f s", name, system.name, workdir,
                 time.time() - start)
    runs.append(Run(name, workdir, system.name, predictor))
  return runs


def _finite(x: Any) -> Any:
  """JSON-safe copy: NaN/inf floats become None (strict JSON has no NaN)."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def decode_upload(path: str, rates: Sequence[int], limits: Limits, filename: str
                  ) -> tuple[float, dict[int, np.ndarray]]:
  """(file's seconds, {rate: mono excerpt}) of an uploaded file; decoded once, resampled per rate.

  Raises RequestError for an empty, undecodable, too long or too short file (message names the
  upload, not the temporary path).
  """
  if os.path.getsize(path) == 0:
    raise RequestError(400, f"{filename!r} is empty (0 bytes): choose an audio file.")
  try:
    info = sf.info(path)
    native, seconds = int(info.samplerate), float(info.duration)
  except (sf.SoundFileError, RuntimeError, OSError, EOFError, ValueError):
    native, seconds = None, None
  if native is None or native <= 0:
    # Not a format libsndfile knows: load_audio says so in its own words.
    native = rates[0] if rates else 16000
  if seconds is not None and seconds > limits.max_file_seconds:
    raise RequestError(413, f"{filename!r} lasts {seconds:.0f} s, over the limit of "
                            f"{limits.max_file_seconds:.0f} s: upload a shorter excerpt.")
  try:
    wave = audio.load_audio(path, native, mono=True, max_seconds=limits.max_seconds)
  except audio.AudioError as e:
    message = str(e).replace(repr(path), repr(filename)).replace(path, filename)
    status = {"empty": 400, "unreadable": 415}.get(e.reason, 422)
    raise RequestError(status, message) from e
  if seconds is None:
    seconds = len(wave) / native
  whole = int(len(wave) // native)         # whole seconds: bounded set of clip lengths
  if whole < limits.min_seconds:
    raise RequestError(422, f"{filename!r} lasts {len(wave) / native:.2f} s; at least "
                            f"{limits.min_seconds:g} s of audio is needed.")
  wave = wave[:whole * native]
  return seconds, {r: audio.resample(wave, native, r) for r in sorted(set(rates))}


def _choose(runs: dict[str, Run], selection: Any) -> list[Run]:
  if selection is not None and not isinstance(selection, str):
    raise RequestError(400, "`runs` must be text: run names separated by commas.")
  if not selection or not selection.strip():
    return list(runs.values())
  names = [s.strip() for s in selection.split(",") if s.strip()]
  unknown = [n for n in names if n not in runs]
  if unknown:
    raise RequestError(404, f"unknown run(s) {unknown}; loaded runs: {sorted(runs)}.")
  return [runs[n] for n in dict.fromkeys(names)]


def _top(value: Any, default: int) -> int:
  if value is None or value == "":
    return default
  try:
    top = int(value)
  except (TypeError, ValueError):
    raise RequestError(400, f"top={value!r} is not a whole number.") from None
  if not 1 <= top <= MAX_TOP:
    raise RequestError(400, f"top={top} must be between 1 and {MAX_TOP}.")
  return top


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({"error": message}, status_code=status)


def create_app(workdirs: Sequence[str] = (), *, runs: Sequence[Run] | None = None,
               limits: Limits = Limits(), workers: int = WORKERS, top: int = 5) -> Starlette:
  """The page and its API over `workdirs` (loaded now), or over already loaded `runs`.

  Args:
    workdirs: trained runs whose systems have a predictor.
    runs: loaded runs instead (tests share one set between apps).
    limits: upload size and duration limits.
    workers: threads of the one pool that decodes and predicts for every request.
    top: results listed per question when the request does not say.
  """
  if runs is None:
    runs = load_runs(workdirs)
  if not runs:
    raise ValueError("create_app needs at least one run.")
  if workers < 1:
    raise ValueError(f"workers={workers} must be >= 1.")
  by_name = {r.name: r for r in runs}
  if len(by_name) != len(runs):
    raise ValueError(f"run names repeat: {[r.name for r in runs]}.")
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve")

  async def in_pool(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

  def answer(run: Run, method: str, arg: Any, n: int) -> dict[str, Any]:
    try:
      out = getattr(run.predictor, method)(arg, n)
    except ValueError as e:            # the run cannot answer this input: say why, per run
      return {"system": run.system, "error": str(e)}
    return {"system": run.system, **_finite(out)}

  async def page(request: Request):
    del request
    return FileResponse(PAGE, media_type="text/html")

  async def list_runs(request: Request):
    del request
    return JSONResponse({"runs": [r.describe() for r in runs],
                         "limits": dataclasses.asdict(limits)})

  async def analyze(request: Request):
    length = request.headers.get("content-length")
    if length is None:
      return _error(411, "send the upload with a Content-Length header.")
    if not length.isdigit() or int(length) > limits.max_upload_bytes + _FORM_OVERHEAD:
      return _error(413, f"the upload is {length} bytes, over the limit of "
                         f"{limits.max_upload_bytes} bytes: upload a shorter excerpt.")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
      return _error(400, "send a multipart form (field `file`), e.g. "
                         "curl -F file=@song.wav http://HOST/api/analyze.")
    async with request.form(max_files=1, max_fields=8) as form:
      upload = form.get("file")
      if not isinstance(upload, UploadFile):
        return _error(400, "the form has no `file` field holding an uploaded file.")
      chosen = _choose(by_name, form.get("runs"))
      n = _top(form.get("top"), top)
      filename = os.path.basename(upload.filename or "upload")
      hearing = [r for r in chosen if r.predictor.sample_rate is not None]
      with tempfile.NamedTemporaryFile(prefix="musemb-upload-", suffix=".audio") as tmp:
        size = await in_pool(_copy, upload.file, tmp, limits.max_upload_bytes)
        if size > limits.max_upload_bytes:
          return _error(413, f"{filename!r} is over the limit of {limits.max_upload_bytes} "
                             "bytes: upload a shorter excerpt.")
        seconds, waves = await in_pool(decode_upload, tmp.name,
                                       [r.predictor.sample_rate for r in hearing], limits,
                                       filename)
    answers = await asyncio.gather(*[
        in_pool(answer, r, "analyze", waves[r.predictor.sample_rate], n) for r in hearing])
    out = dict(zip([r.name for r in hearing], answers))
    for r in chosen:
      if r.predictor.sample_rate is None:
        out[r.name] = {"system": r.system, "error": "this run does not hear audio (its songs come "
                       "from listening data); it answers text queries only."}
    analysed = (len(next(iter(waves.values()))) / next(iter(waves)) if waves else 0.0)
    return JSONResponse({"file": filename, "seconds": round(seconds, 3),
                         "analysed_seconds": round(analysed, 3),
                         "runs": {r.name: out[r.name] for r in chosen}})

  async def search(request: Request):
    text = request.query_params.get("q", "").strip()
    if not text:
      return _error(400, "give some words: /api/search?q=dark+ambient+piano.")
    if len(text) > 500:
      return _error(400, f"the query has {len(text)} characters; keep it under 500.")
    chosen = [r for r in _choose(by_name, request.query_params.get("runs"))
              if r.predictor.searches_text]
    if not chosen:
      return _error(400, "none of the chosen runs searches text (a tag-retrieval or review run "
                         "does); loaded: " + ", ".join(f"{r.name} ({r.system})" for r in runs))
    n = _top(request.query_params.get("top"), top)
    answers = await asyncio.gather(*[in_pool(answer, r, "search", text, n) for r in chosen])
    return JSONResponse({"query": text, "runs": dict(zip([r.name for r in chosen], answers))})

  async def request_error(request: Request, exc: RequestError):
    del request
    return _error(exc.status, str(exc))

  async def http_error(request: Request, exc: HTTPException):
    del request      # Starlette's own refusals (a malformed form, an unknown path), as JSON too
    return _error(exc.status_code, str(exc.detail))

  async def server_error(request: Request, exc: Exception):
    logging.exception("serve: %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, f"the server failed on this request ({type(exc).__name__}: {exc}); it "
                       "goes on serving, and its log has the traceback.")

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    yield
    pool.shutdown(wait=False, cancel_futures=True)

  app = Starlette(
      routes=[Route("/", page), Route("/api/runs", list_runs),
              Route("/api/analyze", analyze, methods=["POST"]), Route("/api/search", search)],
      exception_handlers={RequestError: request_error, HTTPException: http_error,
                          Exception: server_error},
      lifespan=lifespan)
  app.state.runs, app.state.limits, app.state.pool = runs, limits, pool
  return app


def _copy(source, target, limit: int) -> int:
  """Copies the spooled upload into `target` in 1 MB pieces; stops once past `limit` bytes."""
  source.seek(0)
  size = 0
  while True:
    piece = source.read(_CHUNK)
    if not piece:
      break
    size += len(piece)
    if size > limit:
      break
    target.write(piece)
  target.flush()
  return size

