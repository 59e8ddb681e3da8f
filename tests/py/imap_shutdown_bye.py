"""TLS sessions in three states wait for the server to stop; each must get
"* BYE [UNAVAILABLE] ..." before the connection closes.
Prints "ready" once set up (the caller then stops the server), then one
line per session: LABEL OK, or LABEL FAIL with what arrived.
Usage: imap_shutdown_bye.py HOST TLS_PORT USER PASSWORD"""
import socket
import ssl
import sys

host, tls_port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


class Conn:
    def __init__(self):
        raw = socket.create_connection((host, tls_port), timeout=30)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def cmd(self, tag, text):
        self.s.sendall(f"{tag} {text}\r\n".encode())
        while True:
            line = self.line()
            if line.startswith(tag + " "):
                assert line.startswith(tag + " OK"), line
                return

    def rest(self):
        """Everything until the server closes (clean or not)."""
        data = self.buf
        try:
            while True:
                chunk = self.s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError) as e:
            data += f" <{type(e).__name__}>".encode()
        return data.decode(errors="replace")


prelogin = Conn()
assert prelogin.line().startswith("* OK")
live = Conn()
assert live.line().startswith("* OK")
live.cmd("l1", f"LOGIN {user} {password}")
live.cmd("l2", "SELECT INBOX")
idle = Conn()
assert idle.line().startswith("* OK")
idle.cmd("i1", f"LOGIN {user} {password}")
idle.cmd("i2", "SELECT INBOX")
idle.s.sendall(b"i3 IDLE\r\n")
assert idle.line().startswith("+ "), "no continuation"
print("ready", flush=True)

for label, conn in [("tls-prelogin", prelogin), ("tls-live", live), ("tls-idle", idle)]:
    got = conn.rest()
    ok = got.endswith("* BYE [UNAVAILABLE] Server shutting down\r\n")
    print(f"{label} {'OK' if ok else 'FAIL'} {got!r}", flush=True)
