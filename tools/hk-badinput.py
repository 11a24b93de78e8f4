import subprocess, time, glob, os, sys
B = "/root/.cache/sds-glue/qemu-work/07acaccc49183327/build/qemu-system-x86_64"
kernel = glob.glob("/root/.cache/sds/kernel/*/vmlinuz")[0]
initrd = "/root/.cache/sds/initramfs/3f30ed1c5756bec0b770214e88567ec498b1342728f47f4153df04b677fc49a9/initramfs.cpio.gz"
d = "/tmp/hk/bad"
open(f"{d}/s0", "w").write("s3cret"); open(f"{d}/s1", "w").write("wrong")
def run(name, N=2, mem=["512"]*2, vcpus=["0", "1"], budget=[None, None], secret=["s0", "s0"], start=None, smp=2):
    for f in glob.glob(f"{d}/*.sock"): os.unlink(f)
    peers = ";".join(f"unix:{d}/hk{i}.sock" for i in range(N))
    ps = []
    for i in (start if start is not None else range(N)):
        hk = f"hyperkernel,id=hk,node={i},nodes={N},peers={peers},secret=hksec,vcpus={vcpus[i]},epoch=1"
        if budget[i]: hk += f",budget={budget[i]}"
        argv = [B, "-S", "-machine", "pc,smm=off,hpet=off,mem-merge=off", "-accel", "tcg,thread=multi", "-cpu", "qemu64",
                "-smp", str(smp), "-m", mem[i], "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
                "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0", "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
                "-object", f"secret,id=hksec,file={d}/{secret[i]}", "-object", hk, "-qmp", f"unix:{d}/q{i},server=on,wait=off"]
        ps.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    t0 = time.time()
    print(f"=== {name}")
    for p in ps:
        try:
            out, _ = p.communicate(timeout=25)
            print(f"  rc={p.returncode} after {time.time()-t0:.1f}s: {out.decode().strip()[:300]}")
        except subprocess.TimeoutExpired:
            print("  STILL RUNNING (ok if the other side failed?)"); p.kill(); p.communicate()
run("mismatched -m", mem=["512", "256"])
run("vcpu on two nodes", vcpus=["0;1", "1"])
run("vcpu on none", vcpus=["0", ""])
run("budget sum < RAM", budget=["128M", "128M"])
run("unreachable peer", start=[0])
run("wrong secret", secret=["s0", "s1"])
