"""The upload-and-analyse page (`musemb.serve`, `launch/serve.py`) over tiny MUSLSE, Won et al. and
Rush et al. runs: its answers against each run's predictor, the bad uploads' 4xx replies (and the
next request answered), the limits, the launcher, and the page itself in headless Chromium."""

import io
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from musemb import audio
from musemb import serve
from musemb import train
from musemb.data.sources import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOT_ENV = "MUSEMB_SERVE_SCREENSHOT"     # a path: the browser test saves its screenshot there


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir, tmp_path_factory):
  """Tiny MUSLSE, Won et al. (acoustic branch at 16 kHz) and Rush et al. runs, loaded once."""
  from configs import muslse, rush, won
  root = tmp_path_factory.mktemp("serve_runs")
  configs = {"muslse": muslse.get_config("tiny"), "rush": rush.get_config("tiny"),
             "won": won.get_config("tiny")}
  configs["muslse"].train.num_steps = 10
  configs["muslse"].train.eval_every = 0
  configs["won"].data.sample_rate = 16000      # the shared tiny world; rates are tested below
  configs["won"].data.factors = ""
  configs["won"].train.epochs = 0.0
  configs["won"].train.num_steps = 2
  configs["won"].train.eval_every = 0
  configs["won"].words.epochs = 2              # its domain word2vec: the answers, not their quality
  for name, config in configs.items():
    config.data_dir = tiny_dataset_dir
    train.run(config, str(root / name))
  return serve.load_runs([str(root / name) for name in configs])


def _wav(seconds: float = 5.0, rate: int = 16000, channels: int = 1, index: int = 3) -> bytes:
  """A WAV of the tiny world's track `index`, looped to `seconds`."""
  clip = synthetic.SyntheticWorld("tiny", seed=0).audio(index)
  clip = audio.resample(clip, 16000, rate)
  wave = np.resize(clip, int(seconds * rate))
  if channels > 1:
    wave = np.stack([wave] * channels, axis=1)
  buf = io.BytesIO()
  sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
  return buf.getvalue()


def _client(runs, **limits) -> TestClient:
  return TestClient(serve.create_app(runs=runs, limits=serve.Limits(**limits), workers=2))


def _post(client, data: bytes, name: str = "song.wav", **fields):
  return client.post("/api/analyze", files={"file": (name, data, "audio/wav")}, data=fields)


def test_runs_are_listed(runs):
  body = _client(runs).get("/api/runs").json()
  assert [(r["name"], r["system"], r["sample_rate"], r["searches_text"]) for r in body["runs"]] == [
      ("muslse", "muslse", 16000, False), ("rush", "rush", 16000, True),
      ("won", "won", 16000, True)]
  assert body["limits"]["max_seconds"] == serve.MAX_SECONDS


def test_analyze_answers_as_each_predictor_does(runs, tmp_path):
  client = _client(runs)
  data = _wav(seconds=3.5, rate=44100, channels=2)
  response = _post(client, data, top="4")
  assert response.status_code == 200, response.text
  body = response.json()
  assert body["file"] == "song.wav" and body["seconds"] == pytest.approx(3.5)
  assert body["analysed_seconds"] == 3.0              # cut to whole seconds
  # The reference: the file decoded by musemb.audio at its own rate, 3 whole seconds, resampled.
  path = tmp_path / "song.wav"
  path.write_bytes(data)
  wave = audio.resample(audio.load_audio(path, 44100)[:3 * 44100], 44100, 16000)
  for run in runs:
    expected = run.predictor.analyze(wave, 4)
    got = body["runs"][run.name]
    assert got["system"] == run.system
    assert set(got) == set(expected) | {"system"}
    for key, items in expected.items():
      assert len(got[key]) == len(items) == 4, key
      for g, e in zip(got[key], items):
        assert {k: v for k, v in g.items() if k not in ("score", "distance")} == {
            k: v for k, v in e.items() if k not in ("score", "distance")}
        for k in ("score", "distance"):
          if k in e:
            assert g[k] == pytest.approx(e[k], rel=1e-4, abs=1e-5)
  assert {"tags", "artists", "similar_songs"} <= set(body["runs"]["muslse"])
  reviews = body["runs"]["rush"]["reviews"]
  assert [r["distance"] for r in reviews] == sorted(r["distance"] for r in reviews)
  assert all(r["album"] and r["artist"] and r["text"] for r in reviews)
  assert body["runs"]["won"]["tags"]
  # A selection answers only the runs named.
  only = _post(client, data, runs="rush, won").json()
  assert list(only["runs"]) == ["rush", "won"]


