"""Logs in over implicit TLS, selects INBOX, prints "ready", then holds the
session until stdin closes and logs out.
Usage: imap_tls_hold.py HOST TLS_PORT USER PASSWORD"""
import imaplib
import ssl
import sys

host, tls_port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
assert M.login(user, password)[0] == "OK"
assert M.select("INBOX")[0] == "OK"
print("ready", flush=True)
sys.stdin.read()
assert M.noop()[0] == "OK"
M.logout()
