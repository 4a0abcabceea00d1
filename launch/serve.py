r"""The upload-and-analyse page over trained runs (`musemb.serve`): a local web server.

  python -m launch.serve --workdirs=workdirs/demo,workdirs/won/acoustic_authors,workdirs/reviews/main
  python -m launch.serve            # the demo runs that exist (what `make serve` runs)

Open the printed address, upload a WAV/FLAC/OGG/MP3 file and read each run's answer (tags, likely
artists, similar songs, nearest reviews), or type words to search the runs that search text. The
same answers come as JSON from `POST /api/analyze` (multipart field `file`), `GET /api/search?q=`
and `GET /api/runs`, e.g. `curl -F file=@song.wav http://127.0.0.1:8000/api/analyze`.

The server listens on 127.0.0.1 unless --host says otherwise; it has no authentication, so do not
expose it beyond a machine you trust. Each run is loaded once at start; uploads over --max_mb or
--max_minutes are refused, and only the first --max_seconds are analysed (`musemb.serve`).
"""

import os

from absl import app
from absl import flags
from absl import logging

from launch import common

# The demo runs `make demo`, `make demo-won` and `make demo-reviews` leave, and how to make each.
DEMO_RUNS = (("workdirs/demo", "make demo"),
             ("workdirs/won/acoustic_authors", "make demo-won"),
             ("workdirs/reviews/main", "make demo-reviews"))

_WORKDIRS = flags.DEFINE_list(
    "workdirs", None, "Trained runs to serve (comma-separated); default: the demo runs that exist "
    f"({', '.join(w for w, _ in DEMO_RUNS)}).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                            "interface; the page has no authentication).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Threads of the one pool that decodes and predicts "
                                "for every request.")
_TOP = flags.DEFINE_integer("top", 5, "Results listed per question by default.")
_MAX_MB = flags.DEFINE_float("max_mb", 50.0, "Largest upload accepted, in MiB.")
_MAX_MINUTES = flags.DEFINE_float("max_minutes", 20.0, "Longest file accepted, in minutes.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 30.0, "Seconds analysed from the file's start.")


def _workdirs() -> list[str]:
  if _WORKDIRS.value:
    missing = [w for w in _WORKDIRS.value if not os.path.exists(os.path.join(w, "config.json"))]
    if missing:
      common.fail(f"{missing} hold no trained run (no config.json); train one with "
                  "`python -m launch.train --config=... --workdir=...` or run a `make demo*`.")
    return list(_WORKDIRS.value)
  found = [w for w, _ in DEMO_RUNS if os.path.exists(os.path.join(w, "config.json"))]
  if not found:
    common.fail("no demo run exists yet; make one or more first: "
                + ", ".join(f"`{make}` ({w})" for w, make in DEMO_RUNS)
                + "; or pass --workdirs=W1,W2 with your own runs.")
  for w, make in DEMO_RUNS:
    if w not in found:
      print(f"(not serving {w}: run `{make}` to add it)")
  return found


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; pass runs with --workdirs=W1,W2.")
  if _TOP.value < 1 or _WORKERS.value < 1 or min(_MAX_MB.value, _MAX_SECONDS.value) <= 0:
    raise app.UsageError("--top, --workers, --max_mb and --max_seconds must be positive.")
  workdirs = _workdirs()
  common.setup()
  import uvicorn  # pylint: disable=g-import-not-at-top
  from musemb import serve  # pylint: disable=g-import-not-at-top
  try:
    limits = serve.Limits(max_upload_bytes=int(_MAX_MB.value * 1024 * 1024),
                          max_file_seconds=_MAX_MINUTES.value * 60.0,
                          max_seconds=_MAX_SECONDS.value)
    application = serve.create_app(workdirs, limits=limits, workers=_WORKERS.value,
                                   top=_TOP.value)
  except (FileNotFoundError, ValueError, TypeError) as e:
    common.fail(str(e))
  for run in application.state.runs:
    print(f"serving {run.name}: {run.system} run in {run.workdir}")
  host = f"[{_HOST.value}]" if ":" in _HOST.value else _HOST.value
  print(f"open http://{host}:{_PORT.value}/  (Ctrl-C stops the server)", flush=True)
  logging.info("serve: %d run(s) on %s:%d", len(application.state.runs), _HOST.value, _PORT.value)
  uvicorn.run(application, host=_HOST.value, port=_PORT.value, log_level="warning")


if __name__ == "__main__":
  app.run(main)
