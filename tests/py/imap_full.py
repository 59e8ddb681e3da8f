"""Full single-session walk through dormouse with Python's imaplib.

Usage: imap_full.py HOST PORT USER PASSWORD
Asserts inside; exits non-zero (traceback) on the first failure.
"""
import imaplib
import re
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

PLAIN = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: plain hello\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <plain-1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthis is the first message.\r\n"
)
MULTI = (
    b"From: Carol <carol@example.net>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: multipart report\r\n"
    b"Date: Tue, 03 Mar 2026 11:30:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
    b"\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"See the attachment.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgc=\r\n"
    b"--XYZ--\r\n"
)
THIRD = (
    b"From: Dave <dave@example.com>\r\n"
    b"Subject: third one about budgets\r\n"
    b"\r\n"
    b"Numbers inside.\r\n"
)


def ok(result, what):
    typ, data = result
    assert typ == "OK", f"{what}: {typ} {data!r}"
    return data


def fetch_dict(data):
    """Flattens an imaplib FETCH answer into {seq: raw bytes of the response}."""
    out = {}
    for item in data:
        if isinstance(item, tuple):
            head, literal = item
            seq = int(head.split(b" ", 1)[0])
            out.setdefault(seq, b"")
            out[seq] += head + b"{" + str(len(literal)).encode() + b"}" + literal
        elif item and item != b")":
            seq = int(item.split(b" ", 1)[0])
            out.setdefault(seq, b"")
            out[seq] += item
    return out


M = imaplib.IMAP4(host, port)
caps = M.capabilities
assert "IMAP4REV1" in caps, caps
ok(M.login(user, password), "LOGIN")
ok(M.noop(), "NOOP after login")
caps = ok(M.capability(), "CAPABILITY")[0].upper()
for cap in (b"IDLE", b"MOVE", b"UIDPLUS"):
    assert cap in caps, (cap, caps)

# APPEND three messages (one with flags and a date).
ok(M.append("INBOX", None, None, PLAIN), "APPEND plain")
date = imaplib.Time2Internaldate(time.mktime((2026, 3, 3, 12, 0, 0, 0, 0, -1)))
ok(M.append("INBOX", "(\\Flagged $Work)", date, MULTI), "APPEND multi")
ok(M.append("INBOX", "(\\Seen)", None, THIRD), "APPEND third")

typ, data = M.select("INBOX")
assert typ == "OK" and int(data[0]) == 3, (typ, data)

# FLAGS, UID, RFC822.SIZE, INTERNALDATE for all.
d = fetch_dict(ok(M.fetch("1:*", "(FLAGS UID RFC822.SIZE INTERNALDATE)"), "FETCH meta"))
assert set(d) == {1, 2, 3}, d
sizes = {seq: int(re.search(rb"RFC822\.SIZE (\d+)", raw).group(1)) for seq, raw in d.items()}
assert sizes == {1: len(PLAIN), 2: len(MULTI), 3: len(THIRD)}, sizes
uids = {seq: int(re.search(rb"UID (\d+)", raw).group(1)) for seq, raw in d.items()}
assert uids[1] < uids[2] < uids[3], uids
assert b"\\Flagged" in d[2] and b"$Work" in d[2], d[2]
assert b"\\Seen" in d[3], d[3]
assert b"INTERNALDATE \"03-Mar-2026" in d[2], d[2]

