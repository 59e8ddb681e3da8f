"""A second real client: imaplib2 (threaded, with IDLE support).
Usage: imaplib2_client.py HOST PORT USER PASSWORD LMTP_PORT"""
import smtplib
import sys
import threading

import imaplib2

host, port, user, password, lmtp_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])

M = imaplib2.IMAP4(host, port)
try:
    typ, data = M.login(user, password)
    assert typ == "OK", data
    typ, data = M.append("INBOX", r"(\Draft)", None, b"Subject: from imaplib2\r\n\r\nhi\r\n")
    assert typ == "OK", data
    typ, data = M.select("INBOX")
    assert typ == "OK", data
    count = int(data[0])
    typ, data = M.search(None, "DRAFT")
    assert typ == "OK" and data[0].split()[-1] == str(count).encode(), data
    typ, data = M.fetch(str(count), "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"from imaplib2" in data[0][1], data

    def deliver():
        lmtp = smtplib.LMTP(host, lmtp_port)
        lmtp.sendmail("x@example.org", [f"{user}@example.org"], "Subject: wake imaplib2\r\n\r\nhello\r\n")
        lmtp.quit()

    timer = threading.Timer(0.5, deliver)
    timer.start()
    typ, data = M.idle(timeout=20)
    timer.join()
    assert typ == "OK", (typ, data)
    typ, data = M.response("EXISTS")
    assert data and data[-1] is not None and int(data[-1]) == count + 1, data
    print("imaplib2_client: ok")
finally:
    M.logout()
