#!/usr/bin/env python3
"""Ad-hoc multi-node launcher for the hyperkernel glue.

launch.py --nodes 2 --vcpus 2 --place "0;1" --mem 512 [--budget 256M] [--cmd 'nproc'] ...
"""
import argparse, json, os, socket, subprocess, sys, time, threading, base64, re, glob, shutil

ap = argparse.ArgumentParser()
ap.add_argument("--nodes", type=int, default=1)
ap.add_argument("--vcpus", type=int, default=1)
ap.add_argument("--place", default=None, help="per-node vcpu lists separated by '/' e.g. 0/1")
ap.add_argument("--mem", type=int, default=512)
ap.add_argument("--budget", default=None)
ap.add_argument("--policy", default="page")
ap.add_argument("--qemu", default=None)
ap.add_argument("--cmd", action="append", default=[])
ap.add_argument("--timeout", type=float, default=180)
ap.add_argument("--append", default="")
ap.add_argument("--dir", default="/tmp/hk/run")
ap.add_argument("--migrate", type=int, default=0, help="migrate vcpus N times during the first cmd")
ap.add_argument("--nohk", action="store_true")
ap.add_argument("--keep", action="store_true")
args = ap.parse_args()

qemu = args.qemu or sorted(glob.glob("/root/.cache/sds-glue/qemu/*/bin/qemu-system-x86_64"), key=os.path.getmtime)[-1]
kernel = glob.glob("/root/.cache/sds/kernel/*/vmlinuz")[0]
initrd = "/root/.cache/sds/initramfs/3f30ed1c5756bec0b770214e88567ec498b1342728f47f4153df04b677fc49a9/initramfs.cpio.gz"
d = args.dir
shutil.rmtree(d, ignore_errors=True)
os.makedirs(d)
open(f"{d}/secret", "w").write("s3cret")
N = args.nodes
if args.place:
    place = args.place.split("/")
else:
    place = ["" for _ in range(N)]
    for k in range(args.vcpus):
        place[k * N // args.vcpus if N > 1 else 0] += (";" if place[k * N // args.vcpus if N > 1 else 0] else "") + str(k)
epoch = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
peers = ";".join(f"unix:{d}/hk{i}.sock" for i in range(N))
procs = []
t0 = time.monotonic()
for i in range(N):
    argv = [qemu, "-name", f"node{i}", "-S",
            "-machine", "pc,smm=off,hpet=off,mem-merge=off", "-accel", "tcg,thread=multi", "-cpu", "qemu64",
            "-smp", str(args.vcpus), "-m", f"{args.mem}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
            "-no-reboot", "-kernel", kernel, "-initrd", initrd,
            "-append", ("console=ttyS0 panic=-1 numa_balancing=disable tsc=reliable " + args.append).strip(),
            "-chardev", f"socket,id=ttyS0,path={d}/n{i}.ttyS0,server=on,wait=off", "-serial", "chardev:ttyS0",
            "-chardev", f"socket,id=ttyS1,path={d}/n{i}.ttyS1,server=on,wait=off", "-serial", "chardev:ttyS1",
            "-qmp", f"unix:{d}/n{i}.qmp,server=on,wait=off", "-qmp", f"unix:{d}/n{i}.qmp2,server=on,wait=off",
            "-L", "/usr/share/seabios", "-L", "/usr/share/qemu"]
    if not args.nohk:
        hk = f"hyperkernel,id=hk,node={i},nodes={N},listen=unix:{d}/hk{i}.sock,peers={peers},secret=hksec,vcpus={place[i]},policy={args.policy},epoch={epoch}"
        if args.budget:
            hk += f",budget={args.budget}"
        argv += ["-object", f"secret,id=hksec,file={d}/secret", "-object", hk]
    open(f"{d}/n{i}.cmdline", "w").write(" ".join(argv) + "\n")
    procs.append(subprocess.Popen(argv, stdout=open(f"{d}/n{i}.log", "wb"), stderr=subprocess.STDOUT))


class Qmp:
    def __init__(self, path):
        dl = time.time() + 30
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                if time.time() > dl: raise
                time.sleep(0.05)
        self.f = self.s.makefile("rwb")
        self.events = []
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **a):
        self.f.write(json.dumps({"execute": name, "arguments": a}).encode() + b"\n"); self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                self.events.append(r); continue
            return r


def con(path):
    dl = time.time() + 30
    while True:
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(path); return s
        except OSError:
            if time.time() > dl: raise
            time.sleep(0.05)

cons = []
buf0 = bytearray()
def pump(s, log, keep=None):
    with open(log, "wb") as f:
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                return
            if not b: return
            f.write(b); f.flush()
            if keep is not None: keep.extend(b)