def test_decode_upload_decodes_once_and_resamples_per_rate(tmp_path):
  path = tmp_path / "in.wav"
  path.write_bytes(_wav(seconds=4.6, rate=44100, channels=2))
  limits = serve.Limits(max_seconds=3.0)
  seconds, waves = serve.decode_upload(str(path), [16000, 22050, 16000], limits, "in.wav")
  assert seconds == pytest.approx(4.6, abs=1e-3)
  assert sorted(waves) == [16000, 22050]
  mono = audio.load_audio(path, 44100)[:3 * 44100]    # the first max_seconds, whole seconds
  for rate, wave in waves.items():
    assert wave.dtype == np.float32 and len(wave) == 3 * rate
    np.testing.assert_allclose(wave, audio.resample(mono, 44100, rate), atol=1e-5)
  _, waves = serve.decode_upload(str(path), [16000], serve.Limits(), "in.wav")
  assert len(waves[16000]) == 4 * 16000               # 4.6 s -> 4 whole seconds


@pytest.mark.parametrize("case, status, words", [
    ("text", 415, "not an audio format"),
    ("empty", 400, "empty"),
    ("too_large", 413, "over the limit"),
    ("too_large_after_headers", 413, "over the limit"),
    ("too_long", 413, "lasts 6 s, over the limit of 4 s"),
    ("too_short", 422, "at least 1 s"),
    ("no_file_field", 400, "no `file` field"),
    ("not_multipart", 400, "multipart form"),
    ("unknown_run", 404, "unknown run"),
    ("two_files", 400, "Maximum number of files is 1"),
    ("bad_top", 400, "top="),
])
def test_bad_uploads_get_a_4xx_and_the_next_upload_is_answered(runs, case, status, words):
  client = _client(runs, max_upload_bytes=200_000, max_file_seconds=4.0, max_seconds=3.0)
  if case == "text":
    response = _post(client, b"these are words, not audio\n" * 20, name="notes.txt")
  elif case == "empty":
    response = _post(client, b"")
  elif case == "too_large":               # refused from its Content-Length, body unread
    response = _post(client, b"\0" * 400_000)
  elif case == "too_large_after_headers":  # within the form overhead: caught while copying
    response = _post(client, b"\0" * 210_000)
  elif case == "too_long":                # 6 s at 8 kHz: 96 kB, under the size limit
    response = _post(client, _wav(seconds=6.0, rate=8000))
  elif case == "too_short":
    response = _post(client, _wav(seconds=0.6))
  elif case == "no_file_field":
    response = client.post("/api/analyze", files={"other": ("a.wav", _wav(2.0), "audio/wav")})
  elif case == "not_multipart":
    response = client.post("/api/analyze", data={"file": "song.wav"})
  elif case == "two_files":
    response = client.post("/api/analyze", files=[("file", ("a.wav", _wav(2.0), "audio/wav")),
                                                  ("file", ("b.wav", _wav(2.0), "audio/wav"))])
  elif case == "unknown_run":
    response = _post(client, _wav(2.0), runs="muslse,nope")
  else:
    response = _post(client, _wav(2.0), top="0")
  assert response.status_code == status, response.text
  assert words in response.json()["error"]
  assert "musemb-upload" not in response.json()["error"]    # names the upload, not the temp file
  good = _post(client, _wav(2.0), runs="muslse")
  assert good.status_code == 200 and good.json()["runs"]["muslse"]["tags"]


class _FailingPredictor:
  """A predictor that breaks unexpectedly (a bug, a vanished file): the server must survive it."""

  sample_rate, searches_text = 16000, False

  def analyze(self, waveform, top):
    raise RuntimeError(f"checkpoint vanished ({len(waveform)} samples, top {top})")


def test_an_unexpected_failure_is_a_json_500_and_the_server_goes_on(runs):
  broken = serve.Run("broken", "/nowhere", "muslse", _FailingPredictor())
  client = TestClient(serve.create_app(runs=[broken, *runs]), raise_server_exceptions=False)
  response = _post(client, _wav(2.0))
  assert response.status_code == 500
  assert "RuntimeError: checkpoint vanished" in response.json()["error"]
  assert _post(client, _wav(2.0), runs="muslse").status_code == 200


def test_search_ranks_songs_and_albums(runs):
  client = _client(runs)
  body = client.get("/api/search", params={"q": "acoustic guitar", "top": 3}).json()
  assert list(body["runs"]) == ["rush", "won"]            # the runs that search text
  for run in runs:
    if run.predictor.searches_text:
      expected = run.predictor.search("acoustic guitar", 3)
      got = body["runs"][run.name]
      key = "songs" if "songs" in expected else "albums"
      assert [s.get("track_id", s.get("album")) for s in got[key]] == [
          s.get("track_id", s.get("album")) for s in expected[key]]
  unknown = client.get("/api/search", params={"q": "zzzqqq"})
  assert unknown.status_code == 200
  assert all("error" in a for a in unknown.json()["runs"].values())
  assert client.get("/api/search", params={"q": " "}).status_code == 400
  none = client.get("/api/search", params={"q": "guitar", "runs": "muslse"})
  assert none.status_code == 400 and "searches text" in none.json()["error"]
  assert client.get("/api/search", params={"q": "guitar", "runs": "nope"}).status_code == 404


