import json, socket, sys
def q(path, cmd, **a):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rwb")
    f.readline()
    for c in (("qmp_capabilities", {}), (cmd, a)):
        f.write(json.dumps({"execute": c[0], "arguments": c[1]}).encode() + b"\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "event" not in r: break
    return r
if __name__ == "__main__":
    path, cmd = sys.argv[1], sys.argv[2]
    a = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    r = q(path, cmd, **a)
    print(r["return"] if isinstance(r.get("return"), str) else json.dumps(r))
