"""The benchmark suite: every contender on the same files and transforms, each in its own process.

A contender runs as ``_worker.py`` under the interpreter it needs (the suite's
own, or a virtual environment built on first use, see ``envs``), while this
process samples the resident memory of its whole process tree (the DataLoader's
workers included) and records its peak. The physical limit of each task (see
``limits``) is measured in the same run, so efficiency is a ratio of figures
taken minutes apart on the same machine. Nothing is dropped: a contender that
cannot be installed, does not apply or fails is listed with its reason.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from . import envs
from ._worker import ANSWER, TURN, fastload_transforms
from .datasets import KINDS, cache_dir, dataset, linked_copies

__all__ = ["MODES", "TASKS", "Contender", "Task", "run_suite"]

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str      # a datasets.KINDS key, or "user" for PATH
    transform: str    # "rrc", "resize" or "multimodal"
    size: int
    title: str
    batch: int = 64

    def transforms(self):
        """fastload's transforms for the task, as its worker builds them."""
        return fastload_transforms({"transform": self.transform, "size": self.size})


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    builder: str                 # the function in _worker.BUILDERS
    workers: int | None = None   # None: the suite's thread count
    env: str | None = None       # an envs.ENVS key: runs in that virtual environment
    capped: bool = False         # slow: timed on a fixed subset of the files (rates stay per image)
    gpu: bool = False            # runs only where a CUDA GPU is present


TASKS = [
    Task("rrc224", "imagenet", "rrc", 224, "ImageNet-like JPEG -> RandomResizedCrop-224 + flip + normalise"),
    Task("resize224", "imagenet", "resize", 224, "ImageNet-like JPEG -> resize 224x224 + normalise"),
    Task("rrc64", "small", "rrc", 64, "64x64 JPEG -> RandomResizedCrop-64 + flip + normalise"),
    Task("png224", "png", "rrc", 224, "PNG ~256x256 -> RandomResizedCrop-224 + flip + normalise"),
    Task("multimodal", "multimodal", "multimodal", 64, "image 64x64 + caption tokens + 16 CSV floats", batch=32),
]


def contenders(threads: int) -> list[Contender]:
    return [
        Contender("fastload", f"fastload, {threads} threads", "fastload"),
        Contender("fastload-packed", f"fastload, packed shards (fastload pack), {threads} threads", "fastload_packed"),
        Contender("fastload-tar", f"fastload, WebDataset's tar shards, {threads} threads", "fastload_tar"),
        Contender("fastload-stream", f"fastload, the same shards streamed, {threads} threads", "fastload_stream"),
        Contender("generator", "tutorial generator (PIL, np.stack), 1 thread", "generator", 0, capped=True),
        *[Contender(f"torch-{w}", f"torch DataLoader + PIL, {w} workers", "torch", w, capped=w < threads)
          for w in sorted({0, 1, threads})],
        Contender("pillow-simd", f"torch DataLoader + pillow-simd, {threads} workers", "torch", env="pillow-simd"),
        Contender("webdataset", f"WebDataset + PIL, {threads} workers", "webdataset"),
        Contender("ffcv", f"FFCV (.beton), {threads} workers", "ffcv", env="ffcv"),
        Contender("spdl", f"SPDL (FFmpeg decode), {threads} threads", "spdl", env="spdl", capped=True),
        Contender("grain", f"Grain + PIL, {threads} threads", "grain", env="grain", capped=True),
        Contender("dali", f"NVIDIA DALI (GPU decode), {threads} CPU threads", "dali", env="dali", gpu=True),
    ]


#: per mode: the tasks, samples per data set, the memory-curve file counts, timed runs, the cap for slow contenders,
#: and the seconds a contender may take to start (build, first batch, warm-up epoch) or for one timed epoch
MODES = {
    "quick": {"tasks": ("rrc224", "rrc64", "png224", "multimodal"), "imagenet": 256, "small": 2048, "png": 96,
              "multimodal": 1024, "memory": (1000, 10000), "runs": 3, "cap": 96, "timeout": 150},
    "full": {"tasks": tuple(t.name for t in TASKS), "imagenet": 1024, "small": 8192, "png": 256,
             "multimodal": 2048, "memory": (3000, 30000), "runs": 5, "cap": 192, "timeout": 420},
}


