"""An IDLE client over TLS (Python ssl) through many hibernation cycles,
in lock step with the Rust test on stdin/stdout.

Per cycle: IDLE, print "idling K", wait for "go" on stdin (the test saw the
session parked and delivered message K), expect "* N EXISTS", then DONE and
a FETCH of the new message's Subject (handed back to a worker).
Usage: tls_idle_cycles.py HOST PORT MODE USER PASSWORD CYCLES
MODE is "imaps" (implicit TLS) or "starttls"."""
import socket
import ssl
import sys

host, port, mode, user, password, cycles = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3

raw = socket.create_connection((host, port), timeout=30)
if mode == "starttls":
    f = raw.makefile("rb")
    assert f.readline().startswith(b"* OK"), "greeting"
    raw.sendall(b"s0 STARTTLS\r\n")
    line = f.readline()
    assert line.startswith(b"s0 OK"), line
    f.close()
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
else:
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
    assert f.readline().startswith(b"* OK"), "greeting"
assert sock.version() == "TLSv1.3", sock.version()


def until_tagged(tag):
    lines = []
    while True:
        line = f.readline()
        assert line, "connection closed waiting for " + tag
        lines.append(line)
        if line.startswith(tag.encode() + b" "):
            assert line.split()[1] == b"OK", lines
            return lines


def cmd(tag, text):
    sock.sendall(f"{tag} {text}\r\n".encode())
    return until_tagged(tag)


cmd("a1", f"LOGIN {user} {password}")
exists = 0
for line in cmd("a2", "SELECT INBOX"):
    if line.endswith(b" EXISTS\r\n"):
        exists = int(line.split()[1])
print("ready", flush=True)

for k in range(cycles):
    sock.sendall(f"i{k} IDLE\r\n".encode())
    line = f.readline()
    assert line.startswith(b"+ "), line
    print(f"idling {k}", flush=True)
    go = sys.stdin.readline()
    assert go.strip() == "go", go
    line = f.readline()
    while line.startswith(b"* OK"):  # keepalives
        line = f.readline()
    exists += 1
    assert line == f"* {exists} EXISTS\r\n".encode(), (k, line)
    sock.sendall(f"DONE\r\nf{k} FETCH {exists} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n".encode())
    lines = until_tagged(f"i{k}")
    lines = until_tagged(f"f{k}")
    text = b"".join(lines)
    assert f"Subject: cycle {k}\r\n".encode() in text, (k, text)

sock.sendall(b"z LOGOUT\r\n")
until_tagged("z")
print("cycles ok", flush=True)
