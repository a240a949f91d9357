"""Redis protocol (RESP) encoding for the measurement scripts that feed `redis-cli --pipe`."""


def resp(args):
    """One command: an array of bulk strings (bytes, or anything str() turns into text)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