def _not_applicable(c: Contender, task: Task) -> str | None:
    if task.transform == "multimodal" and c.builder not in ("fastload", "generator"):
        return "image-only loader: the multi-modal set is compared with the generator baseline"
    return None   # the worker says when a contender cannot read the files (FFCV and PNG)


def _gpu_reason() -> str | None:
    """Why a GPU contender cannot run here, or None."""
    try:
        import torch
        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    return "no CUDA GPU on this machine: DALI decodes and augments on the GPU"


class _RssSampler:
    """Peak resident memory of a process and its descendants (with psutil; without it the
    worker's own getrusage figure stands). The known processes' memory is read every 20 ms,
    the tree itself listed again every half second: listing it reads every process in /proc,
    1 ms of CPU a time, which at every sample took 5-20% off the figures of the contender timed."""

    RELIST_S = 0.5

    def __init__(self, pid: int):
        try:
            import psutil
            self.root = psutil.Process(pid)
        except (ImportError, Exception):
            self.root = None
        self.peak = 0
        self._procs: list = []
        self._listed = -1e9

    def sample(self) -> None:
        if self.root is None:
            return
        now = time.monotonic()
        if now - self._listed >= self.RELIST_S:
            try:
                self._procs = [self.root, *self.root.children(recursive=True)]
            except Exception:   # the process has ended
                return
            self._listed = now
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except Exception:   # a worker that has exited
                pass
        self.peak = max(self.peak, total)


