"""Two imaplib sessions of one user on INBOX see each other's changes
(NOOP and IDLE). Usage: imap_two_sessions.py HOST PORT USER PASSWORD"""
import imaplib
import socket
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

MSG = b"From: a@example.org\r\nSubject: shared %d\r\n\r\nbody %d\r\n"


def ok(result, what):
    typ, data = result
    assert typ == "OK", f"{what}: {typ} {data!r}"
    return data


def untagged(conn, name):
    return conn.untagged_responses.pop(name, [])


A = imaplib.IMAP4(host, port)
B = imaplib.IMAP4(host, port)
ok(A.login(user, password), "A LOGIN")
ok(B.login(user, password), "B LOGIN")
ok(A.append("INBOX", None, None, MSG % (1, 1)), "A APPEND 1")
a_count = int(ok(A.select("INBOX"), "A SELECT")[0])
b_count = int(ok(B.select("INBOX"), "B SELECT")[0])
assert a_count == b_count, (a_count, b_count)

# A appends: B's NOOP reports EXISTS.
ok(A.append("INBOX", None, None, MSG % (2, 2)), "A APPEND 2")
ok(B.noop(), "B NOOP")
exists = untagged(B, "EXISTS")
assert exists and int(exists[-1]) == b_count + 1, exists
n = b_count + 1

# A sets a flag: B's NOOP reports FETCH FLAGS.
ok(A.store(str(n), "+FLAGS", "(\\Flagged)"), "A STORE")
ok(B.noop(), "B NOOP 2")
fetches = untagged(B, "FETCH")
assert any(b"\\Flagged" in f for f in fetches if isinstance(f, bytes)), fetches

# A expunges: B's NOOP reports EXPUNGE.
ok(A.store(str(n), "+FLAGS.SILENT", "(\\Deleted)"), "A STORE Deleted")
ok(A.expunge(), "A EXPUNGE")
ok(B.noop(), "B NOOP 3")
expunged = untagged(B, "EXPUNGE")
assert expunged == [str(n).encode()], expunged

# B idles; A appends; B is told without asking.
tag = B._new_tag()
B.send(tag + b" IDLE\r\n")
line = B.readline()
assert line.startswith(b"+"), line
start = time.monotonic()
ok(A.append("INBOX", None, None, MSG % (3, 3)), "A APPEND 3")
B.sock.settimeout(10)
line = B.readline()
elapsed_ms = (time.monotonic() - start) * 1000
assert line.strip() == b"* %d EXISTS" % n, line
B.send(b"DONE\r\n")
line = B.readline()
while line.startswith(b"*"):
    line = B.readline()
assert line.startswith(tag + b" OK"), line
B.sock.settimeout(None)
print(f"imap_two_sessions: ok (IDLE woken {elapsed_ms:.1f} ms after APPEND was sent)")
A.logout()
B.logout()