ctl_buf = bytearray()
qmps = []
for i in range(N):
    qmps.append(Qmp(f"{d}/n{i}.qmp"))
    c0 = con(f"{d}/n{i}.ttyS0"); threading.Thread(target=pump, args=(c0, f"{d}/n{i}.console"), daemon=True).start()
    c1 = con(f"{d}/n{i}.ttyS1"); threading.Thread(target=pump, args=(c1, f"{d}/n{i}.control", ctl_buf if i == 0 else None), daemon=True).start()
    cons.append(c1)
t_qmp = time.monotonic()
print(f"all QMP up after {t_qmp - t0:.2f}s", flush=True)
for i in reversed(range(N)):
    print(f"cont node{i}:", qmps[i].cmd("cont"), flush=True)
t_cont = time.monotonic()

def alive():
    for i, p in enumerate(procs):
        if p.poll() is not None:
            print(f"node{i} exited rc={p.returncode}"); print(open(f"{d}/n{i}.log").read()[-3000:])
            return False
    return True

def wait_for(pat, timeout):
    dl = time.monotonic() + timeout
    while time.monotonic() < dl:
        m = re.search(pat, bytes(ctl_buf))
        if m: return m
        if not alive(): return None
        time.sleep(0.1)
    return None

m = wait_for(rb"SDS-READY nproc=(\d+)", args.timeout)
if not m:
    print("NO READY; console tail:"); print(open(f"{d}/n0.console", errors="replace").read()[-1500:])
    for i in range(N):
        try:
            g = qmps[i].cmd("query-hyperkernel")["return"]
            print(f"node{i}: local={g.get('local-vcpus')} loc={g.get('vcpu-location')} glue={g['stats'].get('glue')}")
            json.dump(g, open(f"{d}/n{i}.hk.json", "w"), indent=1)
        except Exception as e:
            print(f"node{i}: {e}")
    if not args.keep:
        for p in procs: p.kill()
    sys.exit(1)
print(f"READY nproc={m.group(1).decode()} boot-to-shell {time.monotonic() - t_cont:.2f}s", flush=True)
seq = 0
rc_all = 0
for c in args.cmd:
    seq += 1
    enc = base64.b64encode(c.encode()).decode()
    line = f"printf '\\n__B_{seq}__\\n'; ( eval \"$(echo {enc} | base64 -d)\" ) </dev/null 2>&1; printf '\\n__E_{seq}_%d__\\n' $?\n"
    start = len(ctl_buf)
    cons[0].sendall(line.encode())
    ts = time.monotonic()
    if args.migrate and seq == 1:
        nm = 0
        while nm < args.migrate and not re.search(rb"__E_%d_" % seq, bytes(ctl_buf[start:])):
            for k in range(args.vcpus):
                locs = qmps[0].cmd("query-hyperkernel")["return"]["vcpu-location"]
                src = locs[k]
                dst = (src + 1) % N
                r = qmps[src].cmd("hyperkernel-migrate-vcpu", **{"cpu-index": k, "node": dst})
                if "error" in r:
                    pass
                else:
                    nm += 1
                time.sleep(0.02)
        print(f"migrations issued: {nm}")
    m = None
    dl = time.monotonic() + args.timeout
    while time.monotonic() < dl:
        m = re.search(rb"\n__B_%d__\n(.*?)\n__E_%d_(\d+)__\n" % (seq, seq), bytes(ctl_buf[start:]), re.S)
        if m or not alive(): break
        time.sleep(0.1)
    if not m:
        print(f"$ {c}\n  TIMEOUT"); rc_all = 1; break
    print(f"$ {c}  [rc={m.group(2).decode()} {time.monotonic()-ts:.2f}s]\n{m.group(1).decode(errors='replace')}", flush=True)
    if m.group(2) != b"0": rc_all = 1

for i in range(N):
    if procs[i].poll() is None:
        r = qmps[i].cmd("query-hyperkernel") if not args.nohk else {}
        json.dump(r, open(f"{d}/n{i}.hk.json", "w"), indent=1)
        g = r.get("return", {})
        st = g.get("stats", {})
        print(f"node{i}: local={g.get('local-vcpus')} loc={g.get('vcpu-location')} glue={st.get('glue')}")
for i in range(N):
    ev = [e for e in qmps[i].events if e["event"].startswith("HYPERKERNEL")]
    if ev: print(f"node{i} events: {len(ev)} last={ev[-1]}")
if args.keep:
    print("kept running; pids", [p.pid for p in procs]); sys.exit(rc_all)
# poweroff
cons[0].sendall(b"poweroff -f\n")
for i, p in enumerate(procs):
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print(f"node{i} did not exit; killing"); p.kill(); p.wait()
    print(f"node{i} rc={p.returncode}")
sys.exit(rc_all)
