"""End-to-end, over the wire: the real server (RunServerMain, every service, media store, ingest's
prober, batch journal) with the FakeBackend test double in place of the model, driven by Python grpcio
with stubs generated here by grpc_tools, and by avctl. The model path is covered by model_test.py.
Environment: AVSERVE_FAKE_SERVER, AVCTL_BIN, AVSERVE_PROTO_DIR."""
import json
import os
import shutil
import subprocess
import threading
import time
import unittest

import grpc

import harness

ENV = os.environ
TMP, pb, rpc, MEDIA_ROOT = harness.module_dirs("avserve_wire_", ENV["AVSERVE_PROTO_DIR"])
CLIP = harness.make_clip(os.path.join(MEDIA_ROOT, "clip.mp4"), 6)
CLIP2 = harness.make_clip(os.path.join(MEDIA_ROOT, "clip2.mp4"), 3, size="128x96")
# Fake model timing: prefill 300 us/token (~0.25 s for the 6 s clip), decode 5 ms/token.
FAKE_ENV = {"AVSERVE_FAKE_PREFILL_US_PER_TOKEN": "300", "AVSERVE_FAKE_DECODE_MS_PER_TOKEN": "5",
            "AVSERVE_FAKE_BYTES_PER_TOKEN": "16384", "AVSERVE_FAKE_MAX_CONTEXT": "3000"}


def upload_requests(data, chunk=65536, header=None):
    yield pb.UploadRequest(header=header or pb.UploadHeader(filename="clip.mp4"))
    for i in range(0, len(data), chunk):
        yield pb.UploadRequest(chunk=data[i:i + chunk])


def avctl(server, *args, check=True, token=None):
    cmd = [ENV["AVCTL_BIN"], "-s", server.address, "--no-progress"] + (["--token", token] if token else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"avctl {args} -> {p.returncode}: {p.stderr}")
    return p


class WireTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.ServerProcess(ENV["AVSERVE_FAKE_SERVER"], os.path.join(TMP, "main"),
                                           ["--media-root", MEDIA_ROOT, "--max-upload-bytes", str(2 << 20),
                                            "--max-message-bytes", str(1 << 20), "--max-queue", "4",
                                            "--prefix-cache-bytes", str(128 << 20)],
                                           env=FAKE_ENV).start()
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.media = rpc.MediaServiceStub(cls.channel)
        cls.inference = rpc.InferenceServiceStub(cls.channel)
        cls.batch = rpc.BatchServiceStub(cls.channel)
        with open(CLIP, "rb") as f:
            cls.clip_bytes = f.read()
        cls.media_id = cls.media.Upload(upload_requests(cls.clip_bytes)).media_id

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        assert code == 0, f"graceful shutdown exited {code}:\n{cls.server.tail()}"

    def ask(self, media_id, questions, timeout=30, **ingest):
        events = list(self.inference.Ask(pb.AskRequest(media_id=media_id, questions=questions,
                                                       ingest=pb.IngestOptions(**ingest)), timeout=timeout))
        return events

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(grpc.RpcError) as ctx:
            result = fn(*args, **kwargs)
            if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
                list(result)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        self.assertTrue(ctx.exception.details())  # a clear message comes with every error
        return ctx.exception.details()

    # --- media ------------------------------------------------------------------------------------

    def test_upload_is_content_addressed_and_probed(self):
        info = self.media.GetMedia(pb.GetMediaRequest(media_id=self.media_id))
        self.assertTrue(self.media_id.startswith("sha256:"))
        self.assertEqual(info.size_bytes, len(self.clip_bytes))
        self.assertAlmostEqual(info.probe.duration_us / 1e6, 6.0, delta=0.2)
        self.assertTrue(info.probe.has_video and info.probe.has_audio)
        self.assertEqual((info.probe.width, info.probe.height), (160, 120))
        # avctl uploads the same bytes: same id.
        out = json.loads(avctl(self.server, "--json", "upload", CLIP).stdout)
        self.assertEqual(out["media_id"], self.media_id)

    def test_register_path_is_confined_to_the_media_root(self):
        info = self.media.RegisterPath(pb.RegisterPathRequest(path="clip2.mp4"))
        self.assertEqual(info.source, pb.MEDIA_SOURCE_PATH)
        self.assertAlmostEqual(info.probe.duration_us / 1e6, 3.0, delta=0.2)
        outside = os.path.join(TMP, "outside.mp4")
        shutil.copy(CLIP2, outside)
        os.symlink(outside, os.path.join(MEDIA_ROOT, "escape.mp4"))
        for path in ["../outside.mp4", outside, "escape.mp4", "/etc/passwd", "a/../../outside.mp4"]:
            self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.media.RegisterPath,
                            pb.RegisterPathRequest(path=path))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.media.RegisterPath, pb.RegisterPathRequest(path="nope.mp4"))
        p = avctl(self.server, "register", "../outside.mp4", check=False)
        self.assertEqual(p.returncode, grpc.StatusCode.PERMISSION_DENIED.value[0])

    # --- inference --------------------------------------------------------------------------------

    def test_ask_streams_several_questions_and_the_second_request_hits_the_prefix_cache(self):
        events = self.ask(self.media_id, ["What is shown?", "What is heard?"], fps=2)
        kinds = [e.WhichOneof("event") for e in events]
        self.assertIn("ingest_progress", kinds)
        self.assertIn("prefill_progress", kinds)
        self.assertEqual(kinds[-1], "final")
        deltas = {0: "", 1: ""}
        for e in events:
            if e.HasField("answer"):
                deltas[e.answer.question_index] += e.answer.text
        final = events[-1].final
        self.assertFalse(final.prefix_cache_hit)
        self.assertEqual([r.answer for r in final.results], [deltas[0], deltas[1]])
        self.assertIn("What is heard?", deltas[1])
        self.assertGreater(final.usage.prefix_tokens, 0)
        again = self.ask(self.media_id, ["And then?"], fps=2)
        self.assertTrue(again[-1].final.prefix_cache_hit)
        self.assertEqual(again[-1].final.usage.prefix_tokens, final.usage.prefix_tokens)
        # avctl streams answers with a per-question prefix.
        out = avctl(self.server, "ask", self.media_id, "-q", "one?", "-q", "two?", "--fps", "2").stdout
        self.assertIn("[0] Answer 0", out)
        self.assertIn("[1] Answer 1", out)

    def test_summarize_in_chunks_when_the_media_exceeds_the_context(self):
        # At 8 fps the 6 s clip takes ~3900 tokens > 3000 - reserve: map-reduce in several chunks.
        events = list(self.inference.Summarize(pb.SummarizeRequest(media_id=self.media_id,
                                                                   ingest=pb.IngestOptions(fps=8)), timeout=60))
        chunks = [e.chunk_progress for e in events if e.HasField("chunk_progress")]
        final = events[-1].final
        self.assertGreater(final.num_chunks, 1)
        self.assertEqual(len(chunks), 2 * final.num_chunks)
        duration = self.media.GetMedia(pb.GetMediaRequest(media_id=self.media_id)).probe.duration_us
        self.assertEqual(chunks[0].start_us, 0)
        self.assertEqual(chunks[-1].end_us, duration)
        self.assertIn("00:00", final.results[0].answer)
        small = list(self.inference.Summarize(pb.SummarizeRequest(media_id=self.media_id), timeout=60))
        self.assertEqual(small[-1].final.num_chunks, 1)

    def cancel_mid_prefill(self, fps):
        call = self.inference.Ask(pb.AskRequest(media_id=self.media_id, questions=["q"],
                                                ingest=pb.IngestOptions(fps=fps, frame_budget=140)))
        seen = 0
        for e in call:
            if e.HasField("prefill_progress"):
                seen += 1
                if seen == 10:
                    call.cancel()
                    break
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        deadline = time.time() + 10
        while time.time() < deadline and self.server.metric("avserve_engine_busy") != 0:
            time.sleep(0.05)

    def test_cancellation_mid_prefill_returns_memory_to_baseline(self):
        # 16 KiB/token: after 10 chunks of 256 tokens a request holds 40 MB. One cancelled request first
        # (the allocator may keep its arena), then three more must not grow the server's memory.
        self.cancel_mid_prefill(8)
        baseline = self.server.metric("avserve_process_resident_memory_bytes")
        for fps in (7, 6, 5):  # distinct cache keys; none completes, so none is cached
            self.cancel_mid_prefill(fps)
        rss = self.server.metric("avserve_process_resident_memory_bytes")
        self.assertLess(rss, baseline + 16 * 2**20, f"RSS {rss} vs baseline {baseline}")
        self.assertEqual(self.server.metric("avserve_queue_depth"), 0)

    def test_deadline_exceeded(self):
        self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED, self.ask, self.media_id, ["slow"], timeout=0.15,
                        fps=8, frame_budget=280)
        self.assertEqual(len(self.ask(self.media_id, ["fine"])[-1].final.results), 1)

    # --- batch ------------------------------------------------------------------------------------

    def test_batch_results_stream_as_they_finish(self):
        other = self.media.RegisterPath(pb.RegisterPathRequest(path="clip2.mp4")).media_id
        job = self.batch.Submit(pb.SubmitBatchRequest(media_ids=[self.media_id, other], questions=["a?", "b?"],
                                                      label="wire"))
        self.assertEqual(job.total_items, 4)
        results = list(self.batch.Watch(pb.WatchBatchRequest(job_id=job.job_id), timeout=60))
        self.assertEqual(sorted(r.item_index for r in results), [0, 1, 2, 3])
        self.assertTrue(all(r.status_code == 0 for r in results))
        by_item = {r.item_index: r for r in results}
        self.assertTrue(by_item[1].prefix_cache_hit)  # second question on the same media
        got = self.batch.Get(pb.GetBatchRequest(job_id=job.job_id, include_results=True))
        self.assertEqual(got.state, pb.JOB_STATE_SUCCEEDED)
        self.assertEqual(len(got.results), 4)
        listed = avctl(self.server, "--json", "batch", "list").stdout
        self.assertIn(job.job_id, listed)
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.batch.Get, pb.GetBatchRequest(job_id="job-nope"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.batch.Submit,
                        pb.SubmitBatchRequest(media_ids=["sha256:" + "0" * 64], questions=["q"]))

    # --- operations -------------------------------------------------------------------------------

    def test_health_reflection_and_metrics(self):
        self.assertEqual(harness.health_status(self.channel), 1)
        self.assertEqual(avctl(self.server, "health").stdout.strip(), "SERVING")
        names = harness.reflection_services(self.channel)
        for name in ["avserve.v1.MediaService", "avserve.v1.InferenceService", "avserve.v1.BatchService",
                     "grpc.health.v1.Health"]:
            self.assertIn(name, names)
        self.ask(self.media_id, ["warm"])
        self.ask(self.media_id, ["hit"])
        text = self.server.metrics()
        self.assertIn('avserve_requests_total{method="Ask",code="OK"}', text)
        self.assertGreaterEqual(self.server.metric("avserve_prefix_cache_hits_total"), 1)
        for name in ["avserve_queue_depth", "avserve_decode_tokens_per_second", "avserve_prefix_cache_bytes",
                     "avserve_device_memory_bytes", "avserve_prefill_duration_seconds_count"]:
            self.assertIsNotNone(self.server.metric(name), name)

    # --- bad input --------------------------------------------------------------------------------

    def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(self):
        C = grpc.StatusCode
        self.assertCode(C.NOT_FOUND, self.ask, "sha256:" + "f" * 64, ["q"])
        self.assertCode(C.INVALID_ARGUMENT, self.ask, "../../etc/passwd", ["q"])
        self.assertCode(C.INVALID_ARGUMENT, self.ask, self.media_id, [])
        self.assertCode(C.INVALID_ARGUMENT, self.ask, self.media_id, ["q"] * 17)
        self.assertCode(C.INVALID_ARGUMENT, self.ask, self.media_id, ["q"], fps=-1)
        self.assertCode(C.INVALID_ARGUMENT, self.ask, self.media_id, ["q"], frame_budget=12345)
        self.assertCode(C.INVALID_ARGUMENT, self.ask, self.media_id, ["q"], ignore_audio=True, ignore_video=True)
        self.assertCode(C.OUT_OF_RANGE, self.ask, self.media_id, ["q"], start_us=10**12)
        self.assertCode(C.INVALID_ARGUMENT, lambda: list(self.inference.Ask(pb.AskRequest(
            media_id=self.media_id, questions=["q"], sampling=pb.SamplingOptions(max_new_tokens=10**9)))))
        self.assertCode(C.INVALID_ARGUMENT, lambda: list(self.inference.Ask(pb.AskRequest(
            media_id=self.media_id, questions=["q"], sampling=pb.SamplingOptions(temperature=float("nan"))))))
        # Malformed bytes where a message should be.
        raw = self.channel.unary_stream("/avserve.v1.InferenceService/Ask", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        with self.assertRaises(grpc.RpcError) as ctx:
            list(raw(b"\xff\xff\xff\xff\x0f garbage", timeout=5))
        # gRPC C++ rejects an unparseable request before our handler runs: its callback API answers
        # UNIMPLEMENTED for streaming methods and INTERNAL for unary ones.
        self.assertIn(ctx.exception.code(), (C.INTERNAL, C.INVALID_ARGUMENT, C.UNIMPLEMENTED))
        raw_unary = self.channel.unary_unary("/avserve.v1.MediaService/GetMedia", request_serializer=lambda b: b,
                                             response_deserializer=lambda b: b)
        with self.assertRaises(grpc.RpcError) as ctx:
            raw_unary(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)
        self.assertIn(ctx.exception.code(), (C.INTERNAL, C.INVALID_ARGUMENT, C.UNIMPLEMENTED))
        # Oversized message (over --max-message-bytes), oversized upload (over --max-upload-bytes).
        self.assertCode(C.RESOURCE_EXHAUSTED, self.media.Upload, upload_requests(b"x" * (2 << 20), chunk=2 << 20))
        self.assertCode(C.RESOURCE_EXHAUSTED, self.media.Upload, upload_requests(b"y" * (3 << 20), chunk=1 << 19))
        self.assertCode(C.RESOURCE_EXHAUSTED, self.media.Upload,
                        upload_requests(b"", header=pb.UploadHeader(filename="big", size_bytes=10**12)))
        # Corrupt uploads: random bytes, a truncated file, a wrong hash; no header; empty.
        self.assertCode(C.INVALID_ARGUMENT, self.media.Upload, upload_requests(os.urandom(100000)))
        self.assertCode(C.INVALID_ARGUMENT, self.media.Upload, upload_requests(self.clip_bytes[:2000]))
        self.assertCode(C.DATA_LOSS, self.media.Upload,
                        upload_requests(self.clip_bytes, header=pb.UploadHeader(sha256_hex="0" * 64)))
        self.assertCode(C.INVALID_ARGUMENT, self.media.Upload, iter([pb.UploadRequest(chunk=b"abc")]))
        self.assertCode(C.INVALID_ARGUMENT, self.media.Upload, iter([pb.UploadRequest(header=pb.UploadHeader())]))
        self.assertCode(C.INVALID_ARGUMENT, self.media.GetMedia, pb.GetMediaRequest(media_id="sha256:xyz"))
        self.assertCode(C.NOT_FOUND, self.media.DeleteMedia, pb.DeleteMediaRequest(media_id="sha256:" + "1" * 64))
        # Still serving, and nothing was left behind in the store's scratch space.
        self.assertEqual(harness.health_status(self.channel), 1)
        self.assertEqual(len(self.ask(self.media_id, ["ok?"])[-1].final.results), 1)
        self.assertEqual(os.listdir(os.path.join(self.server.data_dir, "tmp")), [])

    def test_full_queue_is_resource_exhausted_and_nothing_else_fails(self):
        codes, lock = [], threading.Lock()

        def one(i):
            try:
                self.ask(self.media_id, [f"q{i}"], timeout=60, fps=1 + (i % 5) * 0.5, frame_budget=280)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertTrue(set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes)
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        self.assertGreaterEqual(codes.count(grpc.StatusCode.OK), 2)


class BatchCancelTest(unittest.TestCase):
    def test_cancel_stops_a_job_and_keeps_what_finished(self):
        work = os.path.join(TMP, "cancel")
        env = dict(FAKE_ENV, AVSERVE_FAKE_DECODE_MS_PER_TOKEN="40")
        server = harness.ServerProcess(ENV["AVSERVE_FAKE_SERVER"], work, ["--media-root", MEDIA_ROOT], env=env).start()
        try:
            channel = grpc.insecure_channel(server.address)
            media_id = rpc.MediaServiceStub(channel).RegisterPath(pb.RegisterPathRequest(path="clip2.mp4")).media_id
            batch = rpc.BatchServiceStub(channel)
            job = batch.Submit(pb.SubmitBatchRequest(media_ids=[media_id], questions=[f"q{i}" for i in range(10)]))
            watch = batch.Watch(pb.WatchBatchRequest(job_id=job.job_id), timeout=60)
            first = next(watch)
            p = subprocess.run([ENV["AVCTL_BIN"], "-s", server.address, "--json", "batch", "cancel", job.job_id],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["state"], "JOB_STATE_CANCELLED")
            rest = list(watch)  # the stream ends once the job is cancelled
            got = batch.Get(pb.GetBatchRequest(job_id=job.job_id, include_results=True))
            self.assertEqual(got.state, pb.JOB_STATE_CANCELLED)
            self.assertLess(got.finished_items, 10)
            self.assertEqual(got.results[0].answer, first.answer)
            self.assertEqual(len(rest) + 1, got.finished_items)
            channel.close()
        finally:
            self.assertEqual(server.stop(), 0)


class AuthTlsTest(unittest.TestCase):
    def test_bearer_token_and_tls(self):
        work = os.path.join(TMP, "tls")
        os.makedirs(work)
        key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True)
        token_file = os.path.join(work, "token")
        with open(token_file, "w") as f:
            f.write("tok-123\n")
        server = harness.ServerProcess(ENV["AVSERVE_FAKE_SERVER"], work, ["--tls-cert", cert, "--tls-key", key,
                                                                          "--token-file", token_file]).start()
        try:
            base = [ENV["AVCTL_BIN"], "-s", server.address, "--tls-ca", cert, "--tls-server-name", "localhost"]
            p = subprocess.run(base + ["probe", "sha256:" + "a" * 64], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, grpc.StatusCode.UNAUTHENTICATED.value[0], p.stderr)
            p = subprocess.run(base + ["--token", "tok-123", "probe", "sha256:" + "a" * 64], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, grpc.StatusCode.NOT_FOUND.value[0], p.stderr)
            with open(cert, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            channel = grpc.secure_channel(server.address, creds,
                                          options=[("grpc.ssl_target_name_override", "localhost")])
            media = rpc.MediaServiceStub(channel)
            with self.assertRaises(grpc.RpcError) as ctx:
                media.GetMedia(pb.GetMediaRequest(media_id="sha256:" + "a" * 64),
                               metadata=[("authorization", "Bearer wrong")])
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            channel.close()
        finally:
            self.assertEqual(server.stop(), 0)


class BatchCrashTest(unittest.TestCase):
    def test_kill_9_loses_no_finished_result_and_the_job_completes_after_restart(self):
        work = os.path.join(TMP, "crash")
        env = dict(FAKE_ENV, AVSERVE_FAKE_DECODE_MS_PER_TOKEN="40")  # ~0.5 s per item
        server = harness.ServerProcess(ENV["AVSERVE_FAKE_SERVER"], work, ["--media-root", MEDIA_ROOT], env=env)
        server.start()
        channel = grpc.insecure_channel(server.address)
        media_id = rpc.MediaServiceStub(channel).RegisterPath(pb.RegisterPathRequest(path="clip.mp4")).media_id
        batch = rpc.BatchServiceStub(channel)
        job = batch.Submit(pb.SubmitBatchRequest(media_ids=[media_id], questions=[f"q{i}" for i in range(8)]))
        before = []
        for r in batch.Watch(pb.WatchBatchRequest(job_id=job.job_id), timeout=60):
            before.append((r.item_index, r.answer))
            if len(before) == 3:
                break
        server.kill()  # SIGKILL: no chance to flush anything
        channel.close()
        journal = os.path.join(server.data_dir, "batches", job.job_id, "events.jsonl")
        with open(journal) as f:
            on_disk = [json.loads(line) for line in f if line.strip()]
        self.assertGreaterEqual(len(on_disk), 3)  # everything reported was already durable
        self.assertLess(len(on_disk), 8)          # and the job really was interrupted
        server.start()
        channel = grpc.insecure_channel(server.address)
        batch = rpc.BatchServiceStub(channel)
        after = {r.item_index: r.answer for r in batch.Watch(pb.WatchBatchRequest(job_id=job.job_id), timeout=60)}
        self.assertEqual(sorted(after), list(range(8)))
        for item, answer in before:
            self.assertEqual(after[item], answer)
        self.assertEqual(batch.Get(pb.GetBatchRequest(job_id=job.job_id)).state, pb.JOB_STATE_SUCCEEDED)
        channel.close()
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
