"""Hand-made Kineto Chrome traces in the format torch 2.x's profiler exports on a GPU, small
enough that every figure of the trace analysis can be worked out by hand (below, next to the
events). ``python -m tests.kineto_traces`` rewrites the committed fixtures in
``tests/data/traces/``; a test checks that they match this file.

Times are microseconds after the trace's first event (``BASE`` is added to each, as a real trace
counts from the epoch). Two ranks of one step: a host-to-device copy, a GEMM, an elementwise
kernel, an all-reduce on the NCCL stream and a second GEMM on the compute stream.

Rank 0, the all-reduce overlapping both compute kernels around it::

    stream 7   copy [90,100] gemm [100,150]  ew [160,180]       gemm [200,260]
    stream 20                                   nccl [170,230]

  kernel span 90..260 = 170; busy (union) [90,150] + [160,260] = 160, so idle = 10
  compute (union of compute kernels) 50 + 20 + 60 = 130; non-compute 170 - 130 - 10 = 30
  communication 60, overlapped by compute in [170,180] and [200,230]: 40/60 = 66.67%
  stream 7's gaps: gemm after copy 0 (launched before: kernel wait), ew 10 (launched at 120,
  before gemm ended: kernel wait), second gemm 20 (launched at 185, after ew ended: host wait)

Rank 1, the all-reduce exposed (nothing computes while it runs)::

    stream 7   copy [90,100] gemm [100,150]  ew [160,180]              gemm [240,300]
    stream 20                                        nccl [180,240]

  span 90..300 = 210; busy 60 + 140 = 200, idle 10; compute 130; non-compute 70; overlap 0%
  stream 7's gaps: 0 and 10 as rank 0 (kernel wait), then 60 before the second gemm, which was
  launched at 130, long before: neither host nor launch delay ("other": it waited for the
  all-reduce)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent / "data" / "traces"
BASE = 1_700_000_000_000_000  # µs since the epoch, as Kineto writes them
PID = 4242  # the Python process
TID = 4242  # its main thread
COMPUTE_STREAM, NCCL_STREAM = 7, 20

GEMM = "ampere_sgemm_128x64_nn"
ELEMENTWISE = ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
               "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3>)")
ALLREDUCE = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"
COPY = "Memcpy HtoD (Pageable -> Device)"

# (cpu op, its start, runtime call, runtime start, GPU event category, kernel name, stream,
#  kernel start, kernel duration), per rank; the correlation id is the row's index + 100.
Launch = tuple[str, int, str, int, str, str, int, int, int]
RANKS: dict[int, list[Launch]] = {
    0: [("aten::copy_", 78, "cudaMemcpyAsync", 80, "gpu_memcpy", COPY, COMPUTE_STREAM, 90, 10),
        ("aten::mm", 84, "cudaLaunchKernel", 85, "kernel", GEMM, COMPUTE_STREAM, 100, 50),
        ("aten::add", 118, "cudaLaunchKernel", 120, "kernel", ELEMENTWISE, COMPUTE_STREAM, 160, 20),
        ("nccl:all_reduce", 124, "cudaLaunchKernelExC", 125, "kernel", ALLREDUCE, NCCL_STREAM, 170, 60),
        ("aten::mm", 184, "cudaLaunchKernel", 185, "kernel", GEMM, COMPUTE_STREAM, 200, 60)],
    1: [("aten::copy_", 78, "cudaMemcpyAsync", 80, "gpu_memcpy", COPY, COMPUTE_STREAM, 90, 10),
        ("aten::mm", 84, "cudaLaunchKernel", 85, "kernel", GEMM, COMPUTE_STREAM, 100, 50),
        ("aten::add", 118, "cudaLaunchKernel", 120, "kernel", ELEMENTWISE, COMPUTE_STREAM, 160, 20),
        ("nccl:all_reduce", 124, "cudaLaunchKernelExC", 125, "kernel", ALLREDUCE, NCCL_STREAM, 180, 60),
        ("aten::mm", 129, "cudaLaunchKernel", 130, "kernel", GEMM, COMPUTE_STREAM, 240, 60)],
}


def trace(rank: int, world_size: int = 2, gpu: bool = True) -> dict[str, Any]:
    """One rank's trace as torch's ``export_chrome_trace`` writes it; ``gpu=False`` keeps only the
    host side (what a CPU-only run, or a GPU run without CUPTI, produces)."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "ts": BASE, "pid": PID, "tid": 0, "args": {"name": "python"}},
        {"name": "thread_name", "ph": "M", "ts": BASE, "pid": PID, "tid": TID, "args": {"name": "thread 4242 (python)"}},
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "pid": PID, "tid": TID, "ts": BASE + 70,
         "dur": 200, "args": {"External id": 1, "Record function id": 0, "Ev Idx": 0}},
        # An empty last step, as the profiler's schedule leaves one: it makes HTA filter kernels
        # by the steps that launched them, the path a real trace of several steps takes.
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "pid": PID, "tid": TID, "ts": BASE + 270,
         "dur": 10, "args": {"External id": 90, "Record function id": 0, "Ev Idx": 90}},
    ]
    if gpu:
        events += [
            {"name": "process_name", "ph": "M", "ts": BASE, "pid": 0, "tid": 0, "args": {"name": "python"}},
            {"name": "process_labels", "ph": "M", "ts": BASE, "pid": 0, "tid": 0, "args": {"labels": "GPU 0"}},
            *({"name": "thread_name", "ph": "M", "ts": BASE, "pid": 0, "tid": s, "args": {"name": f"stream {s}"}}
              for s in (COMPUTE_STREAM, NCCL_STREAM))]
    for i, (op, op_ts, runtime, rt_ts, cat, kernel, stream, k_ts, k_dur) in enumerate(RANKS[rank]):
        external, correlation = i + 2, i + 100
        events.append({"ph": "X", "cat": "cpu_op", "name": op, "pid": PID, "tid": TID, "ts": BASE + op_ts, "dur": 8,
                       "args": {"External id": external, "Record function id": 0, "Sequence number": 10 + i,
                                "Fwd thread id": 0, "Ev Idx": i + 1}})
        if not gpu:
            continue
        events.append({"ph": "X", "cat": "cuda_runtime", "name": runtime, "pid": PID, "tid": TID, "ts": BASE + rt_ts,
                       "dur": 4, "args": {"External id": external, "cbid": 211, "correlation": correlation}})
        args: dict[str, Any] = {"External id": external, "device": 0, "context": 1, "stream": stream,
                                "correlation": correlation}
        if cat == "kernel":
            args |= {"queued": 0, "registers per thread": 128, "shared memory": 0, "blocks per SM": 1.0,
                     "warps per SM": 4.0, "grid": [64, 1, 1], "block": [128, 1, 1], "est. achieved occupancy %": 6}
        else:
            args |= {"bytes": 4_194_304, "memory bandwidth (GB/s)": 419.43}
        events.append({"ph": "X", "cat": cat, "name": kernel, "pid": 0, "tid": stream, "ts": BASE + k_ts,
                       "dur": k_dur, "args": args})
        # The flow arrows Perfetto draws from a launch to its kernel.
        events.append({"ph": "s", "id": correlation, "pid": PID, "tid": TID, "ts": BASE + rt_ts, "cat": "ac2g",
                       "name": "ac2g"})
        events.append({"ph": "f", "id": correlation, "pid": 0, "tid": stream, "ts": BASE + k_ts, "cat": "ac2g",
                       "name": "ac2g", "bp": "e"})
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "deviceProperties": [{"id": 0, "name": "NVIDIA A100-SXM4-80GB", "totalGlobalMem": 85_100_000_000,
                              "computeMajor": 8, "computeMinor": 0, "maxThreadsPerBlock": 1024,
                              "maxThreadsPerMultiprocessor": 2048, "regsPerBlock": 65536, "warpSize": 32,
                              "sharedMemPerBlock": 49152, "numSms": 108}] if gpu else [],
        "distributedInfo": {"backend": "nccl" if gpu else "gloo", "rank": rank, "world_size": world_size,
                            "pg_count": 1, "pg_config": [], "nccl_version": "2.21.5"},
        "record_shapes": 0, "profile_memory": 0, "with_stack": 0, "with_flops": 0, "with_modules": 0,
        "traceEvents": events,
        "traceName": f"rank{rank}.pt.trace.json.gz", "displayTimeUnit": "ms", "baseTimeNanoseconds": 0,
    }
    if gpu:
        doc |= {"cupti_version": 24, "cuda_runtime_version": 12040, "cuda_driver_version": 12040}
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    """Gzipped as torch writes a ``.gz`` name, with no timestamp in the header, so the bytes depend
    on the events alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(doc, indent=1).encode(), mtime=0))
    return path


def fixtures() -> list[Path]:
    return [FOLDER / f"rank{rank}.pt.trace.json.gz" for rank in RANKS]


if __name__ == "__main__":
    for rank, path in enumerate(fixtures()):
        write(path, trace(rank))
        print(f"wrote {path} ({path.stat().st_size} bytes)")
