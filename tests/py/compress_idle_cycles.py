"""A COMPRESS=DEFLATE (RFC 4978) IDLE client through many hibernation
cycles, in lock step with the Rust test on stdin/stdout; raw deflate with
Python's zlib (wbits=-15), a sync flush after every command, as clients do.

After COMPRESS it APPENDs a long message (so the client's 32 KiB window is
full of text that later commands repeat: zlib refers back to it across the
parking), then per cycle: IDLE, print "idling K", wait for "go" (the test
saw the session parked and delivered message K), expect "* N EXISTS", DONE
and a FETCH of the new message's Subject (handed back to a worker).
With CYCLES = 0 ("garbage" test): IDLE, "idling 0", wait for "go", then send
bytes that are not deflate data and expect the connection to close.
Usage: compress_idle_cycles.py HOST PORT MODE USER PASSWORD CYCLES
MODE is "plain", "imaps" (implicit TLS) or "starttls"."""
import socket
import ssl
import sys
import zlib

host, port, mode, user, password, cycles = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.raw = b""  # received, not inflated yet
        self.plain = b""  # inflated (or plain), not read yet
        self.inflate = None
        self.deflate = None

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        if self.inflate is None:
            self.raw += data
        else:
            self.plain += self.inflate.decompress(data)
        return True

    def readline(self):
        while True:
            buf = self.plain if self.inflate is not None else self.raw
            i = buf.find(b"\n")
            if i >= 0:
                line = buf[: i + 1]
                if self.inflate is not None:
                    self.plain = buf[i + 1:]
                else:
                    self.raw = buf[i + 1:]
                return line
            if not self.fill():
                return b""

    def send(self, data):
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def start_compression(self):
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        rest, self.raw = self.raw, b""
        self.plain = self.inflate.decompress(rest)

    def until_tagged(self, tag, status=b"OK"):
        lines = []
        while True:
            line = self.readline()
            assert line, "connection closed waiting for " + tag
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                assert line.split()[1] == status, lines
                return lines

    def cmd(self, tag, text, status=b"OK"):
        self.send(f"{tag} {text}\r\n".encode())
        return self.until_tagged(tag, status)


ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((host, port), timeout=30)
if mode == "starttls":
    c = Conn(raw)
    assert c.readline().startswith(b"* OK"), "greeting"
    c.cmd("s0", "STARTTLS")
    c = Conn(ctx.wrap_socket(raw, server_hostname="localhost"))
elif mode == "imaps":
    c = Conn(ctx.wrap_socket(raw, server_hostname="localhost"))
    assert c.readline().startswith(b"* OK"), "greeting"
else:
    c = Conn(raw)
    assert c.readline().startswith(b"* OK"), "greeting"

caps = b"".join(c.cmd("a1", f"LOGIN {user} {password}"))
caps = b"".join(c.cmd("a0", "CAPABILITY"))
assert b" COMPRESS=DEFLATE" in caps, caps
c.cmd("z1", "COMPRESS FOO", b"BAD")
c.send(b"c1 COMPRESS DEFLATE\r\n")
line = c.readline()
assert line == b"c1 OK DEFLATE active\r\n", line
c.start_compression()
line = b"".join(c.cmd("c2", "COMPRESS DEFLATE", b"NO"))
assert b"[COMPRESSIONACTIVE]" in line, line

# About 40 KiB of text that the FETCH commands and their answers repeat.
body = "".join(f"Subject: cycle {k}\r\nf{k} FETCH {k} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n" for k in range(700))
msg = f"From: a@example.org\r\nSubject: long\r\n\r\n{body}".encode()
c.send(f"p1 APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
c.until_tagged("p1")
exists = 0
for line in c.cmd("a2", "SELECT INBOX"):
    if line.endswith(b" EXISTS\r\n"):
        exists = int(line.split()[1])
print("ready", flush=True)

if cycles == 0:
    c.send(b"g0 IDLE\r\n")
    line = c.readline()
    assert line.startswith(b"+ "), line
    print("idling 0", flush=True)
    assert sys.stdin.readline().strip() == "go"
    c.sock.sendall(b"\xff\xfe\xfd not deflate at all \x00\x01" * 8)
    seen = b""
    try:
        while c.fill():
            pass
    except (zlib.error, ConnectionResetError):
        pass
    seen = c.plain
    assert not seen or b"* BYE" in seen, seen
    print("closed", flush=True)
    sys.exit(0)

for k in range(cycles):
    c.send(f"i{k} IDLE\r\n".encode())
    line = c.readline()
    assert line.startswith(b"+ "), line
    print(f"idling {k}", flush=True)
    go = sys.stdin.readline()
    assert go.strip() == "go", go
    line = c.readline()
    while line.startswith(b"* OK"):  # keepalives
        line = c.readline()
    exists += 1
    assert line == f"* {exists} EXISTS\r\n".encode(), (k, line)
    c.send(f"DONE\r\nf{k} FETCH {exists} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n".encode())
    c.until_tagged(f"i{k}")
    text = b"".join(c.until_tagged(f"f{k}"))
    assert f"Subject: cycle {k}\r\n".encode() in text, (k, text)

c.send(b"z LOGOUT\r\n")
c.until_tagged("z")
print("cycles ok", flush=True)
