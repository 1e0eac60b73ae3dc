#!/usr/bin/python3
"""Bounded loopback load test of avserve: N concurrent clients for T seconds mixing asks (1-3
questions), uploads, asks cancelled mid-stream, and metadata calls, against a server this script
starts on 127.0.0.1 with ephemeral ports. Reports p50/p99 per operation, status codes and the
server's resident memory over time; exits 1 if any call failed with a code other than OK,
RESOURCE_EXHAUSTED (queue full, documented) or CANCELLED (the client's own cancellations).

  /usr/bin/python3 bench/load_test.py --server build/service/avserve \
      --server-args="--checkpoint tests/data/engine/tiny --backend cpu" --clients 32 --seconds 60
"""
import argparse
import os
import random
import shlex
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "service", "e2e"))
import harness  # noqa: E402

OK_CODES = {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {}   # op -> [seconds] of OK calls
        self.codes = {}     # (op, code) -> count

    def add(self, op, code, seconds):
        with self.lock:
            self.codes[(op, code)] = self.codes.get((op, code), 0) + 1
            if code == "OK" or (op == "ask_cancel" and code == "CANCELLED"):
                self.latency.setdefault(op, []).append(seconds)


def client_loop(idx, address, pb, rpc, media_ids, clips, stop, stats, max_tokens):
    rng = random.Random(idx)
    channel = grpc.insecure_channel(address)
    media, inference = rpc.MediaServiceStub(channel), rpc.InferenceServiceStub(channel)
    while not stop.is_set():
        r = rng.random()
        t0 = time.time()
        code = "OK"
        try:
            if r < 0.60:
                op = "ask"
                qs = [f"question {rng.randint(0, 5)}?" for _ in range(rng.randint(1, 3))]
                req = pb.AskRequest(media_id=rng.choice(media_ids), questions=qs,
                                    sampling=pb.SamplingOptions(max_new_tokens=max_tokens))
                for _ in inference.Ask(req, timeout=120):
                    pass
            elif r < 0.75:
                op = "upload"
                data = rng.choice(clips)

                def parts():
                    yield pb.UploadRequest(header=pb.UploadHeader(filename="load.mp4"))
                    for i in range(0, len(data), 65536):
                        yield pb.UploadRequest(chunk=data[i:i + 65536])
                media.Upload(parts(), timeout=60)
            elif r < 0.90:
                op = "ask_cancel"
                call = inference.Ask(pb.AskRequest(media_id=rng.choice(media_ids), questions=["cancel me"],
                                                   ingest=pb.IngestOptions(fps=rng.choice([1.0, 2.0])),
                                                   sampling=pb.SamplingOptions(max_new_tokens=max_tokens)),
                                     timeout=120)
                for _ in call:
                    call.cancel()
                    break
                code = call.code().name if call.code() is not None else "OK"
                if code == "CANCELLED":
                    stats.add(op, code, time.time() - t0)
                    continue
            else:
                op = "get_media"
                media.GetMedia(pb.GetMediaRequest(media_id=rng.choice(media_ids)), timeout=30)
        except grpc.RpcError as e:
            code = e.code().name
        stats.add(op, code, time.time() - t0)
        if code == "RESOURCE_EXHAUSTED":
            time.sleep(0.05 + rng.random() * 0.1)  # back off like a well-behaved client
    channel.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--server-args", default="")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="avserve_load_")
    pb, rpc = harness.generate_stubs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"),
                                     os.path.join(tmp, "stubs"))
    clip_paths = [harness.make_clip(os.path.join(tmp, f"clip{i}.mp4"), 2 + i, size="96x64") for i in range(3)]
    clips = [open(p, "rb").read() for p in clip_paths]
    server = harness.ServerProcess(args.server, os.path.join(tmp, "server"), shlex.split(args.server_args)).start()
    channel = grpc.insecure_channel(server.address)
    media = rpc.MediaServiceStub(channel)

    def upload(data):
        yield pb.UploadRequest(header=pb.UploadHeader(filename="seed.mp4"))
        yield pb.UploadRequest(chunk=data)
    media_ids = [media.Upload(upload(c)).media_id for c in clips]

    stats, stop = Stats(), threading.Event()
    rss = [server.metric("avserve_process_resident_memory_bytes")]
    cache = [server.metric("avserve_prefix_cache_bytes")]
    threads = [threading.Thread(target=client_loop, args=(i, server.address, pb, rpc, media_ids, clips, stop, stats,
                                                          args.max_tokens)) for i in range(args.clients)]
    t_start = time.time()
    for t in threads:
        t.start()
    while time.time() - t_start < args.seconds:
        time.sleep(2)
        rss.append(server.metric("avserve_process_resident_memory_bytes"))
        cache.append(server.metric("avserve_prefix_cache_bytes"))
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.time() - t_start
    rss.append(server.metric("avserve_process_resident_memory_bytes"))
    alive = harness.health_status(channel) == 1
    channel.close()
    exit_code = server.stop()

    bad = {k: v for k, v in stats.codes.items() if k[1] not in OK_CODES}
    mib = lambda b: b / 2**20  # noqa: E731
    print(f"### Service load test {args.label}".rstrip())
    print(f"{args.clients} clients x {elapsed:.0f} s on loopback; server `{os.path.basename(args.server)} "
          f"{args.server_args}`; mix 60% ask (1-3 questions, {args.max_tokens} tokens), 15% upload, "
          f"15% ask cancelled after its first event, 10% GetMedia.\n")
    print("| op | done | p50 ms | p99 ms | other codes |")
    print("|---|---|---|---|---|")
    for op in ["ask", "ask_cancel", "upload", "get_media"]:
        lat = stats.latency.get(op, [])
        others = ", ".join(f"{c} {n}" for (o, c), n in sorted(stats.codes.items()) if o == op and c != "OK")
        print(f"| {op} | {len(lat)} | {percentile(lat, 50) * 1000:.1f} | {percentile(lat, 99) * 1000:.1f} | "
              f"{others or '-'} |")
    quarters = [rss[min(len(rss) - 1, len(rss) * q // 4)] for q in range(5)]
    print(f"\n(ask_cancel: time until the client's cancel was acknowledged.) Server RSS at 0/25/50/75/100 % of the run: "
          + " / ".join(f"{mib(v):.1f}" for v in quarters) + f" MiB (peak {mib(max(rss)):.1f}); prefix cache "
          f"{mib(cache[-1]):.1f} MiB at the end. Still serving after the run: {alive}. Graceful shutdown exit code: "
          f"{exit_code}.")
    print(f"Unexpected failures: {sum(bad.values()) if bad else 0} {bad if bad else ''}")
    return 1 if bad or not alive or exit_code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