def test_page_is_served(runs):
  response = _client(runs).get("/")
  assert response.status_code == 200 and "text/html" in response.headers["content-type"]
  assert 'id="file"' in response.text and "/api/analyze" in response.text


def test_run_names_and_limits():
  assert serve.run_names(["workdirs/demo", "workdirs/won/acoustic_authors",
                          "workdirs/reviews/main/"]) == ["demo", "won/acoustic_authors",
                                                         "reviews/main"]
  assert serve.run_names(["/a/b/run"]) == ["run"]
  with pytest.raises(ValueError, match="twice"):
    serve.run_names(["w/a", "w/a/"])
  with pytest.raises(ValueError, match="min_seconds"):
    serve.Limits(max_seconds=0.5)


def test_launcher_without_runs_names_the_demos(tmp_path, repo_env):
  proc = subprocess.run([sys.executable, "-m", "launch.serve"], cwd=tmp_path, env=repo_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  for target in ("make demo", "make demo-won", "make demo-reviews"):
    assert target in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "launch.serve", f"--workdirs={tmp_path}"],
                        cwd=tmp_path, env=repo_env(), capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode != 0 and "no trained run" in proc.stderr


def _browser():
  """A headless Chromium driven by selenium, or None with the reason."""
  try:
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, "selenium is not installed (pip install -e '.[test]')"
  binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)
  driver = shutil.which("chromedriver")
  if not binary or not driver:
    return None, ("no Chromium and chromedriver found: `apt-get install chromium chromium-driver` "
                  "(what .ci/run does) runs the page in a real browser")
  return (webdriver, binary, driver), ""


def test_page_in_a_headless_browser(runs, tmp_path):
  found, why = _browser()
  if not found:
    pytest.skip(why)
  import uvicorn  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.options import Options  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support import expected_conditions as ec  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  webdriver, binary, driver_path = found
  server = uvicorn.Server(uvicorn.Config(serve.create_app(runs=runs), host="127.0.0.1", port=0,
                                         log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not server.started and time.time() < deadline:
    time.sleep(0.05)
  assert server.started, "the server did not start"
  port = server.servers[0].sockets[0].getsockname()[1]
  song, notes = tmp_path / "song.wav", tmp_path / "notes.txt"
  song.write_bytes(_wav(seconds=5.0))
  notes.write_text("these are words, not audio\n")
  options = Options()
  options.binary_location = binary
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
               "--window-size=1280,1000"):
    options.add_argument(flag)
  browser = webdriver.Chrome(service=Service(driver_path), options=options)
  try:
    wait = WebDriverWait(browser, 60)
    browser.get(f"http://127.0.0.1:{port}/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "runs-line"), "3 run(s)"))
    browser.find_element(By.ID, "file").send_keys(str(song))
    browser.find_element(By.ID, "analyse").click()
    wait.until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, '#results [data-run="rush"] [data-list="reviews"]')))
    results = browser.find_element(By.ID, "results")
    for run, lists in (("muslse", ("tags", "artists", "similar_songs")), ("rush", ("reviews",)),
                       ("won", ("tags",))):
      card = results.find_element(By.CSS_SELECTOR, f'[data-run="{run}"]')
      for name in lists:
        card.find_element(By.CSS_SELECTOR, f'[data-list="{name}"]')
      assert len(card.find_elements(By.CSS_SELECTOR, "tr, li")) > len(lists)   # rows, not only heads
    review = runs[1].predictor.analyze(audio.load_audio(song, 16000), 1)["reviews"][0]
    assert review["album"] in results.find_element(By.CSS_SELECTOR, '[data-run="rush"]').text
    browser.find_element(By.ID, "query").send_keys("acoustic guitar")
    browser.find_element(By.ID, "search").click()
    wait.until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, '#search-results [data-run="won"] [data-list="songs"]')))
    songs = browser.find_element(By.CSS_SELECTOR, '#search-results [data-run="won"]').text
    first = runs[2].predictor.search("acoustic guitar", 5)["songs"][0]
    assert first["title"] in songs
    assert not browser.find_element(By.ID, "error").is_displayed()
    shot = os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "serve.png")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height + 140, 600), 2400))   # the whole page, top first
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(shot)
    assert os.path.getsize(shot) > 10_000
    browser.find_element(By.ID, "file").send_keys(str(notes))
    browser.find_element(By.ID, "analyse").click()
    wait.until(ec.visibility_of_element_located((By.ID, "error")))
    error = browser.find_element(By.ID, "error").text
    assert "notes.txt" in error and "not an audio format" in error
  finally:
    browser.quit()
    server.should_exit = True
    thread.join(timeout=10)
