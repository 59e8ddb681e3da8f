"""STARTTLS on the plain port and implicit TLS on the IMAPS port (certificate
verification off: the server uses a generated self-signed pair).
Usage: imap_tls.py HOST PORT TLS_PORT USER PASSWORD"""
import imaplib
import ssl
import sys

host, port, tls_port, user, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def session(M, label):
    assert M.login(user, password)[0] == "OK", label
    typ, data = M.select("INBOX")
    assert typ == "OK", (label, data)
    assert M.append("INBOX", None, None, b"Subject: over tls\r\n\r\n" + b"x" * 20000 + b"\r\n")[0] == "OK"
    typ, data = M.select("INBOX")
    n = int(data[0])
    typ, data = M.fetch(str(n), "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK" and data[0][1].startswith(b"Subject: over tls"), (label, data)
    assert len(data[0][1]) == 20000 + len(b"Subject: over tls\r\n\r\n") + 2, (label, len(data[0][1]))
    typ, data = M.logout()
    assert typ == "BYE", (label, typ)


M = imaplib.IMAP4(host, port)
assert "STARTTLS" in M.capabilities, M.capabilities
typ, data = M.starttls(ssl_context=ctx)
assert typ == "OK", data
assert "STARTTLS" not in M.capabilities, M.capabilities
session(M, "starttls")

S = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
assert "STARTTLS" not in S.capabilities, S.capabilities
session(S, "imaps")
print("imap_tls: ok")
