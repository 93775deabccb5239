"""Is a process's speed luck shared by all forks of one server, or drawn afresh by every fork?

S servers (fresh interpreters that import torch), each forking K children; every child builds the
same model (a 256-wide MLP of BLOCKS linear blocks, batch 64, SGD), warms up, and then all S*K
children take turns, in a fresh random order every round, timing TRIAL seconds of steps. Each
trial's speed is divided by the round's median (the machine's drift), and each child's luck is the
median of those over rounds. Prints the spread of luck between children of one server and between
servers (one-way ANOVA on child lucks, servers as groups). The children of one server are forked
back to back from the same parent state, as a forkserver's are; WARMUP = sequential (default: one
server at a time, each child built and warmed up before the next fork, as bench ab's processes
are) or together (a server's children warm up at once). MODE = plain, or pad (each child maps a
random number of pages and mallocs a random few KiB before building).

    python benchmarks/fork_luck.py MODE [S K ROUNDS TRIAL BLOCKS [WARMUP]]    (the README: plain 4 4 8 0.2 42)
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys

SERVER = r'''
import json, mmap, multiprocessing as mp, os, random, sys, time
import torch
mode, k, blocks, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def child(conn):
    keep = []
    if mode == "pad":
        rng = random.Random(os.getpid() ^ time.time_ns())
        keep.append(mmap.mmap(-1, 4096 * rng.randint(1, 4096)))
        keep.append(bytearray(rng.randint(1, 64 * 1024)))
    torch.manual_seed(0)
    layers = [torch.nn.Linear(256, 256)]
    for _ in range(blocks):
        layers += [torch.nn.Linear(256, 256), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    loss = torch.nn.CrossEntropyLoss()
    def step():
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()
    for _ in range(10):
        step()
    conn.send("ready")
    while True:
        seconds = conn.recv()
        if seconds is None:
            return
        step()  # re-warm after the others' turns
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step(); n += 1
        conn.send(n / (time.perf_counter() - t0))

# Every pipe first, then the forks back to back: each child starts from the same parent state
# (as a forkserver's children do), so a layout decided by that state is the same in all of them.
ctx = mp.get_context("fork")
pairs = [ctx.Pipe() for _ in range(k)]
pipes = [a for a, _ in pairs]
pids = []
for i in range(k):
    pid = os.fork()
    if pid == 0:
        child(pairs[i][1])
        os._exit(0)
    pids.append(pid)
    if warmup == "sequential":
        pipes[i].recv()  # built and warmed up before the next fork, as bench ab's processes are
if warmup != "sequential":
    for a in pipes:
        a.recv()
print("ready", flush=True)
# Relay: stdin lines "i seconds" -> child i; answers on stdout.
for line in sys.stdin:
    i, seconds = line.split()
    if seconds == "stop":
        break
    pipes[int(i)].send(float(seconds))
    print(json.dumps(pipes[int(i)].recv()), flush=True)
for a in pipes:
    a.send(None)
for pid in pids:
    os.waitpid(pid, 0)
'''


def main() -> None:
    mode = sys.argv[1]
    s, k, rounds, trial, blocks = (int(sys.argv[2]) if len(sys.argv) > 2 else 4, int(sys.argv[3]) if len(sys.argv) > 3 else 4,
                                   int(sys.argv[4]) if len(sys.argv) > 4 else 6, float(sys.argv[5]) if len(sys.argv) > 5 else 0.3,
                                   int(sys.argv[6]) if len(sys.argv) > 6 else 42)
    warmup = sys.argv[7] if len(sys.argv) > 7 else "sequential"
    servers = []
    for _ in range(s):
        # One server at a time, each warming its children one after the other (sequential), so no
        # two processes warm up at once (as bench ab); "together" warms a server's children at once.
        p = subprocess.Popen([sys.executable, "-c", SERVER, mode, str(k), str(blocks), warmup], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        assert p.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        servers.append(p)
    speeds: dict[tuple[int, int], list[float]] = {(a, b): [] for a in range(s) for b in range(k)}
    rng = random.Random(1)
    for _ in range(rounds):
        order = list(speeds)
        rng.shuffle(order)
        got = {}
        for a, b in order:
            servers[a].stdin.write(f"{b} {trial}\n")  # type: ignore[union-attr]
            got[(a, b)] = json.loads(servers[a].stdout.readline())  # type: ignore[union-attr]
        mid = statistics.median(got.values())
        for key, v in got.items():
            speeds[key].append(v / mid)
    for p in servers:
        p.stdin.write("0 stop\n")  # type: ignore[union-attr]
        p.stdin.close()  # type: ignore[union-attr]
        p.wait()
    luck = {key: statistics.median(v) for key, v in speeds.items()}
    groups = [[luck[(a, b)] for b in range(k)] for a in range(s)]
    from scipy import stats

    f, p = stats.f_oneway(*groups)
    means = [statistics.fmean(g) for g in groups]
    within = statistics.fmean(statistics.stdev(g) for g in groups)
    print(json.dumps({"mode": mode, "warmup": warmup, "servers": s, "children": k, "rounds": rounds, "trial_s": trial,
                      "server_means": [round(m, 3) for m in means],
                      "children_luck": [[round(x, 3) for x in g] for g in groups],
                      "sd_between_server_means": round(statistics.stdev(means), 4),
                      "sd_within_server": round(within, 4), "anova_F": round(float(f), 2), "anova_p": float(p)}))


if __name__ == "__main__":
    main()
