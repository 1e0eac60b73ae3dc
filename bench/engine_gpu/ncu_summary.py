#!/usr/bin/env python3
"""Summarises `ncu --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum` logs of engine_bench decode steps
(bench/engine_gpu/device_run.sh, step `ncu`): kernel time per decode step by kernel and grid, and read bandwidth.

  ncu_summary.py STEP_CSV [ATTENTION_CSV]

A decode step is counted by its logits product (the skinny GEMM that reads the 2 GB head)."""
import collections
import csv
import io
import sys

TIME = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
LOGITS_KERNELS = ("SkinnyGemmKernel", "RowStreamKernel")  # the products that can read the 2 GB head
BYTES = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def launches(path):
    """{launch id: (kernel, grid, us, bytes)} from one ncu CSV log."""
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        return {}
    out = {}
    for row in csv.DictReader(io.StringIO(text[start:])):
        name = row["Kernel Name"].split("(")[0].split("<")[0].split("::")[-1]
        key = row["ID"]
        k, grid, us, by = out.get(key, (name, row["Grid Size"], 0.0, 0.0))
        value = float(row["Metric Value"].replace(",", "") or 0)
        if row["Metric Name"] == "gpu__time_duration.sum":
            us = value * TIME.get(row["Metric Unit"], 1.0)
        elif row["Metric Name"] == "dram__bytes_read.sum":
            by = value * BYTES.get(row["Metric Unit"], 1.0)
        out[key] = (k, grid, us, by)
    return out


def grouped(rows):
    """{(kernel, grid): [launches, us, bytes]}."""
    groups = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for name, grid, us, by in rows.values():
        g = groups[(name, grid)]
        g[0] += 1
        g[1] += us
        g[2] += by
    return groups


def table(rows, steps):
    groups = grouped(rows)
    total = sum(g[1] for g in groups.values())
    print("%-34s %-16s %7s %11s %9s %8s" % ("kernel", "grid", "calls", "us/step", "us/call", "GB/s"))
    for (name, grid), (n, us, by) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:30]:
        print("%-34s %-16s %7d %11.1f %9.2f %8.0f" % (name[:34], grid, n, us / steps, us / n, by / us / 1e3 if us else 0))
    print("kernel time per step: %.1f us over %d kernels (%.1f launches per step)" %
          (total / steps, sum(g[0] for g in groups.values()), sum(g[0] for g in groups.values()) / steps))


def main():
    step = launches(sys.argv[1])
    steps = sum(1 for name, grid, _, by in step.values() if name in LOGITS_KERNELS and by > 1.5e9)
    print("== every kernel of %d decode steps at a 4K context (per step) ==" % steps)
    if steps:
        # Only whole steps: from the first logits product's successor to the last one.
        ids = sorted(step, key=int)
        logit_ids = [i for i in ids if step[i][0] in LOGITS_KERNELS and step[i][3] > 1.5e9]
        inside = {i: step[i] for i in ids if int(logit_ids[0]) < int(i) <= int(logit_ids[-1])}
        if len(logit_ids) > 1:
            table(inside, len(logit_ids) - 1)
        else:
            table(step, steps)
    if len(sys.argv) > 2:
        print("== decode attention at a 32K context (1 sequence, then 8 questions) ==")
        for (name, grid), (n, us, by) in sorted(grouped(launches(sys.argv[2])).items()):
            print("%-20s %-16s %5d calls %9.2f us/call %8.0f GB/s" % (name, grid, n, us / n, by / us / 1e3 if us else 0))


if __name__ == "__main__":
    main()
