r"""A bounded load test of the upload-and-analyse server (`launch/serve.py`) on this machine.

  python -m launch.loadtest_serve --workdirs=W1,W2,W3 [--requests=200 --concurrency=8 --rounds=1]

Starts `python -m launch.serve` over the runs on 127.0.0.1 (a free port), waits until it answers,
uploads one clip per length in --seconds once (warm-up: each run compiles its feature code for
those lengths), then sends --requests uploads of those clips, --concurrency at a time, and prints
the failures, the latency percentiles (p50, p95, max) and the server's resident memory (VmRSS from
/proc) after start, after the warm-up and after the load; --rounds repeats the load, reading the
memory after each round (flat rounds: memory does not grow with requests served). The server is
stopped at the end.

Bounded by design: at most 2,000 requests in all and 32 at a time, only to 127.0.0.1, each request given
120 s, and no new request is sent once --time_limit seconds have passed. The clips are synthetic
(a chord with a little noise, 16-bit WAV at 22,050 Hz), so no file is needed.
"""

import concurrent.futures
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from absl import app
from absl import flags
import numpy as np

_WORKDIRS = flags.DEFINE_list("workdirs", None, "The trained runs to serve.", required=True)
_REQUESTS = flags.DEFINE_integer("requests", 200, "Uploads to send (at most 2,000).")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 8, "Uploads in flight at once (at most 32).")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Send the --requests uploads this many times, the "
                               "server's memory read after each (requests x rounds <= 2,000).")
_SECONDS = flags.DEFINE_list("seconds", ["3", "5", "8"], "Clip lengths sent in turn, in seconds.")
_TIME_LIMIT = flags.DEFINE_float("time_limit", 600.0, "No new upload after this many seconds.")
_STARTUP = flags.DEFINE_float("startup_timeout", 300.0, "Seconds to wait for the server.")

_HOST = "127.0.0.1"
_RATE = 22050


def _clip(seconds: float) -> bytes:
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  t = np.arange(int(seconds * _RATE)) / _RATE
  rng = np.random.default_rng(0)
  wave = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
  wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)) + 0.02 * rng.standard_normal(len(t))
  buf = io.BytesIO()
  sf.write(buf, wave.astype(np.float32), _RATE, format="WAV", subtype="PCM_16")
  return buf.getvalue()


def _multipart(data: bytes, name: str) -> tuple[bytes, str]:
  boundary = "musemb" + uuid.uuid4().hex
  body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
          "\r\nContent-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
  return body, f"multipart/form-data; boundary={boundary}"


def _upload(url: str, body: bytes, content_type: str) -> tuple[float, int, str]:
  """(seconds, HTTP status, error text or '')."""
  request = urllib.request.Request(url, data=body, method="POST",
                                   headers={"Content-Type": content_type})
  start = time.perf_counter()
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      response.read()
      status, error = response.status, ""
  except urllib.error.HTTPError as e:
    status, error = e.code, e.read().decode(errors="replace")[:200]
  except (urllib.error.URLError, OSError) as e:
    status, error = 0, str(e)
  return time.perf_counter() - start, status, error


def _rss_mib(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError(f"no VmRSS for process {pid}")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind((_HOST, 0))
    return s.getsockname()[1]


def main(argv):
  del argv
  if (not 1 <= _REQUESTS.value * _ROUNDS.value <= 2000 or _ROUNDS.value < 1
      or not 1 <= _CONCURRENCY.value <= 32):
    raise app.UsageError("--requests x --rounds must be in 1..2000 and --concurrency in 1..32.")
  lengths = [float(s) for s in _SECONDS.value]
  if not lengths or min(lengths) < 1.0 or max(lengths) > 60.0:
    raise app.UsageError("--seconds: clip lengths between 1 and 60 seconds.")
  port = _free_port()
  base = f"http://{_HOST}:{port}"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  log = tempfile.TemporaryFile(mode="w+")   # the server's stderr (a pipe could fill and block it)
  server = subprocess.Popen(
      [sys.executable, "-m", "launch.serve", f"--workdirs={','.join(_WORKDIRS.value)}",
       f"--host={_HOST}", f"--port={port}"], env=env, stdout=subprocess.DEVNULL, stderr=log,
      text=True)
  try:
    start = time.time()
    while True:
      if server.poll() is not None:
        log.seek(0)
        raise SystemExit(f"error: the server exited ({server.returncode}):\n" + log.read()[-3000:])
      try:
        with urllib.request.urlopen(base + "/api/runs", timeout=5) as r:
          r.read()
        break
      except (urllib.error.URLError, OSError):
        if time.time() - start > _STARTUP.value:
          raise SystemExit(f"error: the server did not answer within {_STARTUP.value:.0f} s.")
        time.sleep(0.5)
    print(f"server up in {time.time() - start:.1f} s (pid {server.pid}, {base})")
    rss_start = _rss_mib(server.pid)
    bodies = [_multipart(_clip(s), f"clip{s:g}s.wav") for s in lengths]
    url = base + "/api/analyze"
    for (body, ctype), s in zip(bodies, lengths):
      took, status, error = _upload(url, body, ctype)
      if status != 200:
        raise SystemExit(f"error: warm-up upload of {s:g} s got {status}: {error}")
      print(f"warm-up {s:g} s clip: {took:.2f} s")
    rss_warm = _rss_mib(server.pid)

    deadline = time.time() + _TIME_LIMIT.value
    failed_total = 0

    def one(i):
      if time.time() > deadline:
        return None
      return _upload(url, *bodies[i % len(bodies)])

    with concurrent.futures.ThreadPoolExecutor(_CONCURRENCY.value) as pool:
      for round_ in range(1, _ROUNDS.value + 1):
        load_start = time.perf_counter()
        results = [r for r in pool.map(one, range(_REQUESTS.value)) if r is not None]
        wall = time.perf_counter() - load_start
        rss_end = _rss_mib(server.pid)
        failed = [(s, e) for _, s, e in results if s != 200]
        failed_total += len(failed)
        latency = np.array([t for t, s, _ in results if s == 200]) * 1000.0
        print(f"\nround {round_}: {len(results)} uploads ({', '.join(f'{s:g}' for s in lengths)} s "
              f"clips in turn), {_CONCURRENCY.value} at a time, in {wall:.1f} s "
              f"({len(results) / max(wall, 1e-9):.1f} uploads/s); failed: {len(failed)}")
        if len(results) < _REQUESTS.value:
          print(f"stopped early: --time_limit={_TIME_LIMIT.value:g} s reached")
        if len(latency):
          p50, p95 = np.percentile(latency, [50, 95])
          print(f"latency ms: p50 {p50:.0f}  p95 {p95:.0f}  max {latency.max():.0f}")
        print(f"server RSS MiB: after start {rss_start:.0f}, after warm-up {rss_warm:.0f}, "
              f"after this round {rss_end:.0f} ({rss_end - rss_warm:+.0f} since the warm-up)")
        for status, error in failed[:5]:
          print(f"  failure: {status} {error}")
        if len(results) < _REQUESTS.value:
          break
    if failed_total:
      sys.exit(1)
  finally:
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()
    log.close()


if __name__ == "__main__":
  app.run(main)
