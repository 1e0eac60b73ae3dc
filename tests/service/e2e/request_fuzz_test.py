"""Randomized requests against the real avserve (toy checkpoint, CPU backend), six clients at once: asks and
summaries with mostly valid and sometimes hostile options (fps, frame budgets, layouts, windows past the end,
both modalities ignored, sampling out of range, 17 questions, unknown or malformed media ids), deadlines from
10 ms to a minute, cancellations mid-stream, batch jobs submitted and cancelled, path registrations that escape
the media root. Every call must end with a status a client can act on (never INTERNAL, UNKNOWN or UNAVAILABLE),
the server must still answer afterwards, and it must shut down cleanly.
Its first runs found two crashes: a cancelled ask (a use after free in ingest; MediaReaderTest.
DestroyedMidStreamFinishesItsQueuedConversionsFirst) and the 200-pixel-wide clip here, whose frames swscale
converted past the end of their buffer (the ingest tests under glibc's checking malloc, tests/ingest/CMakeLists.txt).
The seed is printed; AVSERVE_FUZZ_SEED=N reruns one.
Environment: AVSERVE_BIN, AVSERVE_PROTO_DIR, AVSERVE_TEST_CHECKPOINT."""
import os
import random
import subprocess
import threading
import unittest

import grpc

import harness

ENV = os.environ
TMP, pb, rpc, MEDIA_ROOT = harness.module_dirs("avserve_fuzz_", ENV["AVSERVE_PROTO_DIR"])
harness.make_clip(os.path.join(MEDIA_ROOT, "av.mp4"), 3, size="96x64")
harness.make_clip(os.path.join(MEDIA_ROOT, "silent.mp4"), 2, audio=False, size="64x48")
harness.make_clip(os.path.join(MEDIA_ROOT, "wide.mp4"), 5, size="200x100")
subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "aac",
                os.path.join(MEDIA_ROOT, "sound.m4a")], check=True)
FILES = ["av.mp4", "silent.mp4", "wide.mp4", "sound.m4a"]
# Statuses that say what was wrong with the request, or that the client's own deadline or cancel ended it.
EXPECTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "PERMISSION_DENIED", "DEADLINE_EXCEEDED",
            "CANCELLED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}
CLIENTS, CALLS = 6, 40