# BODY[] (marks \Seen), BODY.PEEK[HEADER.FIELDS], partial, TEXT.
data = ok(M.fetch("1", "(BODY.PEEK[])"), "FETCH BODY.PEEK[]")
assert data[0][1] == PLAIN, data
d = fetch_dict(ok(M.fetch("1", "(FLAGS)"), "FETCH FLAGS"))
assert b"\\Seen" not in d[1], "PEEK must not set \\Seen"
data = ok(M.fetch("1", "(BODY[])"), "FETCH BODY[]")
assert data[0][1] == PLAIN
d = fetch_dict(ok(M.fetch("1", "(FLAGS)"), "FETCH FLAGS 2"))
assert b"\\Seen" in d[1], f"BODY[] must set \\Seen: {d[1]!r}"
data = ok(M.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"), "HEADER.FIELDS")
hdr = data[0][1]
assert b"Subject: plain hello\r\n" in hdr and b"From: Alice" in hdr and b"To:" not in hdr, hdr
assert hdr.endswith(b"\r\n\r\n"), hdr
data = ok(M.fetch("1", "(BODY.PEEK[]<0.10>)"), "partial")
assert data[0][1] == PLAIN[:10], data
assert b"<0>" in data[0][0], data[0][0]
data = ok(M.fetch("1", "(BODY.PEEK[TEXT])"), "TEXT")
assert data[0][1] == b"Hello Bob,\r\nthis is the first message.\r\n", data
data = ok(M.fetch("2", "(BODY.PEEK[2])"), "BODY[2]")
assert data[0][1] == b"AAECAwQFBgc=", data
data = ok(M.fetch("2", "(BODY.PEEK[1.MIME])"), "BODY[1.MIME]")
assert b"text/plain" in data[0][1], data

# ENVELOPE and BODYSTRUCTURE.
raw = fetch_dict(ok(M.fetch("1:2", "(ENVELOPE BODYSTRUCTURE)"), "ENVELOPE"))
assert b'"plain hello"' in raw[1] and b'"Alice Example"' in raw[1], raw[1]
assert b'"<plain-1@example.org>"' in raw[1], raw[1]
assert re.search(rb'BODYSTRUCTURE \("TEXT" "PLAIN"', raw[1], re.I), raw[1]
assert re.search(rb'"MIXED"', raw[2], re.I) and re.search(rb'"APPLICATION" "OCTET-STREAM"', raw[2], re.I), raw[2]

# UID FETCH.
typ, data = M.uid("FETCH", str(uids[3]), "(UID RFC822.SIZE)")
assert typ == "OK" and f"UID {uids[3]}".encode() in data[0], data

# STORE.
d = fetch_dict(ok(M.store("1", "+FLAGS", "(\\Flagged)"), "STORE +FLAGS"))
assert b"\\Flagged" in d[1], d
ok(M.store("2", "-FLAGS", "($Work)"), "STORE -FLAGS")
ok(M.store("3", "FLAGS.SILENT", "(\\Answered)"), "STORE FLAGS.SILENT")
d = fetch_dict(ok(M.fetch("1:3", "(FLAGS)"), "FETCH after STORE"))
assert b"$Work" not in d[2] and b"\\Answered" in d[3] and b"\\Seen" not in d[3], d

# SEARCH.
def search(*criteria):
    return ok(M.search(None, *criteria), f"SEARCH {criteria}")[0].split()

assert search("ALL") == [b"1", b"2", b"3"]
assert search("FLAGGED") == [b"1", b"2"], search("FLAGGED")
assert search("SUBJECT", '"budgets"') == [b"3"]
assert search("FROM", "carol") == [b"2"]
assert search("UNSEEN") == [b"2", b"3"], search("UNSEEN")
assert search("LARGER", str(len(MULTI) - 1)) == [b"2"]
assert search("BODY", "attachment") == [b"2"]
typ, data = M.uid("SEARCH", None, "ANSWERED")
assert typ == "OK" and data[0].split() == [str(uids[3]).encode()], data

# COPY, MOVE, STATUS.
ok(M.create("Archive"), "CREATE")
ok(M.copy("1", "Archive"), "COPY")
typ, data = M.uid("MOVE", str(uids[2]), "Archive")
assert typ == "OK", (typ, data)
moved = M.untagged_responses.pop("EXPUNGE", [])
assert moved == [b"2"], moved
typ, data = M.status("Archive", "(MESSAGES UIDNEXT UNSEEN)")
assert typ == "OK" and b"MESSAGES 2" in data[0] and b"UNSEEN 1" in data[0], data
assert search("ALL") == [b"1", b"2"], "MOVE must remove the message here"

# EXPUNGE.
ok(M.store("1", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
typ, data = M.expunge()
assert typ == "OK" and data == [b"1"], (typ, data)
typ, data = M.select("INBOX")
assert int(data[0]) == 1, data

# LIST.
typ, data = M.list()
names = b" ".join(data)
assert b"INBOX" in names and b"Archive" in names, data

ok(M.close(), "CLOSE")
typ, data = M.logout()
assert typ == "BYE", (typ, data)
print("imap_full: ok")
