"""Runs a command script against an IMAP server and prints, as JSON, the
facts of every answer that RFC 3501 leaves no choice about, normalized so
two servers can be compared: untagged EXISTS/EXPUNGE/SEARCH/STATUS/FLAGS,
FETCH items (parsed, literals and quoted strings equal), [UIDVALIDITY],
[UIDNEXT], [APPENDUID], [COPYUID] and the tagged status. Texts, capability
order and \\Recent are left out.

LIST answers (LIST-EXTENDED, LIST-STATUS) are compared as sets: name,
attributes without the optional \\Marked / \\UnMarked, extended items, and
the STATUS lines in between.

Usage: imap_transcript.py HOST PORT USER PASSWORD SCRIPT_FILE
The script has one command per line (without tag); a line
`APPEND <mailbox> <flags> @<file>` appends that file's bytes as a literal,
and `MULTIAPPEND <mailbox> <flags> @<file> <flags> @<file>...` sends one
APPEND of several messages (RFC 3502) with LITERAL+ literals.
"""
import json
import re
import socket
import sys

host, port, user, password, script = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


class Conn:
    def __init__(self):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self):
        """One whole response: list of parts, bytes for text and ('lit', bytes) for literals."""
        parts = []
        while True:
            line = self.line()
            m = re.search(rb"\{(\d+)\}$", line)
            if m:
                parts.append(line[: m.start()])
                parts.append(("lit", self.exact(int(m.group(1)))))
                continue
            parts.append(line)
            return parts

    def send(self, data):
        self.sock.sendall(data)


def tokenize(parts):
    """Tokens of a response: atoms, strings (quoted or literal -> ('s', bytes)), parens."""
    tokens = []
    for part in parts:
        if isinstance(part, tuple):
            tokens.append(("s", part[1]))
            continue
        i = 0
        while i < len(part):
            c = part[i : i + 1]
            if c == b" ":
                i += 1
            elif c in (b"(", b")"):
                tokens.append(c.decode())
                i += 1
            elif c == b'"':
                j, out = i + 1, b""
                while part[j : j + 1] != b'"':
                    if part[j : j + 1] == b"\\":
                        j += 1
                    out += part[j : j + 1]
                    j += 1
                tokens.append(("s", out))
                i = j + 1
            else:
                m = re.match(rb"(BODY(\.PEEK)?\[[^\]]*\](<\d+>)?|[^ ()\"]+)", part[i:])
                tokens.append(("a", m.group(0)))
                i += len(m.group(0))
    return tokens


def parse(tokens, i=0):
    """Nested lists from tokens; strings as str (latin-1), atoms as str."""
    out = []
    while i < len(tokens):
        t = tokens[i]
        if t == "(":
            sub, i = parse(tokens, i + 1)
            out.append(sub)
        elif t == ")":
            return out, i + 1
        else:
            kind, val = t
            text = val.decode("latin-1")
            out.append(None if kind == "a" and text.upper() == "NIL" else text)
            i += 1
    return out, i


def body_structure(b):
    """Sorts body parameter lists (their order is not fixed by RFC 3501)."""
    if not isinstance(b, list) or not b:
        return b
    if isinstance(b[0], list):
        parts = [body_structure(x) for x in b if isinstance(x, list)]
        rest = [x for x in b if not isinstance(x, list)]
        return parts + rest
    out = list(b)
    if len(out) > 2 and isinstance(out[2], list):
        pairs = [(out[2][k].lower(), out[2][k + 1]) for k in range(0, len(out[2]) - 1, 2)]
        out[2] = [x for pair in sorted(pairs) for x in pair]
    if len(out) > 0 and isinstance(out[0], str):
        out[0] = out[0].lower()
    if len(out) > 1 and isinstance(out[1], str):
        out[1] = out[1].lower()
    return out


def fetch_items(lst):
    items = {}
    for k in range(0, len(lst) - 1, 2):
        key = lst[k].upper() if isinstance(lst[k], str) else str(lst[k])
        key = key.replace(".PEEK", "")
        val = lst[k + 1]
        if key == "FLAGS":
            val = sorted(f for f in val if f != "\\Recent")
        if key == "MODSEQ":
            continue
        if key in ("BODY", "BODYSTRUCTURE"):
            val = body_structure(val)
        items[key] = val
    return items


UIDVALIDITIES = {}


def uidvalidity_name(mailbox, value):
    """INBOX's UIDVALIDITY comes from the shared Maildir and must match
    exactly. A mailbox created during the script gets a value of the
    server's choosing (usually a clock value), so for those only the
    consistency is compared: the first value seen for a mailbox is
    `name#1`, a different later one `name#2`, and so on."""
    if mailbox.upper() == "INBOX":
        return int(value)
    seen = UIDVALIDITIES.setdefault(mailbox, [])
    if int(value) not in seen:
        seen.append(int(value))
    return "%s#%d" % (mailbox, seen.index(int(value)) + 1)


def target_mailbox(command):
    words = command.split()
    verb = words[0].upper()
    if verb == "UID":
        words = words[1:]
        verb = words[0].upper()
    if verb in ("SELECT", "EXAMINE", "APPEND", "MULTIAPPEND"):
        return words[1]
    if verb in ("COPY", "MOVE"):
        return words[-1]
    return "?"


