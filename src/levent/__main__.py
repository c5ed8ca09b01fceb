"""``python -m levent``: the examples (hello, echo), a TCP proxy (proxy), the benchmark suite (bench)
and what a bug report needs (info)."""
import argparse
import sys


def print_info():
    """What a bug report needs: which levent, libevent and OpenSSL this process loaded (and from which
    files: a wheel bundles its own), Python's ssl OpenSSL, and libevent's backends here."""
    import os
    import platform
    import ssl

    import levent
    from levent import _core, _tls

    def features(flags):
        return ", ".join(f.name for f in levent.Feature if f & flags) or "none"

    version = levent.libevent_version()
    tls_version, libssl, libcrypto = _tls._openssl_version()
    rows = [
        ("levent", f"{levent.__version__} ({os.path.dirname(levent.__file__)})"),
        ("libevent", f"{version.string} ({version.number:#010x})"),
        ("libevent library", _core._libevent_path() or "unknown (not a shared library)"),
        ("levent TLS OpenSSL", tls_version),
        ("levent TLS libssl", libssl or "unknown (not a shared library)"),
        ("levent TLS libcrypto", libcrypto or "unknown (not a shared library)"),
        ("Python ssl OpenSSL", ssl.OPENSSL_VERSION),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
    ]
    backends = []
    for method in levent.supported_methods():
        try:
            base = levent.EventBase(method=method)
        except ValueError:  # compiled in but refused, e.g. by an EVENT_NO<METHOD> variable
            backends.append(f"{method} (unavailable)")
            continue
        backends.append(f"{method} ({features(base.features)})")
        base.close()
    base = levent.EventBase()
    rows.append(("backends", ", ".join(backends)))
    rows.append(("default backend", f"{base.method} ({features(base.features)})"))
    base.close()
    # libevent's default event_config honours these: they change the backend a bug report sees.
    env = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("EVENT_"))
    if env:
        rows.append(("libevent environment", " ".join(env)))
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser: python -m levent bench --help
        from levent.bench.cli import main as bench

        return bench(argv[1:])
    if argv[:1] == ["proxy"]:  # its own parser too: python -m levent proxy --help
        from levent.proxy import main as proxy

        return proxy(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m levent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, port, text in (("hello", 9995, "libevent's hello-world: greet each connection, close it"),
                             ("echo", 9996, "an echo server on BufferEvents")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        sub.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0: any free port)")
        if name == "echo":
            sub.add_argument("--mode", choices=("events", "bufferevent"), default="events",
                             help="events: an Event per connection with recv_into/send (the fastest); "
                                  "bufferevent: libevent's bufferevent echo")
    commands.add_parser("proxy", help="a TCP proxy: --listen HOST:PORT --upstream HOST:PORT (see proxy --help)")
    commands.add_parser("bench", help="the benchmark suite against asyncio, uvloop and C (see bench --help)")
    commands.add_parser("info", help="what a bug report needs: levent, libevent and OpenSSL versions and files, backends")
    args = parser.parse_args(argv)

    if args.command == "info":
        print_info()
        return 0

    from levent import examples

    if args.command == "echo":
        examples.echo(args.host, args.port, mode=args.mode)
    else:
        examples.hello(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
