"""Protocol figures: parser throughput, virtual device -> TCP -> DeviceClient throughput, and a
seeded random fuzz run (streams tried, crashes, results lost, largest buffer).

    /tmp/dev/bin/python benchmarks/bench_protocol.py [--records 100000] [--e2e 20000] [--fuzz 20000]
"""

from __future__ import annotations

import argparse
import random
import time

from gendertool import protocol as p


def _result(i: int) -> p.Result:
    return p.Result(i, "sample", i % 4, i % 2, "male" if i % 2 else "female", (-40, 40), (0.1875, 0.8125), 612, 14830, True)


def parser_throughput(n: int, chunk: int = 4096) -> None:
    rng = random.Random(1)
    parts = []
    for i in range(n):
        parts.append(b"I (%d) app: garbage %x\r\n" % (i, rng.getrandbits(32)) if i % 3 == 0 else b"")
        parts.append(p.encode_record(_result(i)))
    stream = b"".join(parts)
    parser = p.StreamParser()
    t0 = time.perf_counter()
    got = 0
    for k in range(0, len(stream), chunk):
        got += sum(isinstance(x, p.Result) for x in parser.feed(stream[k : k + chunk]))
    dt = time.perf_counter() - t0
    print(f"parser: {got}/{n} results, {len(stream) / 1e6:.1f} MB in {dt:.2f} s -> {got / dt:,.0f} results/s, "
          f"{len(stream) / dt / 1e6:.1f} MB/s, max buffered {parser.stats.max_buffered} B (bound {p.MAX_LINE})")

    t0 = time.perf_counter()
    for i in range(n):
        p.encode_record(_result(i))
    dt = time.perf_counter() - t0
    print(f"encoder: {n / dt:,.0f} records/s")


def e2e_throughput(n: int, garbage_every: int) -> None:
    from gendertool.device.link import DeviceClient
    from gendertool.device.sim import SimDevice, SimFaults, SimServer
    from gendertool.device.transport import open_port

    dev = SimDevice(None, period_ms=0, replay=True, faults=SimFaults(garbage_every=garbage_every, seed=3))
    with SimServer(dev, "127.0.0.1", 0) as server:
        with DeviceClient(open_port(server.url)) as client:
            seqs = []
            t0 = None
            for it in client.records(timeout=300):
                if isinstance(it, p.Result):
                    if t0 is None:
                        t0 = time.perf_counter()
                    seqs.append(it.seq)
                    if len(seqs) == n:
                        break
            dt = time.perf_counter() - t0
            lost = (seqs[-1] - seqs[0] + 1) - len(seqs)
            st = client.stats
    print(f"sim -> socket:// -> DeviceClient: {len(seqs)} results in {dt:.2f} s -> {len(seqs) / dt:,.0f} results/s "
          f"(garbage before every {garbage_every or 'no'} record), lost {lost}, "
          f"log lines {st.log_lines}, max buffered {st.max_buffered} B")


def fuzz(streams: int, seed: int = 0, max_line: int = 256) -> None:
    """Random streams: records mixed with garbage, cut records, overlong lines, random chunking."""
    rng = random.Random(seed)
    crashes = lost = extra = sent_total = worst = 0
    for _ in range(streams):
        buf = bytearray()
        expect = 0
        for _ in range(rng.randint(1, 30)):
            kind = rng.random()
            rec = p.encode_record(_result(rng.randint(0, 2**32 - 1)))
            if kind < 0.5:
                buf += rec
                expect += 1
            elif kind < 0.65:  # garbage glued in front (no newline)
                junk = bytes(rng.choice(range(11, 256)) for _ in range(rng.randint(1, 40)))
                buf += junk + rec
                expect += len(junk) + len(rec) - 1 <= max_line
            elif kind < 0.75:  # cut record (reset), then a full one on the same line
                cut = rng.randint(1, len(rec) - 1)
                buf += rec[:cut] + rec
                expect += cut + len(rec) - 1 <= max_line
            elif kind < 0.85:  # overlong junk line
                buf += b"x" * rng.randint(max_line + 1, 3 * max_line) + b"\n"
            elif kind < 0.95:  # random bytes with newlines
                buf += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80))) + b"\n"
            else:  # a corrupted record
                bad = bytearray(rec)
                bad[rng.randrange(len(bad) - 1)] ^= rng.randint(1, 255)
                buf += bytes(bad) + b"\n"
        parser = p.StreamParser(max_line=max_line)
        got = 0
        try:
            k = 0
            while k < len(buf):
                step = rng.randint(1, 300)
                got += sum(isinstance(x, p.Result) for x in parser.feed(bytes(buf[k : k + step])))
                worst = max(worst, parser.buffered)
                k += step
        except Exception:  # noqa: BLE001 - counting crashes is the point
            crashes += 1
            continue
        sent_total += expect
        lost += max(0, expect - got)
        extra += max(0, got - expect)  # a damaged record accepted would show here
    print(f"fuzz: {streams} random streams, {sent_total} intact records sent, crashes {crashes}, "
          f"intact results lost {lost}, damaged records accepted {extra}, largest buffer {worst} B (bound {max_line})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--e2e", type=int, default=20000)
    ap.add_argument("--garbage-every", type=int, default=1)
    ap.add_argument("--fuzz", type=int, default=20000)
    args = ap.parse_args()
    parser_throughput(args.records)
    e2e_throughput(args.e2e, args.garbage_every)
    fuzz(args.fuzz)


if __name__ == "__main__":
    main()
