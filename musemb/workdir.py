"""Keeping a user's earlier results safe: one run per folder, and a rerun that matches its config.

* `Lock(path)`: an exclusive lock file for a run's lifetime (`<workdir>/.lock`, or a prepare's
  `<data_dir>/.musemb-prepare.lock`), holding the host, the pid and the start time. A second run on
  the same folder is refused with a message naming the holder; a lock left by a process that died
  on this host is detected (its pid no longer exists) and taken over. A lock from another host is
  never taken over automatically: its holder cannot be checked from here, so the message says how
  to remove it once the user knows that run is gone.
* `check_resume(saved, new, allow)`: compares a rerun's config with the `config.json` the run was
  started with. Keys that only change bookkeeping (log/checkpoint periods, devices, evaluation
  settings) may differ freely; keys that may change on resume without changing what the checkpoint
  means (durations, the learning rate and its drops, patience) need the user to say so
  (`--allow_changes=train.num_steps,...`); any other difference (shapes, data, the loss, the
  seed...) is refused, with the differing keys and the ways out. Nothing is written before the
  check passes.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from absl import logging

# Keys that never change what a checkpoint means: how often things happen, where, and how the
# final evaluation is run.
FREE_KEYS = ("train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
             "train.eval_every", "train.eval_every_epochs", "train.num_devices",
             "train.steps_per_call", "eval.")
# Keys a user may change on resume, saying so: the run continues the same model and optimizer.
RESUMABLE_KEYS = ("train.num_steps", "train.epochs", "train.examples_per_epoch", "train.patience",
                  "optimizer.learning_rate", "optimizer.plateau_drops",
                  "optimizer.plateau_factor")
# Keys added to the configs after runs existed, each with the value that reproduces what the code
# did before it had the key. A saved config without such a key (a run started on older code) is
# read as holding that value, so the run still resumes; a different value is still a mismatch.
# A pattern ending in "." covers a block whose keys matter only when another added key selects
# it (tagprop's model.shortchunk.* with model.name="shortchunk"): absent, it reads as the new values.
AS_NOW = "<as in the new config>"
ADDED_KEYS = {"model.dtype": "float32", "model.bag_form": "auto", "data.cache_dir": "",
              "model.label_bias": False, "loss.positives": "one",
              "text.word_vectors": "", "model.name": "samplecnn", "objective.category_r": "",
              "model.shortchunk.": AS_NOW}


class WorkdirBusyError(RuntimeError):
  """Another live process holds the folder's lock."""


class ConfigMismatchError(ValueError):
  """A rerun's config differs from the one the run in that workdir was started with."""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
  return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
  """{dotted key: (saved value, new value)} of every key whose value differs (or is missing on
  one side, shown as "<absent>")."""
  a, b = _flatten(saved), _flatten(new)
  for pattern, old_behaviour in ADDED_KEYS.items():
    for key in b:
      if key not in a and _matches(key, (pattern,)):
        a[key] = b[key] if old_behaviour == AS_NOW else old_behaviour
  return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
          if a.get(k, "<absent>") != b.get(k, "<absent>")}


def check_resume(saved: Mapping[str, Any], new: Mapping[str, Any], allow: Iterable[str] = (),
                 *, workdir: str = "the workdir") -> dict[str, tuple]:
  """Refuses a rerun whose config would change what the saved run means; returns the allowed
  differences (logged by the caller).

  Raises:
    ConfigMismatchError: differing keys outside `FREE_KEYS`, unless each is a `RESUMABLE_KEYS`
      key named in `allow`; the message lists them and the ways out.
  """
  allow = tuple(allow)
  unknown = [k for k in allow if not _matches(k, RESUMABLE_KEYS)]
  if unknown:
    raise ConfigMismatchError(f"--allow_changes names {unknown}, which cannot change on resume; "
                              f"the keys that can: {', '.join(RESUMABLE_KEYS)}.")
  diff = config_differences(saved, new)
  fatal = {k: v for k, v in diff.items() if not _matches(k, FREE_KEYS + RESUMABLE_KEYS)}
  unasked = {k: v for k, v in diff.items()
             if _matches(k, RESUMABLE_KEYS) and not _matches(k, allow)}
  if fatal or unasked:
    lines = [f"  {k}: {old!r} in the saved run, {new!r} now" for k, (old, new) in
             {**fatal, **unasked}.items()]
    ways = [f"use a new --workdir for a new run (the one in {workdir} is left as it is)"]
    if unasked and not fatal:
      ways.append(f"or continue this run with the change: --allow_changes={','.join(unasked)}")
    elif unasked:
      ways.append(f"(only {', '.join(RESUMABLE_KEYS)} may change on resume, with --allow_changes)")
    raise ConfigMismatchError(
        f"{workdir} holds a run started with another config; these keys differ:\n"
        + "\n".join(lines) + "\n" + "; ".join(ways) + ".")
  return diff


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM     # exists, owned by someone else
  return True


class Lock:
  """An exclusive lock file, taken at `__enter__` (or `acquire`) and removed at release.

  The file holds {"host", "pid", "started", "what"}. Taking it is an atomic `O_EXCL` create; a
  lock whose pid is dead on this host is replaced (logged), any other is refused.
  """

  def __init__(self, path: str, what: str):
    self.path = path
    self.what = what
    self._held = False

  def _holder(self) -> dict[str, Any] | None:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, json.JSONDecodeError):
      return {}                # unreadable: a lock written halfway by a process that died

  def _refuse_if_live(self, holder: dict[str, Any]) -> None:
    """Raises `WorkdirBusyError` unless `holder` (the lock file's content) is a dead process of
    this host, or unreadable (a lock written halfway by a process that died)."""
    same_host = holder.get("host") == socket.gethostname()
    pid = holder.get("pid")
    if not holder or (same_host and isinstance(pid, int) and not _alive(pid)):
      return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    fix = (f"wait for it to finish or stop it (kill {pid})" if same_host else
           f"if that run is gone (host {holder.get('host')} cannot be checked from here), "
           f"delete {self.path}")
    raise WorkdirBusyError(
        f"{os.path.dirname(os.path.abspath(self.path))} is in use by {holder.get('what')} "
        f"(host {holder.get('host')}, pid {pid}, since {since}); {fix}. Two runs in one "
        "folder would overwrite each other's checkpoints.")

  def acquire(self) -> "Lock":
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "what": self.what}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is None:
          continue             # released between our open and our read: try again
        self._refuse_if_live(holder)
        logging.warning("Taking over %s: its holder %s is no longer running.", self.path,
                        holder or "(unreadable)")
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self._held = True
      return self
    raise WorkdirBusyError(f"could not take {self.path}: another process keeps taking it.")

  def check_free(self) -> None:
    """Raises `WorkdirBusyError` now if a live process holds the lock (a cheap early check; the
    atomic `acquire` decides)."""
    holder = self._holder()
    if holder is not None:
      self._refuse_if_live(holder)

  def release(self) -> None:
    if self._held:
      self._held = False
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> "Lock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()



def preflight(workdir: str) -> None:
  """What a launcher checks before importing anything heavy: the workdir is not held by a live
  run (the loop takes the lock atomically, and checks the config, afterwards)."""
  Lock(os.path.join(workdir, ".lock"), "").check_free()