def facts(command, responses):
    out = []
    verb = command.split()[0].upper()
    if verb == "UID":
        verb = "UID " + command.split()[1].upper()
    for parts in responses:
        first = parts[0] if isinstance(parts[0], bytes) else b""
        tokens = tokenize(parts)
        if not tokens:
            continue
        head = tokens[0][1] if isinstance(tokens[0], tuple) else tokens[0]
        if head == b"*":
            words = [t[1] for t in tokens[1:3] if isinstance(t, tuple)]
            if len(words) >= 2 and words[0].isdigit() and words[1].upper() in (b"EXISTS", b"EXPUNGE"):
                out.append([words[1].decode().upper(), int(words[0])])
            elif len(words) >= 2 and words[0].isdigit() and words[1].upper() == b"FETCH":
                tree, _ = parse(tokens[3:])
                items = fetch_items(tree[0])
                if verb not in ("FETCH", "UID FETCH"):
                    # Unsolicited/STORE FETCH: UID may or may not be included.
                    items.pop("UID", None)
                out.append(["FETCH", int(words[0]), items])
            elif words and words[0].upper() == b"SEARCH":
                nums = sorted(int(t[1]) for t in tokens[2:] if isinstance(t, tuple) and t[1].isdigit())
                out.append(["SEARCH", nums])
            elif words and words[0].upper() == b"STATUS":
                tree, _ = parse(tokens[3:])
                lst = tree[0]
                out.append(["STATUS", tokens[2][1].decode(), {lst[k]: int(lst[k + 1]) for k in range(0, len(lst), 2)}])
            elif words and words[0].upper() in (b"LIST", b"LSUB"):
                tree, _ = parse(tokens[2:])
                attrs = sorted(a for a in tree[0] if a.lower() not in ("\\marked", "\\unmarked"))
                out.append([words[0].decode().upper(), tree[2], attrs, tree[3:]])
            elif words and words[0].upper() == b"FLAGS" and verb in ("SELECT", "EXAMINE"):
                # Outside SELECT/EXAMINE a FLAGS update (new keyword) is optional.
                tree, _ = parse(tokens[2:])
                out.append(["FLAGS", sorted(f for f in tree[0] if f != "\\Recent")])
            m = re.search(rb"\[UIDVALIDITY (\d+)\]", first)
            if m:
                out.append(["UIDVALIDITY", uidvalidity_name(target_mailbox(command), m.group(1))])
            m = re.search(rb"\[UIDNEXT (\d+)\]", first)
            if m:
                out.append(["UIDNEXT", int(m.group(1))])
        elif head != b"+":
            status = tokens[1][1].decode().upper()
            out.append(["TAGGED", status])
            for code in ("APPENDUID", "COPYUID"):
                m = re.search(rb"\[" + code.encode() + rb" (\d+) ([^\]]+)\]", first)
                if m:
                    out.append([code, uidvalidity_name(target_mailbox(command), m.group(1)), m.group(2).decode()])
    if verb in ("LIST", "LSUB"):
        # The order of LIST answers is free: compare them sorted.
        kinds = ("LIST", "LSUB", "STATUS")
        listing = sorted((f for f in out if f[0] in kinds), key=lambda f: (f[1], f[0]))
        out = listing + [f for f in out if f[0] not in kinds]
    return out


c = Conn()
greeting = c.line()
assert greeting.startswith(b"* OK"), greeting
transcript = []
n = 0
with open(script) as f:
    commands = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
commands = [f'LOGIN "{user}" "{password}"'] + commands
for command in commands:
    n += 1
    tag = f"t{n}".encode()
    responses = []
    m = re.match(r"APPEND (\S+) (\(.*\)) @(\S+)$", command)
    multi = re.match(r"MULTIAPPEND (\S+) (.*)$", command)
    if multi:
        data = tag + b" APPEND " + multi.group(1).encode()
        shown = "MULTIAPPEND " + multi.group(1)
        for flags, path in re.findall(r"(\([^)]*\)) @(\S+)", multi.group(2)):
            body = open(path, "rb").read()
            data += f" {flags} {{{len(body)}+}}\r\n".encode() + body
            shown += f" {flags} <{len(body)} bytes>"
        c.send(data + b"\r\n")
        command = shown
    elif m:
        data = open(m.group(3), "rb").read()
        c.send(tag + f" APPEND {m.group(1)} {m.group(2)} {{{len(data)}}}\r\n".encode())
        cont = c.response()
        assert cont[0].startswith(b"+"), cont
        c.send(data + b"\r\n")
        command = f"APPEND {m.group(1)} {m.group(2)} <{len(data)} bytes>"
    else:
        c.send(tag + b" " + command.encode() + b"\r\n")
    while True:
        parts = c.response()
        responses.append(parts)
        if isinstance(parts[0], bytes) and parts[0].startswith(tag + b" "):
            break
    transcript.append({"command": command, "facts": facts(command, responses)})
print(json.dumps(transcript, indent=1))
