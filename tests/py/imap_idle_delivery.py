"""IMAP IDLE is woken by an LMTP delivery in another process.
Usage: imap_idle_delivery.py HOST IMAP_PORT USER PASSWORD LMTP_PORT MAX_MS"""
import imaplib
import smtplib
import sys
import time

host, port, user, password, lmtp_port, max_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])

M = imaplib.IMAP4(host, port)
assert M.login(user, password)[0] == "OK"
typ, data = M.select("INBOX")
assert typ == "OK", data
count = int(data[0])
latencies = []
for round_no in range(3):
    tag = M._new_tag()
    M.send(tag + b" IDLE\r\n")
    line = M.readline()
    assert line.startswith(b"+"), line
    msg = f"From: lmtp@example.org\r\nTo: {user}@example.org\r\nSubject: idle wake {round_no}\r\n\r\nhello\r\n"
    lmtp = smtplib.LMTP(host, lmtp_port)
    start = time.monotonic()
    refused = lmtp.sendmail("lmtp@example.org", [f"{user}@example.org"], msg)
    delivered_at = time.monotonic()
    lmtp.quit()
    assert not refused, refused
    M.sock.settimeout(10)
    line = M.readline()
    woke = time.monotonic()
    count += 1
    assert line.strip() == b"* %d EXISTS" % count, line
    latencies.append((woke - delivered_at) * 1000)
    M.send(b"DONE\r\n")
    line = M.readline()
    while line.startswith(b"*"):
        line = M.readline()
    assert line.startswith(tag + b" OK"), line
    M.sock.settimeout(None)
typ, data = M.fetch(str(count), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert b"idle wake 2" in data[0][1], data
M.logout()
worst = max(latencies)
print("imap_idle_delivery: ok, wake-up after LMTP end of data (ms): " + ", ".join(f"{x:.1f}" for x in latencies))
assert worst <= max_ms, f"IDLE wake-up took {worst:.1f} ms (limit {max_ms} ms)"
