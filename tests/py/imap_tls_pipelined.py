"""Commands pipelined after LOGIN in one TLS record reach the worker through
the master's TLS proxy (pending input + plaintext rustls already decrypted),
on the IMAPS port and after STARTTLS.
Usage: imap_tls_pipelined.py HOST PORT TLS_PORT USER PASSWORD"""
import socket
import ssl
import sys

host, port, tls_port, user, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def read_all(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def check(sock, label):
    batch = (
        f'a1 LOGIN "{user}" "{password}"\r\n'
        "a2 SELECT INBOX\r\n"
        "a3 APPEND INBOX {26}\r\n"
    ).encode()
    sock.sendall(batch)
    # The APPEND literal is synchronizing: wait for the continuation.
    data = b""
    while b"\r\n+ " not in data and not data.startswith(b"+ "):
        chunk = sock.recv(65536)
        assert chunk, (label, data)
        data += chunk
    sock.sendall(b"Subject: tls pipe\r\n\r\nhi!\r\n\r\na4 NOOP\r\na5 LOGOUT\r\n")
    data += read_all(sock)
    text = data.decode("latin-1")
    order = [text.find(t) for t in ("a1 OK", "a2 OK", "a3 OK", "a4 OK", "a5 OK")]
    assert all(i >= 0 for i in order) and order == sorted(order), (label, text)
    assert "* BYE" in text, (label, text)


raw = socket.create_connection((host, tls_port), timeout=30)
s = ctx.wrap_socket(raw, server_hostname=host)
assert s.recv(4096).startswith(b"* OK")
check(s, "imaps")

raw = socket.create_connection((host, port), timeout=30)
greeting = raw.recv(4096)
assert greeting.startswith(b"* OK"), greeting
raw.sendall(b"s1 STARTTLS\r\n")
line = raw.recv(4096)
assert line.startswith(b"s1 OK"), line
s = ctx.wrap_socket(raw, server_hostname=host)
check(s, "starttls")
print("imap_tls_pipelined: ok")
