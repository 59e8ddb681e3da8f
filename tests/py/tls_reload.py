"""Certificate renewal check: opens an implicit-TLS session and logs in,
prints "old FINGERPRINT", then for every line read from stdin naming a PEM
certificate file prints "file FP" (that file's fingerprint), "new FP" (a new
implicit-TLS connection's), "starttls FP" (a new STARTTLS connection's) and
"held ok" once the session opened first still answers NOOP and SELECT.
Fingerprints are SHA-256 of the DER certificate the server presented.
Usage: tls_reload.py HOST PORT TLS_PORT USER PASSWORD"""
import hashlib
import imaplib
import ssl
import sys

host, port, tls_port, user, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def peer(M):
    return fingerprint(M.sock.getpeercert(binary_form=True))


held = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
assert held.login(user, password)[0] == "OK"
print("old", peer(held), flush=True)
for line in sys.stdin:
    pem = open(line.strip()).read()
    print("file", fingerprint(ssl.PEM_cert_to_DER_cert(pem)), flush=True)
    fresh = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
    print("new", peer(fresh), flush=True)
    assert fresh.login(user, password)[0] == "OK"
    fresh.logout()
    plain = imaplib.IMAP4(host, port)
    assert plain.starttls(ssl_context=ctx)[0] == "OK"
    print("starttls", peer(plain), flush=True)
    plain.logout()
    assert held.noop()[0] == "OK"
    assert held.select("INBOX")[0] == "OK"
    print("held ok", peer(held), flush=True)
held.logout()
