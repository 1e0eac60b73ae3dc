"""Drives the real avserve server and avctl client for the demo and the end-to-end test.

  with Server(avserve, checkpoint, workdir) as srv:
      media_id = upload(avctl, srv.address, "clip.mp4")
      answers = ask(avctl, srv.address, media_id, ["What colour is the shape at 00:03?"])
"""
import json
import os
import signal
import subprocess
import time


class Server:
    """avserve on 127.0.0.1 with an ephemeral port (read back from --port-file), CPU backend."""

    def __init__(self, avserve, checkpoint, workdir, threads=0, start_timeout_s=120):
        self.avserve, self.checkpoint, self.workdir = avserve, checkpoint, workdir
        self.threads, self.start_timeout_s = threads, start_timeout_s
        self.proc, self.address = None, None
        self.log_path = os.path.join(workdir, "avserve.log")

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        port_file = os.path.join(self.workdir, "ports.json")
        if os.path.exists(port_file):
            os.remove(port_file)
        cmd = [self.avserve, "--listen", "127.0.0.1:0", "--port-file", port_file, "--metrics-listen", "",
               "--checkpoint", self.checkpoint, "--backend", "cpu", "--cpu-threads", str(self.threads),
               "--data-dir", os.path.join(self.workdir, "data")]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + self.start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"avserve exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + tail(self.log_path))
            try:
                with open(port_file) as f:
                    self.address = f"127.0.0.1:{json.load(f)['grpc_port']}"
                return self
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"avserve did not start within {self.start_timeout_s} s; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        return False


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _avctl(avctl, address, args, timeout_s):
    cmd = [avctl, "-s", address, "--json", "--no-progress"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    events = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    errors = [e["error"] for e in events if "error" in e]
    if p.returncode != 0 or errors:
        raise RuntimeError(f"avctl {' '.join(args[:2])} failed ({p.returncode}): {errors or p.stderr.strip()}")
    return events


def _get(d, *names):
    for n in names:
        if n in d:
            return d[n]
    return None


def upload(avctl, address, path, timeout_s=120):
    """Uploads a file; returns its media id."""
    events = _avctl(avctl, address, ["upload", path], timeout_s)
    media_id = _get(events[-1], "mediaId", "media_id") if events else None
    if not media_id:
        raise RuntimeError(f"avctl upload printed no media id: {events}")
    return media_id


def ask(avctl, address, media_id, questions, timeout_s=600, max_tokens=8):
    """Greedy answers to `questions` about one media id (one request: the media prefix is prefilled
    once and forked per question). Returns (answers, final event)."""
    args = ["ask", media_id, "--temperature", "0", "--max-tokens", str(max_tokens)]
    for q in questions:
        args += ["-q", q]
    events = _avctl(avctl, address, args, timeout_s)
    final = next((e["final"] for e in events if "final" in e), None)
    answers = [""] * len(questions)
    if final is not None and _get(final, "results"):
        for r in final["results"]:
            answers[int(_get(r, "questionIndex", "question_index") or 0)] = r.get("answer", "")
    else:   # no final event: concatenate the deltas
        for e in events:
            if "answer" in e:
                a = e["answer"]
                answers[int(_get(a, "questionIndex", "question_index") or 0)] += a.get("text", "")
    return answers, final


def normalize(answer):
    return answer.strip().strip(".").lower()