class _Worker:
    """One contender's process (``_worker.py``), taken through its timed epochs a turn at a time."""

    def __init__(self, python: str, spec: dict):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        os.makedirs(spec["cache"], exist_ok=True)
        self.log = os.path.join(spec["cache"], f"worker-{spec['contender']}-{spec['task']['name']}")
        self.out, self.err = open(self.log + ".out", "w"), open(self.log + ".log", "w")
        self.proc = subprocess.Popen([python, _WORKER, json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=env, cwd=spec["cache"], text=True,
                                     errors="replace")
        self.rss = _RssSampler(self.proc.pid)
        self.markers: queue.Queue = queue.Queue()
        self.result: dict | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        """The worker's stdout into its .out file; the harness's marker lines into the queue."""
        for line in self.proc.stdout:
            self.out.write(line)
            if line.startswith((TURN, ANSWER)):
                self.markers.put(line.rstrip("\n"))
        self.markers.put(None)

    def step(self, timeout: float) -> bool:
        """Run until the worker waits for its next turn (True) or has answered (False; see ``result``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.rss.sample()
            try:
                line = self.markers.get(timeout=0.02)
            except queue.Empty:
                if time.monotonic() > deadline:
                    self.stop(f"timed out after {timeout:.0f} s")
                    return False
                continue
            if line == TURN:
                return True
            self._answer(None if line is None else json.loads(line[len(ANSWER):]))   # None: it ended unanswered
            return False

    def go(self, timeout: float) -> bool:
        """Its next timed epoch, then as :meth:`step`."""
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except OSError:   # it has died since its turn: step() finds its pipe's end and says why
            pass
        return self.step(timeout)

    def stop(self, reason: str) -> None:
        _kill_tree(self.proc)
        self._close()
        self.result = {"ok": False, "status": "failed", "reason": reason}

    def _answer(self, result: dict | None) -> None:
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_tree(self.proc)
        self._close()
        if result is None:
            with open(self.log + ".log", errors="replace") as f:
                tail = " | ".join(line.strip() for line in f.read().splitlines()[-4:])
            result = {"ok": False, "status": "failed", "reason": f"exit status {self.proc.returncode}: {tail}"[:500]}
        elif result.get("status") == "failed":
            result["reason"] = (result["reason"] + _error_line(self.log + ".log"))[:500]
        if self.rss.peak:
            result["peak_rss_mb"] = self.rss.peak / 2 ** 20
        self.result = result

    def _close(self) -> None:
        """Once the process has ended: its pipes and log files (the reader has seen the pipe's end)."""
        self.reader.join(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self.out, self.err):
            try:
                f.close()
            except OSError:
                pass


def run_in_turns(jobs: list[tuple[str, dict]], timeout: float) -> list[dict]:
    """Each job (interpreter, spec) in its own worker: started alone (build, first batch, warm-up
    epoch), then the workers' timed epochs in turns, so a drifting load on a shared machine hits
    every contender alike. One answer per job, in order; ``timeout`` bounds each start and epoch."""
    workers = []
    try:
        for python, spec in jobs:
            workers.append(_Worker(python, spec))
            workers[-1].step(timeout)
        while waiting := [w for w in workers if w.result is None]:
            for w in waiting:
                w.go(timeout)
    finally:
        for w in workers:
            if w.result is None:
                w.stop("the harness stopped")
    return [w.result for w in workers]


def run_worker(python: str, spec: dict, timeout: float) -> dict:
    """One contender in a child process: its JSON answer plus the tree's peak RSS."""
    return run_in_turns([(python, spec)], timeout)[0]


def _error_line(log: str) -> str:
    """The last line of a worker's stderr that names an error (libraries often log and go on)."""
    with open(log, errors="replace") as f:
        lines = [line.strip() for line in f if "Error" in line or "error:" in line]
    return f" [log: {lines[-1][:300]}]" if lines else ""


def _kill_tree(proc) -> None:
    try:
        import psutil
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
    except Exception:
        pass
    proc.kill()
    proc.wait()


def _summarise(result: dict) -> dict:
    if not result.get("ok"):
        return result
    runs = result["rates"]
    result.update(status="ok", median=statistics.median(runs), min=min(runs), max=max(runs))
    return result


def _interpreter(c: Contender, cache: str, use_envs: bool, rebuild: bool, log) -> tuple[str | None, dict | None]:
    if c.gpu and (reason := _gpu_reason()):
        return None, {"ok": False, "status": "not run", "reason": reason}
    if c.env is None:
        return sys.executable, None
    if not use_envs:
        return None, {"ok": False, "status": "not run", "reason": "virtual-environment contenders skipped (--no-envs)"}
    try:
        return envs.ensure(c.env, cache, rebuild=rebuild, log=log), None
    except envs.EnvUnavailable as e:
        return None, {"ok": False, "status": "not installed", "reason": str(e)}


def _listing(root: str, cache: str, leave_out=frozenset()) -> tuple[str, list[str]]:
    """The images of ``root`` as fastload.ImageFolder lists them, less the paths in ``leave_out`` (the
    unreadable ones), written for the workers as ``[path, label]`` pairs (a file: a long list does
    not fit on a command line), and their paths: every contender, the decode limit and the sample
    count take these files and no others."""
    import fastload as fl
    files = [(path, int(label)) for path, label in fl.ImageFolder(root) if path not in leave_out]
    os.makedirs(os.path.join(cache, "work"), exist_ok=True)
    key = hashlib.sha1(os.fsencode(root)).hexdigest()[:12]
    name = os.path.join(cache, "work", f"files-{key}.json")
    with open(name + ".tmp", "w") as f:
        json.dump(files, f)
    os.replace(name + ".tmp", name)
    return name, [path for path, _ in files]


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import fastload as fl
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": list(os.getloadavg()), "features": fl.features()}


def _progress(line: str) -> None:
    """A progress line, shown now: piped into tee or a CI log, stdout would hold it until the exit."""
    try:
        print(line, flush=True)
    except UnicodeEncodeError:   # a file name that is not UTF-8 (surrogates), or a terminal that is not
        print(line.encode("ascii", "backslashreplace").decode("ascii"), flush=True)


def run_suite(path: str | None = None, *, mode: str = "quick", out: str = "benchmarks/results",
              threads: int | None = None, only: list[str] | None = None, use_envs: bool = True,
              sizes: dict | None = None, seed: int = 0, cache: str | None = None, rebuild_envs: bool = False,
              scaling: bool = True, memory: bool = True, log=_progress) -> dict:
    """Run the suite and write ``results.json``, ``results.md`` and the plots under ``out``.

    ``path``: measure a class-per-subfolder image directory instead of the generated sets (the
    project's targets, set on those, are not judged).
    ``only``: contender names to run (the others are listed as not run). ``sizes`` overrides
    entries of ``MODES[mode]`` (the tests use tiny sets).
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"fastload bench runs on Linux only (this is {sys.platform}): it reads CPU time and "
                           "memory from /proc and forks its decode-limit processes")
    from .limits import decode_limits, unreadable_files
    from .report import PLOTS, can_plot, write_report
    os.makedirs(out, exist_ok=True)   # before the run: a path that cannot be a folder fails now, not after it
    cfg = {**MODES[mode], **(sizes or {})}
    threads = threads or os.cpu_count() or 1
    cache = cache or cache_dir()
    t_start = time.perf_counter()
    if path:
        tasks = [Task("rrc224", "user", "rrc", 224, f"{path} -> RandomResizedCrop-224 + flip + normalise"),
                 Task("resize224", "user", "resize", 224, f"{path} -> resize 224x224 + normalise")]
        memory = False
    else:
        tasks = [t for t in TASKS if t.name in cfg["tasks"]]
    results = {"meta": {"mode": mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "threads": threads, "seed": seed, "batch": 64, "runs": cfg["runs"], "cap": cfg["cap"],
                        "machine": _machine()},
               "datasets": {}, "tasks": []}
    roster = contenders(threads)
    interpreters = {}
    unreadable = {}   # root -> its files no decoder reads, left out of every contender
    for task in tasks:
        if task.dataset == "user":
            root = os.path.abspath(path)
            desc = "your folder"
        else:
            t = time.perf_counter()
            root = dataset(task.dataset, cfg[task.dataset], seed=seed, cache=cache)
            desc = KINDS[task.dataset][0]
            if time.perf_counter() - t > 1:
                log(f"  generated {cfg[task.dataset]} samples of '{task.dataset}' in {time.perf_counter() - t:.0f} s")
        listing, paths = (None, os.listdir(os.path.join(root, "images"))) if task.transform == "multimodal" \
            else _listing(root, cache)
        left_out = None
        if listing is not None:   # a file no decoder reads fails every contender: all are timed without it
            bad = unreadable_files(paths)
            if bad:
                unreadable[root] = frozenset(p for p, _ in bad)
                listing, paths = _listing(root, cache, unreadable[root])
                left_out = {"files": len(bad), "first": {"path": bad[0][0], "reason": bad[0][1]}}
        n = len(paths)
        results["datasets"][task.dataset] = {"path": root, "samples": n, "description": desc}
        log(f"== {task.name}: {task.title} ({n} samples, batch {task.batch}, {threads} threads)")
        entry = {"name": task.name, "title": task.title, "dataset": task.dataset, "samples": n,
                 "batch": task.batch, "limits": {}, "results": {}}
        if left_out:
            entry["left_out"] = left_out
            log(f"  left out of every contender: {left_out['files']} unreadable file(s), the first "
                f"{left_out['first']['path']}: {left_out['first']['reason']}")
        if task.transform != "multimodal":
            entry["limits"] = decode_limits(paths, task.transforms(), threads, runs=cfg["runs"])
            for kind, lim in entry["limits"].items():
                log(f"  decode-only limit ({kind}): {lim['rate']:.0f} img/s [{lim['decoder']}]")
            lim = next(iter(entry["limits"].values()), None)
            if lim is None:
                log("  decode-only limit: not measured (no file of the task can be decoded)")
            elif lim["unreadable"]:
                bad = lim["first_unreadable"]
                log(f"  left out of the decode limit: {lim['unreadable']} unreadable file(s), the first "
                    f"{bad['path']}: {bad['reason']}")
        jobs = {}   # contender -> (interpreter, spec): timed together, in turns
        for c in roster:
            if not n:
                entry["results"][c.name] = {"ok": False, "status": "not run", "reason": "no file of the task reads"}
            elif (reason := _not_applicable(c, task)):
                entry["results"][c.name] = {"ok": False, "status": "n/a", "reason": reason}
            elif only is not None and c.name not in only:
                entry["results"][c.name] = {"ok": False, "status": "not run", "reason": "not selected (--contenders)"}
            else:
                if c.name not in interpreters:
                    interpreters[c.name] = _interpreter(c, cache, use_envs, rebuild_envs, log)
                python, unavailable = interpreters[c.name]
                entry["results"][c.name] = dict(unavailable or {})
                if python:
                    jobs[c.name] = (python, _spec(c.name, c.builder, task, root,
                                                  threads if c.workers is None else c.workers, cfg["runs"],
                                                  cfg["cap"] if c.capped else 0, cache, listing))
        for name, res in zip(jobs, run_in_turns(list(jobs.values()), cfg["timeout"])):
            entry["results"][name] = _summarise(res)
        for c in roster:
            res = entry["results"][c.name]
            res["label"] = c.label
            _efficiency(res, entry["limits"])
            log("  " + _line(c.name, res))
        results["tasks"].append(entry)
    if scaling and (only is None or "fastload" in only):
        results["scaling"] = _scaling(tasks[0], results, threads, cfg, cache, only, log, unreadable)
    if memory:
        results["memory"] = _memory(cfg, seed, cache, threads, only, log)
    results["targets"] = [] if path else _targets(results)   # set on the generated sets, not on a user's folder
    results["meta"]["seconds"] = time.perf_counter() - t_start
    results["meta"]["load_average_end"] = list(os.getloadavg())
    results["meta"]["plots"] = list(PLOTS) if can_plot() else []   # README links only what this run drew
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, out)
    return results


def _spec(name: str, builder: str, task: Task, root: str, workers: int, runs: int, max_images: int,
          cache: str, files: str | None) -> dict:
    """The worker's instructions (see _worker's docstring); ``files``: the :func:`_listing` of ``root``."""
    return {"contender": name, "builder": builder, "workers": workers, "runs": runs, "max_images": max_images,
            "cache": os.path.join(cache, "work"), "files": files,
            "task": {"name": task.name, "dataset": task.dataset, "path": root, "transform": task.transform,
                     "size": task.size, "batch": task.batch}}


def _efficiency(res: dict, limits: dict) -> None:
    if res.get("status") == "ok":
        for kind, lim in limits.items():
            res[f"efficiency_{kind}"] = res["median"] / lim["rate"]


def _line(name: str, res: dict) -> str:
    if res.get("status") != "ok":
        return f"{name:<12} {res['status']}: {res['reason']}"
    return (f"{name:<12} {res['median']:8.0f} img/s (runs {', '.join(f'{r:.0f}' for r in res['rates'])}; "
            f"{res['images']} images)  cpu {res['cpu_s_per_image'] * 1e3:.2f} ms/img  "
            f"rss {res.get('peak_rss_mb', 0):.0f} MB  first batch {res['first_batch_s']:.2f} s")


def _thread_counts(threads: int) -> list[int]:
    """The thread counts of the scaling curve: each one up to 4, then powers of two and ``threads``."""
    return sorted({t for t in range(1, min(threads, 4) + 1)} | {1 << k for k in range(threads.bit_length())
                                                                 if 1 << k <= threads} | {threads})


def _scaling(task: Task, results: dict, threads: int, cfg: dict, cache: str, only, log, unreadable: dict) -> dict:
    """Throughput against thread count: fastload, torch DataLoader workers, and the decode limit
    (``unreadable``: root -> the files left out, as in the task)."""
    from .limits import decode_limits
    root = results["datasets"][task.dataset]["path"]
    counts = _thread_counts(threads)
    out = {"task": task.name, "threads": counts, "fastload": [], "torch": [], "limit_region": [], "limit_full": []}
    log(f"== scaling: {task.name}, {', '.join(map(str, counts))} threads")
    listing, paths = _listing(root, cache, unreadable.get(root, frozenset()))
    if not paths:
        log("  not measured: no file of the task reads")
        return None
    for t in counts:
        lim = decode_limits(paths, task.transforms(), t, runs=cfg["runs"])
        out["limit_full"].append(lim["full"]["rate"] if lim else None)
        out["limit_region"].append(lim["region"]["rate"] if lim and "region" in lim else None)   # none for other formats
        jobs = {name: (sys.executable, _spec(f"{name}-scaling-{t}", name, task, root, t, cfg["runs"],
                                             cfg["cap"] if name == "torch" else 0, cache, listing))
                for name in ("fastload", "torch")
                if only is None or (f"{name}-{threads}" if name == "torch" else name) in only}
        answers = dict(zip(jobs, run_in_turns(list(jobs.values()), cfg["timeout"])))
        said = []
        for name in ("fastload", "torch"):
            res = _summarise(answers[name]) if name in answers else None
            out[name].append(res.get("median") if res else None)
            said.append(f"{name} {_figure(out[name][-1], 'img/s', res)}")
        limit = ("region-decode", out["limit_region"][-1]) if out["limit_region"][-1] is not None else \
            ("decode", out["limit_full"][-1])
        log(f"  {t} threads: {', '.join(said)}, {limit[0]} limit {_figure(limit[1], 'img/s', {})}")
    return out


def _figure(value, unit: str, res: dict | None) -> str:
    """A measured figure for the log, or why there is none (``res``: the contender's answer, None when
    it was not run): never a 0 that reads as measured."""
    if value is not None:
        return f"{value:.0f} {unit}"
    return "not run" if res is None else res.get("status", "not measured")


def _memory(cfg: dict, seed: int, cache: str, threads: int, only, log) -> dict:
    """Peak RSS of a full epoch against the number of files (hard links of the 64x64 set)."""
    small, large = cfg["memory"]
    base = dataset("small", small, seed=seed, cache=cache)
    task = next(t for t in TASKS if t.name == "rrc64")
    out = {"task": task.name, "files": [small, large], "fastload": [], f"torch-{threads}": []}
    log(f"== memory: peak RSS, {small} vs {large} files")
    for n in (small, large):
        root = base if n == small else linked_copies(base, n, cache=cache)
        listing = _listing(root, cache)[0]
        said = []
        for name, builder in (("fastload", "fastload"), (f"torch-{threads}", "torch")):
            res = None
            if only is None or name in only:
                spec = _spec(f"{name}-memory-{n}", builder, task, root, threads, 1, 0, cache, listing)
                res = run_worker(sys.executable, spec, cfg["timeout"])
            out[name].append(res.get("peak_rss_mb") if res and res.get("ok") else None)
            said.append(f"{name} {_figure(out[name][-1], 'MB', res)}")
        log(f"  {n} files: {', '.join(said)}")
    return out


def _ratio(a, b):
    return a / b if a and b else None


def _targets(results: dict) -> list[dict]:
    """The figures the project sets targets on, each with its measured value."""
    tasks = {t["name"]: t for t in results["tasks"]}

    def med(task, name):
        r = tasks.get(task, {}).get("results", {}).get(name, {})
        return r.get("median") if r.get("status") == "ok" else None

    def eff(task, kind):
        r = tasks.get(task, {}).get("results", {}).get("fastload", {})
        return r.get(f"efficiency_{kind}")
    threads = results["meta"]["threads"]
    rows = [
        ("RRC-224: fastload / FFCV", _ratio(med("rrc224", "fastload"), med("rrc224", "ffcv")), 2.5),
        ("RRC-224: fastload / crop-region decode-only limit", eff("rrc224", "region"), 0.95),
        ("64x64: fastload / FFCV", _ratio(med("rrc64", "fastload"), med("rrc64", "ffcv")), 1.9),
        ("64x64: fastload / decode-only limit (crop region)", eff("rrc64", "region"), 0.9),
        ("PNG: fastload / torch DataLoader", _ratio(med("png224", "fastload"), med("png224", f"torch-{threads}")), 3.0),
        # each on its own packed format: the same footing as FFCV's .beton
        ("RRC-224: fastload packed / FFCV", _ratio(med("rrc224", "fastload-packed"), med("rrc224", "ffcv")), 2.5),
        ("64x64: fastload packed / FFCV", _ratio(med("rrc64", "fastload-packed"), med("rrc64", "ffcv")), 1.9),
    ]
    mem = results.get("memory")
    if mem and all(mem["fastload"]):
        growth = mem["fastload"][1] / mem["fastload"][0] - 1
        rows.append((f"peak RSS growth {mem['files'][0]} -> {mem['files'][1]} files (fastload)", growth, 0.10))
    out = []
    for what, value, target in rows:
        lower_is_better = what.startswith("peak RSS")
        met = None if value is None else (value < target if lower_is_better else value >= target)
        out.append({"what": what, "value": value, "target": target, "lower_is_better": lower_is_better, "met": met})
    return out
