#!/usr/bin/env python3
"""A stand-in access-control panel for commissioning a facegate OSDP reader.

LibOSDP's own Control Panel (the PyPI package `libosdp`, Python bindings of the same C library
facegate's reader is built on) polls the terminal at ADDRESS on a serial line and prints every
event it reports, one line each: card reads with their Wiegand fields decoded, refusals
(manufacturer replies) and status reports. It never prints a key.

    python3 -m venv /tmp/osdp && /tmp/osdp/bin/pip install libosdp==3.2.9
    /tmp/osdp/bin/python deploy/osdp-panel.py /dev/ttyUSB0 --address 0 --baud 9600 \
        --scbk-file /root/osdp.scbk --seconds 30

Exit status: 0 when the secure channel came up (or --plain) and at least one event arrived,
1 otherwise. Needs only the serial line, not the network.
"""

import argparse
import os
import sys
import termios
import time
import tty

import osdp


class Serial(osdp.Channel):
    """A raw, non-blocking serial line."""

    def __init__(self, path, baud):
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        speed = getattr(termios, f"B{baud}")
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def read(self, max_bytes):
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""

    def write(self, buf):
        try:
            return os.write(self.fd, buf)
        except BlockingIOError:
            return 0

    def flush(self):
        pass

    def __del__(self):
        os.close(self.fd)


OUTCOMES = {1: "denied", 2: "unknown", 3: "spoof_suspected"}
METHODS = {1: "face", 2: "pin", 3: "card", 4: "qr", 5: "override"}


def wiegand(bits, n):
    """Facility and card of a 26-bit (H10301) or 34-bit read, parities checked."""
    s = "".join("1" if bits[i // 8] & (0x80 >> (i % 8)) else "0" for i in range(n))
    if n not in (26, 34):
        return s, None
    data, half = s[1:-1], (n - 2) // 2
    even_ok = (data[:half].count("1") + int(s[0])) % 2 == 0
    odd_ok = (data[half:].count("1") + int(s[-1])) % 2 == 1
    fbits = 8 if n == 26 else 16
    fields = {
        "facility": int(data[:fbits], 2),
        "card": int(data[fbits:], 2),
        "parity": "ok" if even_ok and odd_ok else "BAD",
    }
    return s, fields


def describe(event):
    kind = event.get("event")
    if kind == osdp.Event.CardRead:
        data = bytes(event.get("data", b""))
        n = event.get("length", len(data) * 8)
        s, fields = wiegand(data, n)
        fmt = "wiegand" if event.get("format") == osdp.CardFormat.Wiegand else "raw"
        return f"card read: format {fmt}, {n} bits {s} {fields or ''}".rstrip()
    if kind == osdp.Event.ManufacturerReply:
        data = bytes(event.get("data", b""))
        vendor = event.get("vendor_code", 0)
        if len(data) == 3 and data[0] == 1:
            return (
                f"refusal: {OUTCOMES.get(data[1], data[1])} by "
                f"{METHODS.get(data[2], data[2])} (vendor {vendor:06x})"
            )
        return f"manufacturer reply: vendor {vendor:06x} data {data.hex()}"
    if kind == osdp.Event.Status:
        report = list(event.get("report", []))
        return f"status: type {event.get('type')} report {report[: event.get('nr_entries', 0) or 2]}"
    return f"event: {event}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("device")
    ap.add_argument("--address", type=int, default=0)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--scbk-file", help="32 hex digits, the terminal's SCBK")
    ap.add_argument("--plain", action="store_true", help="no secure channel")
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()

    key = None
    flags = []
    if not args.plain:
        if not args.scbk_file:
            sys.exit("osdp-panel: --scbk-file KEYFILE (or --plain)")
        with open(args.scbk_file) as f:
            key = bytes.fromhex(f.read().strip())
        flags = [osdp.LibFlag.EnforceSecure]
    info = osdp.PDInfo(args.address, Serial(args.device, args.baud), scbk=key, flags=flags)
    cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error)
    cp.start()
    started = time.monotonic()
    secure_at = None
    events = 0
    while time.monotonic() - started < args.seconds:
        if secure_at is None and (args.plain and cp.is_online(args.address) or
                                  cp.is_sc_active(args.address)):
            secure_at = time.monotonic() - started
            mode = "plain" if args.plain else "secure channel active"
            print(f"panel: terminal {args.address} online, {mode} after {secure_at:.1f} s",
                  flush=True)
        ev = cp.get_event(args.address, timeout=0.2)
        if ev:
            events += 1
            print(f"panel: {describe(ev)}", flush=True)
    cp.teardown()
    if secure_at is None:
        print("panel: the terminal never came online with this key", flush=True)
    return 0 if secure_at is not None and events else 1


if __name__ == "__main__":
    sys.exit(main())