class Client:
    """One client thread's random calls; `rng` is its own, so a seed replays each thread's choices."""

    def __init__(self, stubs, media_ids, rng):
        self.media, self.inference, self.batch = stubs
        self.ids, self.rng = media_ids, rng
        self.codes = {}  # (code, details) -> count

    def pick(self, good, bad=()):
        """Mostly a valid value, sometimes (3%) a hostile one."""
        return self.rng.choice(bad) if bad and self.rng.random() < 0.03 else self.rng.choice(good)

    def ingest(self):
        return pb.IngestOptions(
            fps=self.pick([0, 0.5, 1, 2, 7.3, 30], [0.001, 31, -1, float("nan"), 1e300]),
            frame_budget=self.pick([0, 70, 140, 280, 560, 1120], [69, -5, 2**31 - 1]),
            layout=self.pick([0, 1, 2], [3, -1]), ignore_audio=self.rng.random() < 0.2,
            ignore_video=self.rng.random() < 0.2,
            start_us=self.pick([0, 0, 0, 500_000, 1_999_999, 2_500_000, 4_900_000], [10**7, -1, 2**62]),
            end_us=self.pick([0, 0, 0, 1_000_000, 3_000_000, 4_999_999], [2**63 - 1, 1, -3]))

    def sampling(self):
        return pb.SamplingOptions(temperature=self.pick([0, 0.7, 10], [11, -1, float("inf")]),
                                  top_k=self.pick([0, 1, 5, 10**6], [-1]), top_p=self.pick([0, 0.5, 1], [1.5, -0.1]),
                                  seed=self.pick([0, 1, 2**64 - 1]),
                                  max_new_tokens=self.pick([0, 1, 4, 16], [8193, -1]))

    def call(self):
        op = self.rng.random()
        media_id = self.pick(self.ids, ["", "sha256:" + "0" * 64, "../x"])
        if op < 0.5:
            questions = self.pick([["q"], ["What colour is the shape at 00:01?", "When is the beep heard?"],
                                   ["q"] * 16, ["x" * 3000]], [[], ["q"] * 17, ["\x00\xff"]])
            call = self.inference.Ask(pb.AskRequest(media_id=media_id, questions=questions, ingest=self.ingest(),
                                                    sampling=self.sampling(), thinking=self.rng.random() < 0.2),
                                      timeout=self.pick([0.01, 0.3, 5, 60]))
            for _ in call:
                if self.rng.random() < 0.05:
                    call.cancel()
                    break
        elif op < 0.65:
            list(self.inference.Summarize(
                pb.SummarizeRequest(media_id=media_id, instructions=self.pick(["", "focus", "y" * 3000]),
                                    ingest=self.ingest(), sampling=self.sampling(),
                                    chunk_us=self.pick([0, 1_000_000, 2_000_000], [1, -1, 10**12])),
                timeout=self.pick([0.2, 60])))
        elif op < 0.75:
            job = self.batch.Submit(pb.SubmitBatchRequest(media_ids=[media_id, self.pick(self.ids)],
                                                          questions=self.pick([["a?"], ["a?", "b?"]], [[]]),
                                                          ingest=self.ingest(), sampling=self.sampling()), timeout=10)
            if self.rng.random() < 0.5:
                self.batch.Cancel(pb.CancelBatchRequest(job_id=job.job_id), timeout=10)
            self.batch.Get(pb.GetBatchRequest(job_id=self.pick([job.job_id], ["nope", "../../etc"]),
                                              include_results=True), timeout=10)
        elif op < 0.85:
            self.media.GetMedia(pb.GetMediaRequest(media_id=media_id), timeout=10)
        else:
            path = self.pick(FILES, ["", "/", "nope.mp4", "av.mp4/", "./av.mp4", "../av.mp4", "/etc/passwd"])
            self.media.RegisterPath(pb.RegisterPathRequest(path=path), timeout=10)

    def run(self):
        for _ in range(CALLS):
            try:
                self.call()
                key = ("OK", "")
            except grpc.RpcError as e:
                key = (e.code().name, (e.details() or "")[:120])
            self.codes[key] = self.codes.get(key, 0) + 1


class RequestFuzzTest(unittest.TestCase):
    def test_random_requests_get_clear_statuses_and_the_server_stays_up(self):
        seed = int(ENV.get("AVSERVE_FUZZ_SEED") or random.SystemRandom().randrange(10**9))
        print(f"request fuzz: seed {seed}", flush=True)
        server = harness.ServerProcess(ENV["AVSERVE_BIN"], os.path.join(TMP, "server"),
                                       ["--media-root", MEDIA_ROOT, "--checkpoint", ENV["AVSERVE_TEST_CHECKPOINT"],
                                        "--backend", "cpu", "--max-queue", "64"]).start()
        channel = grpc.insecure_channel(server.address)
        stubs = (rpc.MediaServiceStub(channel), rpc.InferenceServiceStub(channel), rpc.BatchServiceStub(channel))
        ids = [stubs[0].RegisterPath(pb.RegisterPathRequest(path=f)).media_id for f in FILES]
        clients = [Client(stubs, ids, random.Random(seed + i)) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.run) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = {}
        for c in clients:
            for key, n in c.codes.items():
                codes[key] = codes.get(key, 0) + n
        for (code, details), n in sorted(codes.items(), key=lambda kv: -kv[1]):
            print(f"  {n:4d} {code} {details}")
        unexpected = {k: n for k, n in codes.items() if k[0] not in EXPECTED}
        self.assertEqual(unexpected, {}, f"seed {seed}\n{server.tail()}")
        self.assertGreater(codes.get(("OK", ""), 0), CLIENTS * CALLS // 10, f"seed {seed}: too few calls succeeded")
        # Still serving: a plain ask on the clip with sound and pictures.
        events = list(stubs[1].Ask(pb.AskRequest(media_id=ids[0], questions=["q"],
                                                 sampling=pb.SamplingOptions(max_new_tokens=2)), timeout=120))
        self.assertTrue(events[-1].HasField("final"))
        channel.close()
        self.assertEqual(server.stop(), 0, f"seed {seed}: graceful shutdown failed\n{server.tail()}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
